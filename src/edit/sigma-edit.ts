/**
 * The Σ edit itself, shared by plain LoRA modules and MoE expert stacks: which components an edit
 * keeps, their new singular values σ', and LoRA factors that store U·diag(σ')·Vᵀ at a given scale.
 * Semantics of each edit are documented in edit.ts.
 */
import { loraScaling } from '../lora/adapter.js';
import { fromSvd, type LowRank } from '../lowrank/low-rank.js';
import type { Svd } from '../linalg/svd-small.js';
import type { Matrix } from '../tensor/matrix.js';

export interface SigmaEdit {
  /** component indices to keep; every other one is removed */
  keep?: readonly number[];
  /** component indices to remove */
  zero?: readonly number[];
  /** per-component factors */
  scale?: ReadonlyMap<number, number>;
  /** ε of σ_i·(1 + ε·r_i) */
  perturb?: number;
}

export function isEmptyEdit(e: SigmaEdit): boolean {
  return e.keep === undefined && (e.zero?.length ?? 0) === 0 && (e.scale?.size ?? 0) === 0 && (e.perturb ?? 0) === 0;
}

/** Largest component index the edit names (−1 for none): it must exist in some selected module. */
export function largestIndex(e: SigmaEdit): number {
  return Math.max(-1, ...(e.keep ?? []), ...(e.zero ?? []), ...(e.scale?.keys() ?? []));
}

/** Indices (< count) the edit removes: not kept, zeroed, or scaled by 0. */
export function removedComponents(count: number, e: SigmaEdit): Set<number> {
  const removed = new Set<number>();
  if (e.keep) {
    const keep = new Set(e.keep);
    for (let i = 0; i < count; i++) if (!keep.has(i)) removed.add(i);
  }
  for (const i of e.zero ?? []) if (i < count) removed.add(i);
  for (const [i, f] of e.scale ?? []) if (i < count && f === 0) removed.add(i);
  return removed;
}

/**
 * σ' for every component, in the original order: removed ones are 0, scaled ones multiplied,
 * then all multiplied by (1 + ε·noise_i). Indices beyond σ's length do nothing.
 */
export function applySigmaEdit(sigma: ArrayLike<number>, e: SigmaEdit, noise?: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(sigma);
  for (const i of removedComponents(out.length, e)) out[i] = 0;
  for (const [i, f] of e.scale ?? []) if (i < out.length) out[i] *= f;
  const eps = e.perturb ?? 0;
  if (eps !== 0) {
    if (!noise || noise.length < out.length) throw new Error(`spectrum/edit.ts: --perturb needs ${out.length} noise values, got ${noise?.length ?? 0}`);
    for (let i = 0; i < out.length; i++) out[i] *= 1 + eps * noise[i];
  }
  return out;
}

/** σ' of every component (0 for removed ones) and the indices of those that survive, ascending. */
export function editComponents(sigma: ArrayLike<number>, e: SigmaEdit, noise?: ArrayLike<number>): { sigmaAfter: Float64Array; kept: number[] } {
  const sigmaAfter = applySigmaEdit(sigma, e, noise);
  const removed = removedComponents(sigmaAfter.length, e);
  return { sigmaAfter, kept: [...sigmaAfter.keys()].filter((i) => !removed.has(i)) };
}

/** PEFT's scale at the edited rank; refused when it is 0 or not finite, since no factors could then store the update. */
export function editedScaling(alpha: number, rank: number, useRslora: boolean): number {
  const scaling = loraScaling(alpha, rank, useRslora);
  if (!(scaling !== 0 && Number.isFinite(scaling))) {
    throw new Error(`spectrum/edit.ts: lora_alpha ${alpha} gives scaling ${scaling} at rank ${rank}; cannot store an edited update with it`);
  }
  return scaling;
}

/** Columns `cols` of a row-major matrix, each multiplied by `signs[j]`. */
function pickColumns(m: Matrix, cols: readonly number[], signs?: readonly number[]): Matrix {
  const k = cols.length;
  const data = new Float32Array(m.rows * k);
  for (let r = 0; r < m.rows; r++) {
    for (let j = 0; j < k; j++) data[r * k + j] = (signs?.[j] ?? 1) * m.data[r * m.cols + cols[j]];
  }
  return { rows: m.rows, cols: k, data };
}

/**
 * Balanced factors of the `kept` components with scaling·B·A = Σ_kept σ'_i·u_i·v_iᵀ: A = √|Σ''|·Vᵀ,
 * B = sign(σ')·U·√|Σ''|, Σ'' = |σ'| / scaling. An empty `kept` gives 0-rank factors.
 */
export function factorsForComponents(svd: Svd, sigmaAfter: ArrayLike<number>, kept: readonly number[], scaling: number): LowRank {
  const signs = kept.map((i) => (sigmaAfter[i] < 0 ? -1 : 1));
  const S = Float64Array.from(kept, (i) => Math.abs(sigmaAfter[i]) / scaling);
  return fromSvd({ U: pickColumns(svd.U, kept, signs), S, V: pickColumns(svd.V, kept) }, kept.length);
}

export interface Refactored extends LowRank {
  /** σ' of every original component (0 for removed ones) */
  sigmaAfter: Float64Array;
  rank: number;
}

/**
 * LoRA factors for U·diag(σ')·Vᵀ with the removed components dropped, scaled so that
 * loraScaling(alpha, rank', rslora)·B·A equals it.
 */
export function refactorEdited(svd: Svd, e: SigmaEdit, alpha: number, useRslora: boolean, noise?: ArrayLike<number>): Refactored {
  const { sigmaAfter, kept } = editComponents(svd.S, e, noise);
  // a module with every component removed stays a (zero) rank-1 module rather than vanishing
  if (kept.length === 0) {
    const { A, B } = factorsForComponents(svd, new Float64Array(sigmaAfter.length), [0], editedScaling(alpha, 1, useRslora));
    return { A, B, sigmaAfter, rank: 1 };
  }
  const { A, B } = factorsForComponents(svd, sigmaAfter, kept, editedScaling(alpha, kept.length, useRslora));
  return { A, B, sigmaAfter, rank: kept.length };
}
