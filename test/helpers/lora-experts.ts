/**
 * Tiny MoE checkpoint pairs with planted per-expert low-rank deltas, for tests of 3-D expert
 * stacks ([experts, ·, ·], PEFT target_parameters): one layer with an attention projection and a
 * fused expert block (gate_up_proj, down_proj) in either layout transformers uses.
 */
import { join } from 'node:path';
import { extractLora } from '../../src/extract/index.js';
import { createRng } from '../../src/linalg/random.js';
import type { ExpertLayout } from '../../src/lora/adapter.js';
import { planted, withDeltas, writePair, type Tensors } from './extract.js';

export const MOE = { experts: 4, hidden: 32, intermediate: 24 } as const;
export const GATE_UP = 'model.layers.0.mlp.experts.gate_up_proj';
export const DOWN = 'model.layers.0.mlp.experts.down_proj';
export const Q = 'model.layers.0.self_attn.q_proj.weight';
/** gate_up expert e gets the first e + 1 of these singular values; down only expert 2, DOWN_SIGMA */
export const GATE_UP_SIGMA = [0.3, 0.25, 0.2, 0.15];
export const DOWN_SIGMA = [0.3, 0.1];
/** each expert layout with a model type whose config makes extract pick it */
export const MOE_LAYOUTS = [
  ['out-in', 'qwen3_moe'],
  ['in-out', 'gpt_oss'],
] as const;

/** The singular values writeMoePair plants in expert e of `parameter` (none: unchanged). */
export function plantedSigma(parameter: typeof GATE_UP | typeof DOWN, e: number): number[] {
  if (parameter === GATE_UP) return GATE_UP_SIGMA.slice(0, e + 1);
  return e === 2 ? DOWN_SIGMA : [];
}

/** Smallest r with σ₁² + … + σ_r² ≥ p·Σσ² (0 for a zero update): the effective rank spectrum reports. */
export function plantedEffectiveRank(sigma: number[], p: number): number {
  const total = sumSquares(sigma);
  if (total === 0) return 0;
  let acc = 0;
  for (let i = 0; i < sigma.length; i++) {
    acc += sigma[i] ** 2;
    if (acc >= p * total - 1e-15) return i + 1;
  }
  return sigma.length;
}

export function sumSquares(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return s;
}

export interface MoePair {
  a: string;
  b: string;
  /** the planted ΔW_e (out × in) of each expert, per 3-D tensor; plus q_proj's ΔW */
  deltas: { [GATE_UP]: Float32Array[]; [DOWN]: Float32Array[]; [Q]: Float32Array };
  /** each 3-D tensor's shape and planted Δ as the checkpoint stores it */
  stacked: Record<string, { shape: number[]; data: Float32Array }>;
}

function noise(shape: number[], seed: number): { shape: number[]; data: Float32Array } {
  const data = new Float32Array(shape.reduce((x, y) => x * y, 1));
  createRng(seed).fillNormal(data);
  for (let i = 0; i < data.length; i++) data[i] *= 0.02;
  return { shape, data };
}

/** The [E, out, in] ('out-in') or [E, in, out] ('in-out') tensor holding each expert's out × in matrix. */
export function stackExperts(perExpert: readonly Float32Array[], out: number, inF: number, layout: ExpertLayout): Float32Array {
  const data = new Float32Array(perExpert.length * out * inF);
  perExpert.forEach((w, e) => {
    for (let o = 0; o < out; o++) {
      for (let i = 0; i < inF; i++) data[e * out * inF + (layout === 'out-in' ? o * inF + i : i * out + o)] = w[o * inF + i];
    }
  });
  return data;
}

/**
 * Models A and B (F32, under `root`) that differ by: gate_up expert e a rank-(e + 1) ΔW_e, down
 * only in expert 2 (rank 2; not at all with `downUnchanged`), q_proj rank 2. `modelType` decides the expert layout for extract
 * (qwen3_moe: out-in, gpt_oss: in-out), and `layout` must agree with it.
 */
export async function writeMoePair(root: string, layout: ExpertLayout, modelType: string, opts: { downUnchanged?: boolean } = {}): Promise<MoePair> {
  const { experts: E, hidden: H, intermediate: I } = MOE;
  const shape3 = (out: number, inF: number) => (layout === 'out-in' ? [E, out, inF] : [E, inF, out]);
  const deltas = {
    [GATE_UP]: Array.from({ length: E }, (_, e) => planted(2 * I, H, GATE_UP_SIGMA.slice(0, e + 1), 150 + e)),
    [DOWN]: Array.from({ length: E }, (_, e) => (e === 2 && !opts.downUnchanged ? planted(H, I, DOWN_SIGMA, 160) : new Float32Array(H * I))),
    [Q]: planted(H, H, [0.2, 0.1], 170),
  };
  const stacked = {
    [GATE_UP]: { shape: shape3(2 * I, H), data: stackExperts(deltas[GATE_UP], 2 * I, H, layout) },
    [DOWN]: { shape: shape3(H, I), data: stackExperts(deltas[DOWN], H, I, layout) },
  };
  const a: Tensors = {
    'model.embed_tokens.weight': noise([40, H], 11),
    [Q]: noise([H, H], 12),
    [GATE_UP]: noise(stacked[GATE_UP].shape, 13),
    [DOWN]: noise(stacked[DOWN].shape, 14),
  };
  const b = withDeltas(a, { [Q]: deltas[Q], [GATE_UP]: stacked[GATE_UP].data, [DOWN]: stacked[DOWN].data });
  const paths = await writePair(root, a, b, { dtype: 'F32', config: { model_type: modelType, hidden_size: H, num_local_experts: E } });
  return { ...paths, deltas, stacked };
}

/** A MoE pair in each layout under `root`, each with the adapter extract makes of it (energy 0.9999). */
export async function extractedMoeAdapters(root: string): Promise<{ pairs: Record<ExpertLayout, MoePair>; adapters: Record<ExpertLayout, string> }> {
  const pairs = {} as Record<ExpertLayout, MoePair>;
  const adapters = {} as Record<ExpertLayout, string>;
  for (const [layout, modelType] of MOE_LAYOUTS) {
    pairs[layout] = await writeMoePair(join(root, layout), layout, modelType);
    adapters[layout] = join(root, layout, 'adapter');
    await extractLora({ modelA: pairs[layout].a, modelB: pairs[layout].b, out: adapters[layout], policy: { mode: 'energy', energy: 0.9999, maxRank: 8 } });
  }
  return { pairs, adapters };
}
