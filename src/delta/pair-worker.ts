/**
 * The model-pair reader thread: reads and decodes tensor pairs and forms Δ while the main thread
 * runs the GEMMs of the previous pair. Arrays travel by transfer (no copies) and come back with
 * `recycle` messages, so a few buffers serve the whole model.
 */
import { parentPort } from 'node:worker_threads';
import { BufferPool } from '../pipeline/buffer-pool.js';
import type { ReadyMessage } from '../pipeline/worker-thread.js';
import { arraysOf, PairReader, type LoadedPair, type PairRequest } from './load-pair.js';

export type PairWorkerRequest =
  | { kind: 'load'; id: number; request: PairRequest }
  | { kind: 'recycle'; arrays: Float32Array[] }
  /** close the files and end the thread */
  | { kind: 'close' };

export type PairWorkerReply = ReadyMessage | { id: number; pair: LoadedPair } | { id: number; error: string };

const port = parentPort;
if (!port) throw new Error('src/delta/pair-worker.ts runs as a worker thread only');
const pool = new BufferPool();
const reader = new PairReader(pool);
port.on('message', (m: PairWorkerRequest) => {
  if (m.kind === 'recycle') {
    for (const a of m.arrays) pool.release(a);
    return;
  }
  if (m.kind === 'close') {
    reader.close();
    port.close();
    return;
  }
  let pair: LoadedPair;
  try {
    pair = reader.load(m.request);
  } catch (err) {
    port.postMessage({ id: m.id, error: (err as Error).message } satisfies PairWorkerReply);
    return;
  }
  port.postMessage({ id: m.id, pair } satisfies PairWorkerReply, arraysOf(pair).map((a) => a.buffer as ArrayBuffer));
});
port.postMessage({ ready: true } satisfies PairWorkerReply);
