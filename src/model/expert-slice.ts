/**
 * One expert of a 3-D expert tensor (transformers 5's fused `mlp.experts.gate_up_proj` /
 * `down_proj`, (E, ·, ·)), read on its own: only that expert's bytes are read and decoded, so a
 * MoE layer needs memory for one expert at a time, not for all E of them.
 */
import { expertLayout } from '../arch/experts.js';
import type { RawConfig } from '../arch/index.js';
import { InputError } from '../errors.js';
import type { RawTensorReader } from '../io/raw-read.js';
import type { TensorLocation } from '../io/types.js';
import { decodeIntoF32, dtypeByteSize, isFloatDType } from '../tensor/dtype.js';
import { firstNonFiniteError } from '../tensor/finite.js';
import { matrix, type Matrix } from '../tensor/matrix.js';

/** Checks that `shape` holds expert `e` in three dimensions; returns the per-expert (rows, cols) as stored. */
export function expertDims(where: string, name: string, shape: readonly number[], e: number): [number, number] {
  if (shape.length !== 3 || e >= shape[0]!) {
    throw new InputError(`${where}: tensor "${name}" is [${shape.join(', ')}] but the engine needs expert ${e} of a 3-D (experts, ·, ·) stack; config.json's expert count does not match the weights`, { file: where, tensor: name });
  }
  return [shape[1]!, shape[2]!];
}

/** Expert `e`'s stored (rows × cols) values, read from disk alone, NaN/Inf refused. */
export function readExpert(raw: RawTensorReader, loc: TensorLocation, e: number): Float32Array {
  const [rows, cols] = expertDims(loc.path, loc.name, loc.shape, e);
  if (!isFloatDType(loc.dtype)) throw new InputError(`${loc.path}: tensor "${loc.name}" has dtype ${loc.dtype}; dequantize the checkpoint first`, { file: loc.path, tensor: loc.name });
  const n = rows * cols;
  const size = dtypeByteSize(loc.dtype)!;
  const bytes = raw.readBytes(loc, new Uint8Array(n * size), e * n * size);
  const out = new Float32Array(n);
  if (!decodeIntoF32(bytes, loc.dtype, out)) throw firstNonFiniteError(out, `${loc.path}: tensor "${loc.name}" (expert ${e})`, { file: loc.path, tensor: loc.name });
  return out;
}

/**
 * An expert's stored values as the out × in weight the MLP multiplies by: as they are for
 * (E, out, in) stacks, transposed for families that store (E, in, out).
 */
export function expertWeight(config: RawConfig | undefined, name: string, shape: readonly number[], data: Float32Array): Matrix {
  const [rows, cols] = [shape[1]!, shape[2]!];
  const param = name.replace(/\.weight$/, '').split('.').pop()!;
  if (expertLayout(config, param, shape) === 'out-in') return matrix(rows, cols, data);
  const t = new Float32Array(data.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = data[i * cols + j]!;
  return matrix(cols, rows, t);
}
