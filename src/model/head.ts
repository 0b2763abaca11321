/**
 * The output projection (vocab × hidden) as logits need it. At a 128256-token vocabulary and
 * hidden 2048, lm_head is 1 GB of f32: more than the rest of one layer and the activations
 * together. Unless it is in memory anyway (a resident engine, a table changed by adapters or
 * replaced in memory), the logits are computed over blocks of vocabulary rows read from disk one
 * after another, so memory holds one block, not the table.
 */
import type { RawTensorReader } from '../io/raw-read.js';
import type { TensorLocation } from '../io/types.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { matrix, type Matrix } from '../tensor/matrix.js';
import { linear } from './layer.js';
import { readRowRange } from './row-read.js';

/** Vocabulary rows multiplied at once when streaming: 8192 × hidden 2048 is 64 MB of f32. */
export const HEAD_BLOCK_ROWS = 8192;

/** The whole table in memory, or where it is stored (read in blocks of `blockRows` rows). */
export type Head = { whole: Matrix } | { stored: TensorLocation; rows: number; cols: number; blockRows: number };

/** x·Wᵀ (rows × vocab) for x rows × hidden. */
export async function headProduct(backend: LinalgBackend, raw: () => RawTensorReader, head: Head, x: Float32Array, rows: number): Promise<Float32Array> {
  if ('whole' in head) return linear(backend, x, rows, head.whole);
  const { rows: vocab, cols } = head;
  // equal blocks: a short last block could fall under the native GEMM's threshold and sum differently
  const size = Math.ceil(vocab / Math.ceil(vocab / head.blockRows));
  const out = new Float32Array(rows * vocab);
  // one block's memory for every block: a fresh 64 MB each cost page faults and collections
  const weights = new Float32Array(Math.min(size, vocab) * cols);
  for (let v0 = 0; v0 < vocab; v0 += size) {
    const n = Math.min(size, vocab - v0);
    const block = await linear(backend, x, rows, matrix(n, cols, readRowRange(raw(), head.stored, cols, v0, weights.subarray(0, n * cols))));
    for (let r = 0; r < rows; r++) out.set(block.subarray(r * n, (r + 1) * n), r * vocab + v0);
  }
  return out;
}
