/**
 * The merge worker: reads and decodes a tensor's inputs itself (blocking reads, bf16 through the
 * SIMD kernels) into SharedArrayBuffers lent by the main thread, and merges them there, so the
 * main thread only encodes and writes results while workers read and merge their neighbours.
 */
import { parentPort } from 'node:worker_threads';
import { RawTensorReader, where } from '../io/raw-read.js';
import { assertFinite } from '../tensor/finite.js';
import type { TensorLocation } from '../io/types.js';
import { BufferPool } from '../pipeline/buffer-pool.js';
import type { ReadyMessage } from '../pipeline/worker-thread.js';
import { MERGE_METHODS, type MethodName, type TensorContext } from './methods.js';
import { runMethod } from './run-method.js';

export type WorkerRequest =
  | {
      kind: 'merge';
      id: number;
      method: MethodName;
      context: TensorContext;
      /** where each input is stored */
      inputs: TensorLocation[];
      /** shared arrays of context.numel entries, one per input, to read into and merge in place */
      arrays: Float32Array[];
      seed: number;
    }
  /** close the files and end the thread */
  | { kind: 'close' };

/** `output`: the index of the array now holding the result. */
export type WorkerReply = ReadyMessage | { id: number; output: number } | { id: number; error: string };

const port = parentPort;
if (!port) throw new Error('src/merge/worker.ts runs as a worker thread only');
const pool = new BufferPool();
const reader = new RawTensorReader();
port.on('message', (m: WorkerRequest) => {
  if (m.kind === 'close') {
    reader.close();
    port.close();
    return;
  }
  let reply: WorkerReply;
  try {
    m.inputs.forEach((loc, i) => assertFinite(reader.readF32(loc, m.arrays[i]), where(loc)));
    reply = { id: m.id, output: runMethod(MERGE_METHODS[m.method], m.context, m.arrays, m.seed, pool) };
  } catch (err) {
    reply = { id: m.id, error: (err as Error).message };
  }
  port.postMessage(reply);
});
port.postMessage({ ready: true } satisfies WorkerReply);
