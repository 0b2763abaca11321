/**
 * Merges that combine the adapters' deltas Δ_i = s_i·B_i·A_i and re-factorise the result with a
 * truncated SVD (PEFT's svd, ties_svd, dare_*_svd, magnitude_prune_svd; loraforge's
 * breadcrumbs*_svd and della*_svd; and every method under --exact).
 *
 * When the combination is a plain weighted sum, Σ c_i·B_i·A_i is a product of stacked factors and
 * its SVD comes from thin QRs of those (stackedProductSvd): O((m+n)·R²) with R = Σ r_i, never the
 * m×n matrix PEFT materialises. An element-wise step (pruning, DARE, TIES) needs the entries, so
 * there the deltas are formed by GEMMs and the top singular triplets found by a randomized SVD
 * with enough oversampling and power iterations to equal the truncated SVD.
 *
 * Factors follow PEFT: B = U_r·diag(S_r), A = V_rᵀ, optionally clamped (PEFT's svd_clamp).
 */
import { matrix, type Matrix } from '../tensor/matrix.js';
import { fromSvd } from '../lowrank/low-rank.js';
import type { Svd } from '../linalg/svd-small.js';
import { stackedProductSvd } from '../linalg/product-svd.js';
import { randomizedSvd } from '../linalg/rsvd.js';
import { combineTaskTensors, maskStream } from './prune.js';
import { roundoffFloor } from './exact.js';
import type { ElementwiseStep, LowRank, MergeTerm, ModuleMergeContext } from './types.js';

/**
 * Randomized SVD settings for the element-wise path. A pruned or DARE'd delta is full rank with a
 * slowly decaying tail, and σ_r / σ_{r+1} can be close to 1 (0.97 in PEFT's fixtures), so the
 * range finder gets generous extra directions and power iterations.
 */
const RSVD_OVERSAMPLE = 32;
const RSVD_POWER_ITERS = 6;

export interface SvdMerge extends LowRank {
  /** the singular values kept (before any clamp) */
  S: Float64Array;
  /** PEFT's clamp bound, when --svd-clamp was given */
  clampHi?: number;
}

/**
 * How each delta is weighted. PEFT (at the fixture commit) multiplies the combination weight by the
 * scaling although get_delta_weight already applied it, so c_i = w_i·s_i on Δ_i = s_i·B_i·A_i; the
 * exact merge (and PEFT after PR #3111) uses w_i. Weights are f32, as torch.tensor makes them.
 */
export function deltaWeights(terms: readonly MergeTerm[], exact: boolean): number[] {
  return terms.map((t) => Math.fround(exact ? t.weight : t.weight * t.scaling));
}

/** The linear-interpolation quantile of torch.quantile / numpy's default, q in [0, 1]. */
export function quantile(values: Float32Array, q: number): number {
  const sorted = Float32Array.from(values).sort();
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
}

/**
 * PEFT's svd_clamp: hi = the q-quantile of B's and A's entries pooled (signed, so it depends on the
 * SVD's sign choices and is dominated by B, which carries S), then both clamped to [−hi, hi]
 * (min(max(x, −hi), hi), as torch.clamp). In place; returns hi.
 */
export function clampFactors(f: LowRank, q: number): number {
  const pooled = new Float32Array(f.B.data.length + f.A.data.length);
  pooled.set(f.B.data);
  pooled.set(f.A.data, f.B.data.length);
  const hi = Math.fround(quantile(pooled, q));
  for (const m of [f.B, f.A]) {
    for (let i = 0; i < m.data.length; i++) m.data[i] = Math.min(Math.max(m.data[i], -hi), hi);
  }
  return hi;
}

/**
 * PEFT's split of a truncated SVD: B = U_k·diag(S_k), A = V_kᵀ, with k = rank, capped by the
 * triplets available and by the numerical rank (σ above the round-off floor: adapters that cancel
 * give rank 0).
 */
function factorsFromTruncatedSvd(svd: Svd, rank: number, zeroBelow: number): SvdMerge {
  let k = Math.min(rank, svd.S.length);
  while (k > 0 && !(svd.S[k - 1] > zeroBelow)) k--;
  return { ...fromSvd(svd, k, { sigmaOn: 'B' }), S: svd.S.slice(0, k) };
}

