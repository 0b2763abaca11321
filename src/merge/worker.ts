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
import { readInShape } from './shapes.js';

export interface MergeRequest {
  method: MethodName;
  context: TensorContext;
  /** where each input is stored */
  inputs: TensorLocation[];
  /** shared arrays of context.numel entries, one per input, to read into and merge in place */
  arrays: Float32Array[];
  /** shared arrays of context.numel entries, the method's working arrays (merge/run-method.ts) */
  scratch: Float32Array[];
  seed: number;
}

/** The reply: the index of the array now holding the result. */
export type MergeReply = number;

const pool = new BufferPool();
const reader = new RawTensorReader();
serveRequests<MergeRequest, MergeReply>({
  request(m) {
    m.inputs.forEach((loc, i) => readInShape(loc.shape, m.context.shape, m.arrays[i], pool, (into) => reader.readFiniteF32(loc, into)));
    return runMethod(MERGE_METHODS[m.method], m.context, m.arrays, m.seed, pool, m.scratch);
  },
  close: () => reader.close(),
});
