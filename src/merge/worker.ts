/**
 * The merge worker: runs merge methods on tensors that live in SharedArrayBuffers, so the
 * arithmetic of tensor i overlaps the main thread's decoding of tensor i+1 and encoding of i−1.
 */
import { parentPort } from 'node:worker_threads';
import { BufferPool } from '../pipeline/buffer-pool.js';
import { MERGE_METHODS, type MethodName, type TensorContext } from './methods.js';
import { runMethod } from './run-method.js';

export interface WorkerJob {
  id: number;
  method: MethodName;
  context: TensorContext;
  inputs: Float32Array[];
  seed: number;
}

export type WorkerReply = { ready: true } | { id: number; output: number } | { id: number; error: string };

const port = parentPort;
if (!port) throw new Error('src/merge/worker.ts runs as a worker thread only');
const pool = new BufferPool();
port.on('message', (job: WorkerJob) => {
  let reply: WorkerReply;
  try {
    reply = { id: job.id, output: runMethod(MERGE_METHODS[job.method], job.context, job.inputs, job.seed, pool) };
  } catch (err) {
    reply = { id: job.id, error: (err as Error).message };
  }
  port.postMessage(reply);
});
port.postMessage({ ready: true } satisfies WorkerReply);
