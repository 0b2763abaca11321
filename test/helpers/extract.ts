/**
 * Checkpoint pairs with planted differences of known rank, for extraction tests: a seeded base
 * model, model A = base + ΔA and model B = base + ΔB, each ΔX a sum of U·diag(s)·Vᵀ with chosen
 * singular values. Both models are written in the same dtype, so tensors no delta touches are
 * bit-identical in A and B.
 */
import { join } from 'node:path';
import type { FloatDType } from '../../src/io/types.js';
import { createRng } from '../../src/linalg/random.js';
import { plantedMatrix } from '../linalg/planted.js';
import { writeModelFolder } from './synthetic.js';

/** The demo's config.json builder, so tests and the demo describe the same kind of model. */
export { llamaConfig } from '../../src/demo/demo.js';

export type Tensors = Record<string, { shape: number[]; data: Float32Array }>;

export interface TinyLlamaShape {
  layers: number;
  hidden: number;
  intermediate: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  /** no lm_head tensor; config says tie_word_embeddings */
  tied?: boolean;
}

export const TINY_LLAMA: TinyLlamaShape = { layers: 2, hidden: 64, intermediate: 96, heads: 4, kvHeads: 2, vocab: 50 };

function gaussian(count: number, std: number, seed: number): Float32Array {
  const data = new Float32Array(count);
  createRng(seed).fillNormal(data);
  for (let i = 0; i < count; i++) data[i] *= std;
  return data;
}

/** Shapes of every tensor of a Llama-style model, in save_pretrained order. */
export function llamaShapes(s: TinyLlamaShape): Record<string, number[]> {
  const headDim = s.hidden / s.heads;
  const shapes: Record<string, number[]> = { 'model.embed_tokens.weight': [s.vocab, s.hidden] };
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    shapes[`${p}.input_layernorm.weight`] = [s.hidden];
    shapes[`${p}.mlp.down_proj.weight`] = [s.hidden, s.intermediate];
    shapes[`${p}.mlp.gate_proj.weight`] = [s.intermediate, s.hidden];
    shapes[`${p}.mlp.up_proj.weight`] = [s.intermediate, s.hidden];
    shapes[`${p}.post_attention_layernorm.weight`] = [s.hidden];
    shapes[`${p}.self_attn.k_proj.weight`] = [s.kvHeads * headDim, s.hidden];
    shapes[`${p}.self_attn.o_proj.weight`] = [s.hidden, s.hidden];
    shapes[`${p}.self_attn.q_proj.weight`] = [s.hidden, s.hidden];
    shapes[`${p}.self_attn.v_proj.weight`] = [s.kvHeads * headDim, s.hidden];
  }
  shapes['model.norm.weight'] = [s.hidden];
  if (!s.tied) shapes['lm_head.weight'] = [s.vocab, s.hidden];
  return shapes;
}

/** A seeded base model: weights ~ N(0, 0.02²), norms all ones. */
export function llamaBase(s: TinyLlamaShape, seed: number): Tensors {
  const out: Tensors = {};
  let k = 0;
  for (const [name, shape] of Object.entries(llamaShapes(s))) {
    const count = shape.reduce((x, y) => x * y, 1);
    out[name] = { shape, data: name.endsWith('norm.weight') ? new Float32Array(count).fill(1) : gaussian(count, 0.02, seed * 1000 + k++) };
  }
  return out;
}

/** A rank-len(s) matrix U·diag(s)·Vᵀ (rows × cols) with seeded orthonormal U, V. */
export function planted(rows: number, cols: number, s: readonly number[], seed: number): Float32Array {
  return plantedMatrix(rows, cols, s, seed).a.data;
}

export function addInto(target: Float32Array, delta: Float32Array, scale = 1): Float32Array {
  const out = target.slice();
  for (let i = 0; i < out.length; i++) out[i] += scale * delta[i];
  return out;
}

/** `base` with `deltas` added (tensors not named are shared, not copied). */
export function withDeltas(base: Tensors, deltas: Record<string, Float32Array>): Tensors {
  const out: Tensors = { ...base };
  for (const [name, d] of Object.entries(deltas)) {
    const t = base[name];
    if (!t) throw new Error(`withDeltas: no tensor ${name}`);
    out[name] = { shape: t.shape, data: addInto(t.data, d) };
  }
  return out;
}

export interface PairOptions {
  dtype?: FloatDType;
  maxShardBytes?: number;
  config?: Record<string, unknown>;
}

/** Writes models A and B under `root` (folders `a` and `b`) and returns their paths. */
export async function writePair(root: string, a: Tensors, b: Tensors, opts: PairOptions = {}): Promise<{ a: string; b: string }> {
  const paths = { a: join(root, 'a'), b: join(root, 'b') };
  const folder = { dtype: opts.dtype ?? 'BF16', maxShardBytes: opts.maxShardBytes, config: opts.config };
  await writeModelFolder(paths.a, a, folder);
  await writeModelFolder(paths.b, b, folder);
  return paths;
}

/** ‖x − y‖_F / ‖y‖_F in f64. */
export function relDiff(x: Float32Array, y: Float32Array): number {
  let d = 0;
  let t = 0;
  for (let i = 0; i < y.length; i++) {
    d += (x[i] - y[i]) ** 2;
    t += y[i] ** 2;
  }
  return Math.sqrt(d / t);
}

/** x − y elementwise into a new array. */
export function minus(x: Float32Array, y: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] - y[i];
  return out;
}

/** scale · B (out × r) · A (r × in) in f64, row-major out × in. */
export function product(B: Float32Array, A: Float32Array, out: number, r: number, inF: number, scale = 1): Float32Array {
  const p = new Float32Array(out * inF);
  const row = new Float64Array(inF);
  for (let o = 0; o < out; o++) {
    row.fill(0);
    for (let j = 0; j < r; j++) {
      const b = B[o * r + j];
      for (let i = 0; i < inF; i++) row[i] += b * A[j * inF + i];
    }
    for (let i = 0; i < inF; i++) p[o * inF + i] = scale * row[i];
  }
  return p;
}
