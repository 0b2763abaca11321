/**
 * mergekit's `della_magprune` sparsification (sparsify.py), behind della and della_linear: every
 * entry is kept at random, with a probability that grows with its magnitude rank.
 *
 *   ranks of |δ| run along dim 1 (1 = smallest): a 1-D tensor is one row, a 2-D tensor [out, in] is
 *   ranked within each row, a 3-D [a, b, c] tensor along b for each (i, k) — not along the last dim
 *   p = (density − ε) + 2ε·(rank − 1)/(n − 1), n = size of dim 1: mean keep probability density, ε a half-width
 *   keep with probability p (one draw per entry, in storage order), then optionally rescale to the L1 norm
 *
 * density ≥ 1 leaves δ as it is; otherwise density ± ε must lie inside (0, 1) (`dellaParamError`).
 * Where dim 1 has one entry, mergekit divides 0 by 0 and torch refuses the NaN probability; we use
 * p = density there.
 */
import type { Rng } from '../linalg/random.js';
import { bitsOf } from '../tensor/top-k.js';
import { l1Norm, rescaleToL1 } from './sparsify.js';

/** Why density/epsilon cannot be used (mergekit raises ValueError), or undefined when they can. */
export function dellaParamError(density: number, epsilon: number): string | undefined {
  if (density >= 1 || density <= 0) return undefined;
  if (density + epsilon < 1 && density - epsilon > 0) return undefined;
  return `density ${density} ± epsilon ${epsilon} must stay inside (0, 1) (mergekit: "Epsilon must be chosen such that density +/- epsilon is in (0, 1)"): use an epsilon below ${Math.min(density, 1 - density)}`;
}

/** Rows, ranked length and inner stride of the dim-1 ranking for `shape`. */
function lanes(shape: readonly number[]): { outer: number; n: number; inner: number } {
  if (shape.length < 2) return { outer: 1, n: shape.reduce((a, b) => a * b, 1), inner: 1 };
  return { outer: shape[0], n: shape[1], inner: shape.slice(2).reduce((a, b) => a * b, 1) };
}

/**
 * out[i] = the keep probability of x[i]. Each lane is ranked by one native sort of doubles that
 * pack (magnitude bits, position): exact while the packed value fits 53 bits (lanes up to 2^22),
 * ties in position order; longer lanes sort positions with a comparator.
 */
export function dellaKeepProbabilities(x: Float32Array, shape: readonly number[], density: number, epsilon: number, out: Float32Array): void {
  const { outer, n, inner } = lanes(shape);
  const bits = bitsOf(x);
  const low = 2 ** Math.max(1, Math.ceil(Math.log2(n)));
  const packed = 31 + Math.log2(low) <= 53;
  const keys = new Float64Array(n);
  const order = new Uint32Array(n);
  const lo = density - epsilon;
  for (let i = 0; i < outer; i++) {
    for (let k = 0; k < inner; k++) {
      const at = (j: number) => (i * n + j) * inner + k;
      if (packed) {
        for (let j = 0; j < n; j++) keys[j] = (bits[at(j)] & 0x7fffffff) * low + j;
        keys.sort();
        for (let r = 0; r < n; r++) order[r] = keys[r] % low;
      } else {
        for (let j = 0; j < n; j++) order[j] = j;
        order.sort((p, q) => (bits[at(p)] & 0x7fffffff) - (bits[at(q)] & 0x7fffffff) || p - q);
      }
      for (let r = 0; r < n; r++) out[at(order[r])] = n > 1 ? lo + (r / (n - 1)) * 2 * epsilon : density;
    }
  }
}

/** In place: della's random magnitude-ranked drop; `probs` is a working array of x's size. */
export function sparsifyDella(x: Float32Array, shape: readonly number[], density: number, epsilon: number, rescale: boolean, rng: Rng, probs: Float32Array): void {
  if (density >= 1) return;
  const problem = dellaParamError(density, epsilon);
  if (problem) throw new Error(problem);
  if (density <= 0) {
    x.fill(0);
    return;
  }
  dellaKeepProbabilities(x, shape, density, epsilon, probs);
  const before = rescale ? l1Norm(x) : 0;
  for (let i = 0; i < x.length; i++) {
    if (!(rng.next() < probs[i])) x[i] = 0;
  }
  if (rescale) rescaleToL1(x, before);
}
