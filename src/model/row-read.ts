/**
 * Parts of a stored tensor read on their own: a run of rows of a 2-D table (a block of lm_head),
 * single rows (the embeddings of a batch's tokens), an expert of a 3-D stack. Rows are contiguous
 * in safetensors, so each part is one byte range; only its bytes are read and decoded, with
 * NaN/Inf refused naming file, tensor and rows. At a 128256-token vocabulary and hidden 2048 the
 * whole table is 1 GB of f32, while a batch needs a few rows of it.
 */
import { InputError } from '../errors.js';
import type { RawTensorReader } from '../io/raw-read.js';
import type { TensorLocation } from '../io/types.js';
import { isFloatDType } from '../tensor/dtype.js';
import { firstNonFiniteError } from '../tensor/finite.js';

/** Elements [start, start + out.length) of the tensor decoded into `out`; `what` names the part in errors. */
export function readElements(raw: RawTensorReader, loc: TensorLocation, start: number, out: Float32Array, what: string): Float32Array {
  const at = { file: loc.path, tensor: loc.name };
  if (!isFloatDType(loc.dtype)) throw new InputError(`${loc.path}: tensor "${loc.name}" has dtype ${loc.dtype}; dequantize the checkpoint first`, at);
  if (!raw.readPartF32(loc, out, start)) throw firstNonFiniteError(out, `${loc.path}: tensor "${loc.name}" (${what})`, at);
  return out;
}

/** Rows [row0, row0 + out.length / cols) of a (rows × cols) table into `out`. */
export function readRowRange(raw: RawTensorReader, loc: TensorLocation, cols: number, row0: number, out: Float32Array): Float32Array {
  const count = out.length / cols;
  return readElements(raw, loc, row0 * cols, out, count === 1 ? `row ${row0}` : `rows ${row0}–${row0 + count - 1}`);
}

/** Row ids[i] of a (rows × cols) table into row i of `out`, each distinct row read once. */
export function gatherRows(raw: RawTensorReader, loc: TensorLocation, cols: number, ids: ArrayLike<number>, out: Float32Array): Float32Array {
  const read = new Map<number, number>();
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    const first = read.get(id);
    if (first !== undefined) out.copyWithin(i * cols, first * cols, (first + 1) * cols);
    else {
      readElements(raw, loc, id * cols, out.subarray(i * cols, (i + 1) * cols), `row ${id}`);
      read.set(id, i);
    }
  }
  return out;
}
