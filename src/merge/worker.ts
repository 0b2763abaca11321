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
  /** where each input is stored */
  inputs: TensorLocation[];
  /** shared arrays of context.numel entries, one per input, to read into and merge in place */
  arrays: Float32Array[];
  seed: number;
  /** embedding rows moved into the output vocabulary as they are read */
  remap?: RowRemap;
}

/** The reply: the index of the array now holding the result. */
export type MergeReply = number;

const pool = new BufferPool();
const reader = new RawTensorReader();
function readRemapped(m: MergeRequest, remap: RowRemap): void {
  const stored = m.inputs.map((loc) => reader.readFiniteF32(loc, pool.acquire(shapeNumel(loc.shape))));
  applyRowRemap(remap, m.context.shape[1], stored, m.arrays);
  stored.forEach((a) => pool.release(a));
}

serveRequests<MergeRequest, MergeReply>({
  request(m) {
    if (m.remap) readRemapped(m, m.remap);
    else m.inputs.forEach((loc, i) => readInShape(loc.shape, m.context.shape, m.arrays[i], pool, (into) => reader.readFiniteF32(loc, into)));
    return runMethod(MERGE_METHODS[m.method], m.context, m.arrays, m.seed, pool);
  },
  close: () => reader.close(),
});
