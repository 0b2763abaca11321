/**
 * mergekit's `magnitude_outliers` sparsification (sparsify.py), behind breadcrumbs and
 * breadcrumbs_ties: drop the largest |δ| (the outliers, a fraction gamma) and the smallest, keeping
 * a fraction `density` of the entries in between.
 *
 *   n_top = ⌊gamma·n⌋, target = ⌊density·n⌋, n_bot = n − target − n_top
 *   n_bot < 0 (density + gamma > 1): n_top += n_bot, n_bot = 0 — fewer outliers are dropped
 *   keep the entries at ascending-|δ| positions [n_bot, n − n_top)
 *
 * mergekit writes the slice `[n_bot:-n_top]`, so n_top = 0 keeps nothing: gamma = 0, or the default
 * gamma 0.01 on a tensor of fewer than 100 entries (norm weights), drops the whole task vector. We
 * reproduce that, so a config gives mergekit's tensors; the docs say so.
 */
import { applyTopK, keptBy, l1Norm, rescaleToL1, selectTopK } from './sparsify.js';
import { bitsOf } from '../tensor/top-k.js';

/** How many of n entries mergekit drops at the top (n_top) and keeps (target) for density and gamma. */
export function outlierCounts(density: number, gamma: number, n: number): { top: number; kept: number } {
  const target = Math.trunc(density * n);
  let top = Math.trunc(gamma * n);
  const bottom = n - target - top;
  if (bottom < 0) top += bottom;
  // the `[n_bot:-n_top]` slice: n_top = 0 selects nothing
  return { top, kept: top > 0 ? target : 0 };
}

/** In place: keeps the `density` fraction of |x| below the top `gamma` fraction (mergekit's counts), optionally rescaled to the L1 norm. */
export function sparsifyOutliers(x: Float32Array, density: number, gamma: number, rescale: boolean): void {
  if (density >= 1) return;
  const { top, kept } = outlierCounts(density, gamma, x.length);
  if (kept <= 0) {
    x.fill(0);
    return;
  }
  const before = rescale ? l1Norm(x) : 0;
  // the kept entries are the (top + kept) largest minus the `top` largest; both selections break
  // ties in index order, so the second is a subset of the first
  applyTopK(x, selectTopK(x, top + kept));
  const outliers = selectTopK(x, top);
  const bits = bitsOf(x);
  for (let i = 0; i < bits.length; i++) {
    bits[i] &= (keptBy(bits[i] & 0x7fffffff, i, outliers.threshold, outliers.lastTie) - 1) | 0x80000000;
  }
  if (rescale) rescaleToL1(x, before);
}
