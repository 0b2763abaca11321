/**
 * mergekit's arcee_fusion (merge_methods/arcee_fusion.py): the other model's entries replace the
 * base's where they matter most. importance = |b − a|·KL(softmax(b) ‖ softmax(a)), the softmax
 * taken over each last-dim vector (+1e-8 on both distributions) and the KL shared by the vector's
 * entries; entries with importance ≥ median + 1.5·IQR take b, the rest keep a.
 *
 * Differences from mergekit, both deliberate: the scores are computed in f64 (mergekit's float32
 * KL loses ~1e-3 relative to cancellation on near-identical vectors), and the quantiles of a tensor
 * over 10⁶ entries come from all of it, where mergekit sorts a random sample of 10⁶ (so its mask is
 * not reproducible). Quantiles are mergekit's: sorted[trunc(q·(n − 1))], the product in float32.
 */
import type { VectorLayout } from './vectors.js';

/** The importance of each entry of `other` against `base`, written into `out` and returned. */
export function fusionImportance(base: Float32Array, other: Float32Array, layout: VectorLayout, out: Float32Array): Float32Array {
  for (let v = 0; v < layout.count; v++) {
    const start = layout.start(v);
    const end = start + layout.length * layout.step;
    let maxA = -Infinity;
    let maxB = -Infinity;
    for (let i = start; i < end; i += layout.step) {
      if (base[i] > maxA) maxA = base[i];
      if (other[i] > maxB) maxB = other[i];
    }
    let sumA = 0;
    let sumB = 0;
    for (let i = start; i < end; i += layout.step) {
      sumA += Math.exp(base[i] - maxA);
      sumB += Math.exp(other[i] - maxB);
    }
    let kl = 0;
    for (let i = start; i < end; i += layout.step) {
      const p = Math.exp(other[i] - maxB) / sumB + 1e-8;
      const q = Math.exp(base[i] - maxA) / sumA + 1e-8;
      kl += p * Math.log(p / q);
    }
    for (let i = start; i < end; i += layout.step) out[i] = Math.abs(other[i] - base[i]) * kl;
  }
  return out;
}

/** The k-th smallest of a[lo..hi] (inclusive), reordering that range (Hoare's selection). */
function selectKth(a: Float32Array, k: number, lo: number, hi: number): number {
  while (hi > lo) {
    const x = a[lo];
    const y = a[(lo + hi) >>> 1];
    const z = a[hi];
    const pivot = Math.max(Math.min(x, y), Math.min(Math.max(x, y), z));
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i++] = a[j];
        a[j--] = t;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else break;
  }
  return a[k];
}

/** mergekit's quantile index: float32 q times float32 (n − 1), truncated. */
function quantileIndex(q: number, n: number): number {
  return Math.trunc(Math.fround(Math.fround(q) * Math.fround(n - 1)));
}

/** median + 1.5·IQR of `scores`; `work` (same length) is overwritten. */
export function fusionThreshold(scores: Float32Array, work: Float32Array): number {
  const n = scores.length;
  work.set(scores);
  const [i1, i2, i3] = [0.25, 0.5, 0.75].map((q) => quantileIndex(q, n));
  const median = selectKth(work, i2, 0, n - 1);
  // after selecting i2, everything left of it is ≤ and everything right of it is ≥
  const q1 = i1 < i2 ? selectKth(work, i1, 0, i2 - 1) : median;
  const q3 = i3 > i2 ? selectKth(work, i3, i2 + 1, n - 1) : median;
  return median + 1.5 * (q3 - q1);
}

/** Where importance ≥ threshold, base takes other's entry; returns base. */
export function applyFusionMask(base: Float32Array, other: Float32Array, importance: Float32Array, threshold: number): Float32Array {
  for (let i = 0; i < base.length; i++) if (importance[i] >= threshold) base[i] = other[i];
  return base;
}

/** arcee_fusion of `other` into `base` (scratch: two arrays of the tensor's size); returns base. */
export function arceeFusionInto(base: Float32Array, other: Float32Array, layout: VectorLayout, scratch: () => Float32Array): Float32Array {
  const importance = fusionImportance(base, other, layout, scratch());
  return applyFusionMask(base, other, importance, fusionThreshold(importance, scratch()));
}
