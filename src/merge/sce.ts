/**
 * mergekit's sce (merge_methods/sce.py, https://arxiv.org/abs/2408.07990): select, calculate, erase.
 *
 *   δ_i = x_i − base
 *   select (select_topk < 1): per entry, the population variance of δ over the models; keep the
 *     k = ⌊#(entries with variance ≠ 0)·select_topk⌋ entries of largest variance in every δ_i
 *   calculate: w_i = mean(δ_i²) / Σ_j mean(δ_j²) over the selected δ (uniform when that sum < 1e-6)
 *   erase: majority sign of Σ_i δ_i per entry (≥ 0 counts as +); entries of another sign (and zeros) drop out
 *   result = base + Σ_agree w_i·δ_i / max(Σ_agree w_i, 1e-6)
 *
 * Per-model config weights play no part (mergekit ignores them too). Arithmetic is f32 in mergekit's
 * order (models summed first to last), so results agree with it to the last bits or nearly.
 */
import { keptBy, selectTopK, subtract } from '../sparsify/sparsify.js';
import { bitsOf } from '../tensor/top-k.js';

/** mergekit's floors: below this the energy weights are uniform, and the agreeing weight sum is clamped to it. */
const MIN_WEIGHT = 1e-6;
/** the clamp happens in f32 */
const MIN_DIVISOR = Math.fround(MIN_WEIGHT);

/** Zeroes, in every task vector, the entries outside the k of largest variance across them. */
function selectByVariance(tvs: Float32Array[], selectTopK_: number, variance: Float32Array): void {
  const m = tvs.length;
  let nonzero = 0;
  for (let i = 0; i < variance.length; i++) {
    let mean = 0;
    for (let j = 0; j < m; j++) mean += tvs[j][i];
    mean /= m;
    let v = 0;
    for (let j = 0; j < m; j++) v += (tvs[j][i] - mean) ** 2;
    variance[i] = v / m;
    if (variance[i] !== 0) nonzero++;
  }
  const k = Math.trunc(nonzero * selectTopK_);
  if (k === 0) {
    tvs.forEach((tv) => tv.fill(0));
    return;
  }
  const { threshold, lastTie } = selectTopK(variance, k);
  const vbits = bitsOf(variance);
  for (const tv of tvs) {
    const bits = bitsOf(tv);
    for (let i = 0; i < bits.length; i++) bits[i] &= -keptBy(vbits[i] & 0x7fffffff, i, threshold, lastTie) | 0x80000000;
  }
}

/** mean(δ_i²) of each task vector, divided by their sum (uniform when the sum is below 1e-6). */
function energyWeights(tvs: Float32Array[]): number[] {
  const energy = tvs.map((tv) => {
    let s = 0;
    for (let i = 0; i < tv.length; i++) s += tv[i] * tv[i];
    return Math.fround(s / tv.length);
  });
  const total = energy.reduce((a, b) => a + b, 0);
  if (Math.abs(total) < MIN_WEIGHT) return tvs.map(() => Math.fround(1 / tvs.length));
  return energy.map((e) => Math.fround(e / total));
}

/**
 * Merges `models` into `base` (all overwritten; the result is returned in `base`). `scratch`
 * supplies working arrays of base.length entries.
 */
export function mergeSce(base: Float32Array, models: Float32Array[], selectTopK_: number, scratch: () => Float32Array): Float32Array {
  if (models.length === 0) return base;
  models.forEach((x) => subtract(x, base));
  const sum = scratch();
  if (selectTopK_ < 1) selectByVariance(models, selectTopK_, sum);
  const w = energyWeights(models);

  sum.fill(0);
  for (const tv of models) for (let i = 0; i < tv.length; i++) sum[i] += tv[i];
  const mixed = scratch().fill(0);
  const divisor = scratch().fill(0);
  const sumBits = bitsOf(sum);
  models.forEach((tv, j) => {
    const bits = bitsOf(tv);
    const wj = w[j];
    for (let i = 0; i < bits.length; i++) {
      const b = bits[i];
      // same sign as the sum (its top bit: +0 counts as +) and non-zero
      const agree = (((b ^ sumBits[i]) >>> 31) ^ 1) & (-(b & 0x7fffffff) >>> 31);
      mixed[i] += Math.fround(tv[i] * (agree * wj));
      divisor[i] += agree * wj;
    }
  });
  for (let i = 0; i < base.length; i++) base[i] += Math.fround(mixed[i] / Math.max(divisor[i], MIN_DIVISOR));
  return base;
}
