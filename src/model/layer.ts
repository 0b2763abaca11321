/**
 * One decoder layer over a batch of sequences: pre-norm attention and MLP (or MoE) sublayers with
 * residual connections, Gemma 2's sandwich norms where the family has them. The hidden states of
 * every sequence sit in one matrix, so each projection is one GEMM for the whole batch.
 */
import type { LinalgBackend } from '../linalg/backend.js';
import { matrix, type Matrix } from '../tensor/matrix.js';
import { appendKv, attend, newKvCache, type KvCache } from './attention.js';
import { addBias, addInto, gatedActivation, rmsNorm } from './kernels.js';
import { applyRope, ropeTable, type RopeTable } from './rope.js';
import { product } from './small-product.js';
import type { ModelSpec } from './spec.js';

/** Sequences side by side: rows [offset, offset + n) of the batch's hidden states are one sequence's. */
export interface Batch {
  /** rows × hidden */
  x: Float32Array;
  rows: number;
  seqs: BatchSequence[];
}

export interface BatchSequence {
  offset: number;
  n: number;
  /** position of the first row (the cache's length before this batch) */
  pos0: number;
  rope: RopeTable;
  /** per layer; absent: attention over this batch's rows only (a fresh cache each layer) */
  caches?: KvCache[];
}

export function batchSequence(spec: ModelSpec, offset: number, n: number, pos0 = 0, caches?: KvCache[]): BatchSequence {
  return { offset, n, pos0, rope: ropeTable(spec.invFreq, pos0, n), caches };
}

/**
 * Buffers that every layer of one forward pass reuses (the normed input, the attention heads'
 * output): fresh ones each layer were 32 MB a layer at 4 × 512 tokens for the collector.
 */
export interface LayerScratch {
  /** rows × hidden */
  h: Float32Array;
  /** rows × heads·headDim */
  heads: Float32Array;
}

export function layerScratch(spec: ModelSpec, rows: number): LayerScratch {
  return { h: new Float32Array(rows * spec.hidden), heads: new Float32Array(rows * spec.heads * spec.headDim) };
}

/** A layer's tensors by their path under `model.layers.N.`, read on first use. */
export interface LayerWeights {
  has(suffix: string): boolean;
  matrix(suffix: string): Promise<Matrix>;
  vector(suffix: string): Promise<Float32Array>;
  /** Expert `e` of a 3-D expert stack as its out × in weight, read without the other experts where it can be. */
  expert(suffix: string, e: number): Promise<Matrix>;
}

/** x·Wᵀ for x rows × in and W out × in. */
export async function linear(backend: LinalgBackend, x: Float32Array, rows: number, W: Matrix): Promise<Float32Array> {
  return (await product(backend, matrix(rows, W.cols, x), W, { transB: true })).data;
}

async function attentionSublayer(backend: LinalgBackend, spec: ModelSpec, l: number, w: LayerWeights, b: Batch, h: Float32Array, out: Float32Array): Promise<Float32Array> {
  const { heads, kvHeads, headDim: hd } = spec;
  const q = await linear(backend, h, b.rows, await w.matrix('self_attn.q_proj.weight'));
  const k = await linear(backend, h, b.rows, await w.matrix('self_attn.k_proj.weight'));
  const v = await linear(backend, h, b.rows, await w.matrix('self_attn.v_proj.weight'));
  if (w.has('self_attn.q_proj.bias')) addBias(q, await w.vector('self_attn.q_proj.bias'));
  if (w.has('self_attn.k_proj.bias')) addBias(k, await w.vector('self_attn.k_proj.bias'));
  if (w.has('self_attn.v_proj.bias')) addBias(v, await w.vector('self_attn.v_proj.bias'));
  if (spec.facts.qkNorm) {
    rmsNorm(q, b.rows * heads, hd, await w.vector('self_attn.q_norm.weight'), spec.eps, false, q);
    rmsNorm(k, b.rows * kvHeads, hd, await w.vector('self_attn.k_norm.weight'), spec.eps, false, k);
  }
  const qw = heads * hd;
  const kw = kvHeads * hd;
  for (const s of b.seqs) {
    const qs = q.subarray(s.offset * qw, (s.offset + s.n) * qw);
    const ks = k.subarray(s.offset * kw, (s.offset + s.n) * kw);
    applyRope(qs, s.n, heads, s.rope);
    applyRope(ks, s.n, kvHeads, s.rope);
    const cache = s.caches?.[l] ?? newKvCache(kvHeads, hd, s.n);
    appendKv(cache, ks, v.subarray(s.offset * kw, (s.offset + s.n) * kw), s.n, hd);
    const o = { heads, headDim: hd, scale: spec.attnScale, softcap: spec.attnSoftcap, window: spec.window(l) };
    await attend(backend, qs, s.n, cache, o, out.subarray(s.offset * qw, (s.offset + s.n) * qw));
  }
  return linear(backend, out, b.rows, await w.matrix('self_attn.o_proj.weight'));
}

/** down(act(gate·h) ⊙ up·h) */
async function gatedMlp(backend: LinalgBackend, spec: ModelSpec, h: Float32Array, rows: number, gate: Matrix, up: Matrix, down: Matrix): Promise<Float32Array> {
  const g = await linear(backend, h, rows, gate);
  const u = await linear(backend, h, rows, up);
  return linear(backend, gatedActivation(g, u, spec.act), rows, down);
}

