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
import { matrix, transpose, type Matrix } from '../tensor/matrix.js';
import { readElements } from './row-read.js';

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
  const n = rows * cols;
  return readElements(raw, loc, e * n, new Float32Array(n), `expert ${e}`);
}

/**
 * An expert's stored values as the out × in weight the MLP multiplies by: as they are for
 * (E, out, in) stacks, transposed for families that store (E, in, out).
 */
export function expertWeight(config: RawConfig | undefined, name: string, shape: readonly number[], data: Float32Array): Matrix {
  const [rows, cols] = [shape[1]!, shape[2]!];
  const param = name.replace(/\.weight$/, '').split('.').pop()!;
  const stored = matrix(rows, cols, data);
  return expertLayout(config, param, shape) === 'out-in' ? stored : transpose(stored);
}