function finish(ctx: ModuleMergeContext, merged: SvdMerge): SvdMerge {
  if (ctx.svdClamp !== undefined && merged.S.length > 0) merged.clampHi = clampFactors(merged, ctx.svdClamp);
  return merged;
}

/**
 * svd (task arithmetic, then truncate) without forming the delta: the SVD of Σ c_i·s_i·B_i·A_i
 * from the stacked factors, which is exact, not an approximation of PEFT's dense SVD.
 */
export async function svdOfWeightedSum(ctx: ModuleMergeContext): Promise<SvdMerge> {
  const weights = deltaWeights(ctx.terms, ctx.exact);
  const coefficients = ctx.terms.map((t, i) => weights[i] * t.scaling);
  const svd = await stackedProductSvd(
    ctx.backend,
    ctx.terms.map((t, i) => ({ B: t.B, A: t.A, weight: coefficients[i] })),
  );
  return finish(ctx, factorsFromTruncatedSvd(svd, ctx.rank, roundoffFloor(ctx.terms, coefficients)));
}

/** The top `rank` singular triplets of a dense matrix (exact when the matrix is small). */
async function truncatedSvd(ctx: ModuleMergeContext, m: Matrix, rank: number): Promise<Svd> {
  return randomizedSvd(ctx.backend, m, { rank, oversample: RSVD_OVERSAMPLE, powerIters: RSVD_POWER_ITERS, seed: 0 });
}

/**
 * The matrix PEFT hands to its SVD in ties_svd, dare_*_svd and magnitude_prune_svd (and their
 * --exact forms): Δ_i = s_i·B_i·A_i formed on the backend, then `step` applied entry-wise with
 * the delta weights. breadcrumbs*_svd and della*_svd sparsify the same Δ_i at the same point.
 */
export async function combinedDeltas(ctx: ModuleMergeContext, step: ElementwiseStep): Promise<Matrix> {
  const { terms } = ctx;
  const m = terms[0].B.rows;
  const n = terms[0].A.cols;
  const deltas: Float32Array[] = [];
  for (const t of terms) {
    const d = (await ctx.backend.gemm(t.B, t.A)).data;
    const s = Math.fround(t.scaling);
    for (let i = 0; i < d.length; i++) d[i] *= s;
    deltas.push(d);
  }
  const combined = combineTaskTensors(step, deltas, deltaWeights(terms, ctx.exact), {
    density: ctx.density,
    majoritySign: ctx.majoritySign,
    mask: (i) => ctx.masks({ module: ctx.module, target: 'delta', adapter: terms[i].adapter, size: m * n }),
    gamma: ctx.gamma,
    epsilon: ctx.epsilon,
    // della ranks within each row of the base weight: Δ's rows, or for an embedding (Δ is its
    // transpose here) Δ's columns, which dim 1 of [1, m, n] runs along
    shape: ctx.kind === 'embedding' ? [1, m, n] : [m, n],
    rng: (i) => maskStream(ctx.seed ?? 0, ctx.module, 'delta', terms[i].adapter),
  });
  return matrix(m, n, combined);
}

/** The element-wise svd family: combinedDeltas, then its truncated SVD. */
export async function svdOfCombinedDeltas(ctx: ModuleMergeContext, step: ElementwiseStep): Promise<SvdMerge> {
  if (!Number.isFinite(ctx.rank)) {
    throw new Error(`merge-adapters/combine-svd.ts: module "${ctx.module}": an element-wise merge needs a finite output rank`);
  }
  const delta = await combinedDeltas(ctx, step);
  const svd = await truncatedSvd(ctx, delta, Math.min(ctx.rank, delta.rows, delta.cols));
  const weights = deltaWeights(ctx.terms, ctx.exact);
  const coefficients = ctx.terms.map((t, i) => weights[i] * t.scaling);
  return finish(ctx, factorsFromTruncatedSvd(svd, ctx.rank, roundoffFloor(ctx.terms, coefficients)));
}
