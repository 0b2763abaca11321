/**
 * The merge worker: reads and decodes a tensor's inputs itself (blocking reads, bf16 through the
 * SIMD kernels) into SharedArrayBuffers lent by the main thread, and merges them there, so the
 * main thread only encodes and writes results while workers read and merge their neighbours.
 */
import { RawTensorReader } from '../io/raw-read.js';
import type { TensorLocation } from '../io/types.js';
import { BufferPool } from '../pipeline/buffer-pool.js';
import { serveRequests } from '../pipeline/worker-rpc.js';
import { MERGE_METHODS, type MethodName, type TensorContext } from './methods.js';
import { runMethod } from './run-method.js';
import { readInShape, shapeNumel } from './shapes.js';
import { applyRowRemap, type RowRemap } from './embed-rows.js';

export interface MergeRequest {
  method: MethodName;
  context: TensorContext;
  /** where each input is stored; null: the main thread has read it into its array already (a tensor a LoRA adapter changes) */
  inputs: Array<TensorLocation | null>;
  /** shared arrays of context.numel entries, one per input, to read into and merge in place */
  arrays: Float32Array[];
  /** shared arrays of context.numel entries, the method's working arrays (merge/run-method.ts) */
  scratch: Float32Array[];
  seed: number;
  /** embedding rows moved into the output vocabulary as they are read */
  remap?: RowRemap;
}

/** The reply: the index of the array now holding the result. */
export type MergeReply = number;

const pool = new BufferPool();
const reader = new RawTensorReader();
/** WorkerCompute keeps a remapped tensor with an adapted (unlocated) input on its own thread. */
function locatedInput(loc: TensorLocation | null): TensorLocation {
  if (!loc) throw new Error('internal error: a tensor moved into the output vocabulary reached a worker with an input it cannot read; please report it');
  return loc;
}

/** Reads every input as stored and moves its rows into the output vocabulary. */
function readRemapped(m: MergeRequest, inputs: readonly TensorLocation[], remap: RowRemap): void {
  const stored = inputs.map((loc) => reader.readFiniteF32(loc, pool.acquire(shapeNumel(loc.shape))));
  applyRowRemap(remap, m.context.shape[1], stored, m.arrays);
  stored.forEach((a) => pool.release(a));
}

serveRequests<MergeRequest, MergeReply>({
  request(m) {
    // rows moved into the output vocabulary (tokenizer settings): every input has a file location,
    // WorkerCompute merges a remapped tensor with an adapted input on its own thread
    if (m.remap) readRemapped(m, m.inputs.map(locatedInput), m.remap);
    else m.inputs.forEach((loc, i) => loc && readInShape(loc.shape, m.context.shape, m.arrays[i], pool, (into) => reader.readFiniteF32(loc, into)));
    return runMethod(MERGE_METHODS[m.method], m.context, m.arrays, m.seed, pool, m.scratch);
  },
  close: () => reader.close(),
});
