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
import { DRAW_CHUNK, rescaleToL1 } from './sparsify.js';

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

/** Bits per radix-sort pass, and the passes that cover a 31-bit magnitude. */
const DIGIT_BITS = 11;
const PASSES = 3;
const BUCKETS = 1 << DIGIT_BITS;
const DIGIT = BUCKETS - 1;

/**
 * The positions 0 … n−1 sorted by keys[position] (below 2^31), ties in position order: an LSD radix
 * sort from the identity order, which is stable, so equal keys stay in position order — exactly
 * what a sort of (key, position) pairs gives. A pass is skipped when all keys share its digit (the
 * exponent byte of a lane's deltas usually is one or two values). `order`, `spare` hold n entries;
 * returns whichever holds the result.
 */
function sortPositions(keys: Uint32Array, order: Uint32Array, spare: Uint32Array, counts: Uint32Array): Uint32Array {
  const n = keys.length;
  counts.fill(0);
  for (let j = 0; j < n; j++) {
    const key = keys[j];
    counts[key & DIGIT]++;
    counts[BUCKETS + ((key >>> DIGIT_BITS) & DIGIT)]++;
    counts[2 * BUCKETS + (key >>> (2 * DIGIT_BITS))]++;
  }
  for (let j = 0; j < n; j++) order[j] = j;
  let from = order;
  let to = spare;
  for (let pass = 0; pass < PASSES; pass++) {
    const count = counts.subarray(pass * BUCKETS, (pass + 1) * BUCKETS);
    const shift = pass * DIGIT_BITS;
    if (count[(keys[0] >>> shift) & DIGIT] === n) continue;
    // bucket counts → start offsets
    let sum = 0;
    for (let d = 0; d < BUCKETS; d++) {
      const c = count[d];
      count[d] = sum;
      sum += c;
    }
    for (let r = 0; r < n; r++) {
      const p = from[r];
      to[count[(keys[p] >>> shift) & DIGIT]++] = p;
    }
    [from, to] = [to, from];
  }
  return from;
}

/**
 * out[i] = the keep probability of x[i]. Each lane is ranked by magnitude bits (sign cleared; for
 * non-negative floats they order like the values), ties in position order (`sortPositions`).
 */
export function dellaKeepProbabilities(x: Float32Array, shape: readonly number[], density: number, epsilon: number, out: Float32Array): void {
  const { outer, n, inner } = lanes(shape);
  const bits = bitsOf(x);
  const keys = new Uint32Array(n);
  const order = new Uint32Array(n);
  const spare = new Uint32Array(n);
  const counts = new Uint32Array(PASSES * BUCKETS);
  const lo = density - epsilon;
  // the probability of each rank, the same for every lane (f32, as `out` stores it)
  const byRank = Float32Array.from({ length: n }, (_, r) => (n > 1 ? lo + (r / (n - 1)) * 2 * epsilon : density));
  for (let i = 0; i < outer; i++) {
    for (let k = 0; k < inner; k++) {
      // entry j of this lane is at first + j·inner
      const first = i * n * inner + k;
      for (let j = 0; j < n; j++) keys[j] = bits[first + j * inner] & 0x7fffffff;
      const ranked = sortPositions(keys, order, spare, counts);
      for (let r = 0; r < n; r++) out[first + ranked[r] * inner] = byRank[r];
    }
  }
}

/**
 * In place: della's random magnitude-ranked drop; `probs` is a working array of x's size. Entry i
 * survives when the i-th draw u is below probs[i]; the draws come DRAW_CHUNK at a time (fillUniform).
 * u < p is read off the sign bit of u − p rounded to f32 (rounding keeps the sign, and u − p is +0
 * when they are equal), so no branch mispredicts on the coin flips.
 */
export function sparsifyDella(x: Float32Array, shape: readonly number[], density: number, epsilon: number, rescale: boolean, rng: Rng, probs: Float32Array): void {
  if (density >= 1) return;
  const problem = dellaParamError(density, epsilon);
  if (problem) throw new Error(problem);
  if (density <= 0) {
    x.fill(0);
    return;
  }
  dellaKeepProbabilities(x, shape, density, epsilon, probs);
  const bits = bitsOf(x);
  const draws = new Float64Array(Math.min(DRAW_CHUNK, x.length));
  const below = new Float32Array(draws.length);
  const belowBits = bitsOf(below);
  // both L1 norms in this pass, in index order as l1Norm sums them (see sparsifyRandom)
  let before = 0;
  let after = 0;
  for (let start = 0; start < x.length; start += DRAW_CHUNK) {
    const u = x.length - start < DRAW_CHUNK ? draws.subarray(0, x.length - start) : draws;
    rng.fillUniform(u);
    for (let j = 0; j < u.length; j++) {
      const i = start + j;
      below[j] = u[j] - probs[i];
      before += Math.abs(x[i]);
      bits[i] &= belowBits[j] >> 31;
      after += Math.abs(x[i]);
    }
  }
  if (rescale) rescaleToL1(x, before, after);
}