async function denseMlp(backend: LinalgBackend, spec: ModelSpec, w: LayerWeights, prefix: string, h: Float32Array, rows: number, names = ['gate_proj', 'up_proj', 'down_proj']): Promise<Float32Array> {
  const [gate, up, down] = await Promise.all(names.map((n) => w.matrix(`${prefix}${n}.weight`)));
  return gatedMlp(backend, spec, h, rows, gate!, up!, down!);
}

/**
 * Expert e of transformers 5's fused layout: `mlp.experts.gate_up_proj` (gate rows, then up rows)
 * and `mlp.experts.down_proj`, each (E, ·, ·), with or without a `.weight` suffix.
 */
async function fusedExpertMlp(backend: LinalgBackend, spec: ModelSpec, w: LayerWeights, suffix: string, e: number, h: Float32Array, rows: number): Promise<Float32Array> {
  const gateUp = await w.expert(`mlp.experts.gate_up_proj${suffix}`, e);
  const ff = gateUp.rows / 2;
  const half = (k: number) => matrix(ff, gateUp.cols, gateUp.data.subarray(k * ff * gateUp.cols, (k + 1) * ff * gateUp.cols));
  return gatedMlp(backend, spec, h, rows, half(0), half(1), await w.expert(`mlp.experts.down_proj${suffix}`, e));
}

/**
 * Mixtral / Qwen3-MoE: a router picks top-k experts per token; each expert runs on the tokens
 * routed to it, one expert at a time, so only one expert's weights are needed at once.
 */
async function moeMlp(backend: LinalgBackend, spec: ModelSpec, w: LayerWeights, h: Float32Array, rows: number): Promise<Float32Array> {
  const moe = spec.moe!;
  // Mixtral keeps its per-expert modules and router under block_sparse_moe (mlp once transformers 5 fused the experts)
  const prefix = w.has('block_sparse_moe.gate.weight') ? 'block_sparse_moe.' : 'mlp.';
  const names = spec.facts.moe === 'mixtral' ? ['w1', 'w3', 'w2'] : ['gate_proj', 'up_proj', 'down_proj'];
  const fused = ['', '.weight'].find((s) => w.has(`mlp.experts.gate_up_proj${s}`));
  const logits = await linear(backend, h, rows, await w.matrix(`${prefix}gate.weight`));
  const E = moe.experts;
  const chosen: Array<Array<{ row: number; weight: number }>> = Array.from({ length: E }, () => []);
  const p = new Float64Array(E);
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let e = 0; e < E; e++) max = Math.max(max, logits[r * E + e]!);
    let sum = 0;
    for (let e = 0; e < E; e++) sum += p[e] = Math.exp(logits[r * E + e]! - max);
    for (let e = 0; e < E; e++) p[e]! /= sum;
    // top-k by probability, lowest index first on ties (torch.topk on CPU)
    const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => p[b]! - p[a]! || a - b).slice(0, moe.topK);
    const total = moe.normTopK ? order.reduce((acc, e) => acc + p[e]!, 0) : 1;
    for (const e of order) chosen[e]!.push({ row: r, weight: p[e]! / total });
  }
  const d = spec.hidden;
  const out = new Float32Array(rows * d);
  for (let e = 0; e < E; e++) {
    const routed = chosen[e]!;
    if (routed.length === 0) continue;
    const xs = new Float32Array(routed.length * d);
    routed.forEach(({ row }, i) => xs.set(h.subarray(row * d, (row + 1) * d), i * d));
    const y =
      fused === undefined ? await denseMlp(backend, spec, w, `${prefix}experts.${e}.`, xs, routed.length, names) : await fusedExpertMlp(backend, spec, w, fused, e, xs, routed.length);
    routed.forEach(({ row, weight }, i) => {
      for (let j = 0; j < d; j++) out[row * d + j]! += weight * y[i * d + j]!;
    });
  }
  return out;
}

/** Runs layer `l` on the batch, updating its hidden states in place. */
export async function layerForward(backend: LinalgBackend, spec: ModelSpec, l: number, w: LayerWeights, b: Batch, scratch = layerScratch(spec, b.rows)): Promise<void> {
  const { hidden: d, eps } = spec;
  const plusOne = spec.facts.normPlusOne ?? false;
  const h = rmsNorm(b.x, b.rows, d, await w.vector('input_layernorm.weight'), eps, plusOne, scratch.h);
  const attn = await attentionSublayer(backend, spec, l, w, b, h, scratch.heads);
  if (spec.facts.sandwich) rmsNorm(attn, b.rows, d, await w.vector('post_attention_layernorm.weight'), eps, plusOne, attn);
  addInto(b.x, attn);
  const preMlp = spec.facts.sandwich ? 'pre_feedforward_layernorm.weight' : 'post_attention_layernorm.weight';
  rmsNorm(b.x, b.rows, d, await w.vector(preMlp), eps, plusOne, h);
  const dense = !spec.moe || w.has('mlp.gate_proj.weight');
  const m = dense ? await denseMlp(backend, spec, w, 'mlp.', h, b.rows) : await moeMlp(backend, spec, w, h, b.rows);
  if (spec.facts.sandwich) rmsNorm(m, b.rows, d, await w.vector('post_feedforward_layernorm.weight'), eps, plusOne, m);
  addInto(b.x, m);
}
