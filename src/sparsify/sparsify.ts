/**
 * Sparsification of task vectors, as mergekit/sparsify.py defines it, in place on f32 data:
 *
 * - magnitude (TIES trim): keep the k = ⌊density·n⌋ entries of largest |x|, zero the rest.
 *   mergekit takes the first k of a descending sort; we find the k-th largest magnitude by
 *   selection over the f32 bit patterns (for non-negative floats they order like the values) and
 *   keep entries equal to it in index order until k are kept — what a stable sort keeps.
 * - random (DARE): keep each entry with probability `density`, from a seeded RNG.
 *
 * With `rescale`, the kept entries are scaled so that the L1 norm matches the original (mergekit's
 * `rescale` maps to RescaleNorm.l1), unless either norm is below 1e-7. density ≥ 1 leaves the
 * tensor untouched, rescale or not.
 *
 * Cost matters: a 2048×8192 projection has 16.7M entries, a sort of them takes seconds, and each
 * extra pass over memory shows in the merge time. `selectTopK` samples 65 536 magnitudes to
 * bracket the threshold, then one pass (which also forms x − base) counts the entries above the
 * bracket and collects the few inside it (or, when the bracket is a single magnitude, as with
 * quantized weights, just counts); the exact threshold is selected among those. Nothing is zeroed:
 * the result is a TopK rule that the caller applies in its own pass (`keptBy`). When the bracket
 * misses (it is six standard deviations wide, so practically never), a radix select over all
 * entries decides.
 */
import type { Rng } from '../linalg/random.js';
import { bitsOf, kthLargestMagnitude } from '../tensor/top-k.js';

/** mergekit's tolerance below which a norm is treated as zero and no rescaling happens. */
const RESCALE_EPS = 1e-7;

/** Magnitudes sampled to bracket the threshold. */
const SAMPLE_SIZE = 1 << 16;
/** Half-width of the bracket in standard deviations of the sampled rank (binomial), plus a few ranks. */
const BRACKET_SIGMAS = 6;
const BRACKET_SLACK = 16;
/** Below this size, or when the bracket would hold more than this fraction, a radix select over everything is as cheap. */
const MIN_SAMPLED_SIZE = 16 * SAMPLE_SIZE;
const MAX_BRACKET_FRACTION = 0.1;

/**
 * Which entries survive a TIES trim: those with magnitude bits above `threshold`, and those equal
 * to it at index ≤ `lastTie`. { threshold: 0, lastTie: n } keeps everything.
 */
export interface TopK {
  /** sign-cleared f32 bits of the k-th largest magnitude */
  threshold: number;
  lastTie: number;
}

/** The rule that keeps every entry. */
export function keepAll(n: number): TopK {
  return { threshold: 0, lastTie: n };
}

/**
 * 1 when an entry with magnitude bits `a` at index `i` survives `threshold`/`lastTie`, else 0 —
 * branch-free (entries fall on either side of the threshold about equally often, so a branch
 * would mispredict half the time): above: threshold − a < 0; equal: (a ^ threshold) − 1 < 0;
 * early enough: i − lastTie − 1 < 0. All operands stay below 2^31.
 */
export function keptBy(a: number, i: number, threshold: number, lastTie: number): number {
  return ((threshold - a) >>> 31) | ((((a ^ threshold) - 1) >>> 31) & ((i - lastTie - 1) >>> 31));
}

/** Entries TIES keeps for `density` out of `n`: ⌊density·n⌋ as mergekit's int(density * numel). */
export function magnitudeKeepCount(density: number, n: number): number {
  return Math.trunc(density * n);
}

export function l1Norm(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.abs(x[i]);
  return s;
}

/**
 * Scales x so its L1 norm is `before` again (mergekit's RescaleNorm.l1), unless either norm is below
 * 1e-7. `after` is x's L1 norm now, when the caller summed it in its own pass (in index order, as l1Norm).
 */
export function rescaleToL1(x: Float32Array, before: number, after = l1Norm(x)): void {
  if (before < RESCALE_EPS || after < RESCALE_EPS) return;
  const scale = before / after;
  for (let i = 0; i < x.length; i++) x[i] *= scale;
}

/** A bracket [lo, hi] of magnitude bits that holds the k-th largest |x − base| with near certainty, or undefined when sampling does not pay. */
function sampleBracket(x: Float32Array, base: Float32Array | undefined, k: number): { lo: number; hi: number } | undefined {
  const n = x.length;
  if (n < MIN_SAMPLED_SIZE) return undefined;
  const q = k / n;
  const margin = BRACKET_SIGMAS * Math.sqrt(SAMPLE_SIZE * q * (1 - q)) + BRACKET_SLACK;
  if ((2 * margin) / SAMPLE_SIZE > MAX_BRACKET_FRACTION) return undefined;
  const one = new Float32Array(1);
  const oneBits = new Uint32Array(one.buffer);
  const sample = new Uint32Array(SAMPLE_SIZE);
  // a fixed xorshift: the sample only affects speed, never the result
  let s = 0x2545f491;
  for (let t = 0; t < SAMPLE_SIZE; t++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const i = (s >>> 0) % n;
    one[0] = base ? x[i] - base[i] : x[i];
    sample[t] = oneBits[0] & 0x7fffffff;
  }
  sample.sort();
  // the r-th largest sampled magnitude estimates the k-th largest overall (r = q·SAMPLE_SIZE)
  const nthLargest = (r: number) => sample[SAMPLE_SIZE - 1 - r];
  const r = q * SAMPLE_SIZE;
  const top = Math.floor(r - margin);
  const bottom = Math.ceil(r + margin);
  return { hi: top < 0 ? 0x7fffffff : nthLargest(top), lo: bottom >= SAMPLE_SIZE ? 0 : nthLargest(bottom) };
}

/** x ← x − base. */
export function subtract(x: Float32Array, base: Float32Array): void {
  for (let i = 0; i < x.length; i++) x[i] -= base[i];
}

/** One pass: x ← x − base (when given), and count entries with |x| above and equal to `threshold` (branch-free). */
function countAboveAndEqual(x: Float32Array, base: Float32Array | undefined, threshold: number): { above: number; equal: number } {
  if (base) subtract(x, base);
  const bits = bitsOf(x);
  let above = 0;
  let equal = 0;
  for (let i = 0; i < bits.length; i++) {
    const a = bits[i] & 0x7fffffff;
    above += (threshold - a) >>> 31;
    equal += ((a ^ threshold) - 1) >>> 31;
  }
  return { above, equal };
}

/**
 * One pass: x ← x − base (when given), count entries with |x| above `hi`, and collect the indices
 * and magnitudes with |x| in [lo, hi] in index order (undefined when more than `capacity`, a power
 * of two). The count is branch-free; the bracket test is one branch, taken for the few inside.
 */
function countAndCollect(
  x: Float32Array,
  base: Float32Array | undefined,
  lo: number,
  hi: number,
  capacity: number,
): { above: number; inside?: { index: Uint32Array; magnitude: Uint32Array } } {
  if (base) subtract(x, base);
  const bits = bitsOf(x);
  const index = new Uint32Array(capacity);
  const magnitude = new Uint32Array(capacity);
  const wrap = capacity - 1;
  let above = 0;
  let c = 0;
  for (let i = 0; i < bits.length; i++) {
    const a = bits[i] & 0x7fffffff;
    // hi − a < 0 exactly when a > hi (both below 2^31); (a − lo) | (hi − a) ≥ 0 exactly when lo ≤ a ≤ hi
    above += (hi - a) >>> 31;
    if (((a - lo) | (hi - a)) >= 0) {
      // past capacity the result is discarded below
      index[c & wrap] = i;
      magnitude[c & wrap] = a;
      c++;
    }
  }
  return { above, inside: c <= capacity ? { index: index.subarray(0, c), magnitude: magnitude.subarray(0, c) } : undefined };
}

/** Index of the quota-th entry (1-based, in index order) whose magnitude equals `threshold`; reads until found. */
function nthTie(x: Float32Array, threshold: number, quota: number): number {
  const bits = bitsOf(x);
  let seen = 0;
  for (let i = 0; i < bits.length; i++) {
    seen += (((bits[i] & 0x7fffffff) ^ threshold) - 1) >>> 31;
    if (seen === quota) return i;
  }
  throw new Error(`internal error: fewer than ${quota} entries at the top-k threshold; please report it`);
}

/**
 * The TIES rule for keeping the k largest |x| (1 ≤ k ≤ n): everything above the k-th largest
 * magnitude, and the entries equal to it up to the one that makes k, in index order. With `base`,
 * x is first turned into x − base (in the same pass as the counting).
 */
export function selectTopK(x: Float32Array, k: number, base?: Float32Array): TopK {
  const n = x.length;
  const bracket = sampleBracket(x, base, k);
  if (bracket && bracket.lo === bracket.hi) {
    // quantized weights (bf16 differences) often put thousands of entries on one magnitude: when
    // the whole bracket is one value, counting decides and nothing needs collecting
    const { above, equal } = countAboveAndEqual(x, base, bracket.lo);
    if (above < k && above + equal >= k) return { threshold: bracket.lo, lastTie: nthTie(x, bracket.lo, k - above) };
  } else if (bracket) {
    const capacity = 2 ** Math.ceil(Math.log2(n * 2 * MAX_BRACKET_FRACTION));
    const { above, inside } = countAndCollect(x, base, bracket.lo, bracket.hi, capacity);
    if (inside && above < k && above + inside.index.length >= k) {
      const { threshold, above: aboveInside } = kthLargestMagnitude(inside.magnitude, k - above);
      let quota = k - above - aboveInside;
      for (let j = 0; j < inside.index.length; j++) {
        if (inside.magnitude[j] === threshold && --quota === 0) return { threshold, lastTie: inside.index[j] };
      }
    }
  } else if (base) {
    subtract(x, base);
  }
  const { threshold, above } = kthLargestMagnitude(bitsOf(x), k);
  return { threshold, lastTie: nthTie(x, threshold, k - above) };
}

/** Zeroes the entries `topK` does not keep (branch-free). */
export function applyTopK(x: Float32Array, { threshold, lastTie }: TopK): void {
  const bits = bitsOf(x);
  for (let i = 0; i < bits.length; i++) {
    // −keptBy is −1 (keep every bit) or 0 (clear all but the sign: ±0)
    bits[i] &= -keptBy(bits[i] & 0x7fffffff, i, threshold, lastTie) | 0x80000000;
  }
}

/** TIES trim in place: keeps the ⌊density·n⌋ largest-magnitude entries. Throws when that is none. */
export function sparsifyMagnitude(x: Float32Array, density: number, rescale: boolean): void {
  if (density >= 1) return;
  const k = magnitudeKeepCount(density, x.length);
  if (k <= 0) throw new Error(`density ${density} keeps no entry of a ${x.length}-entry tensor (use a density ≥ ${1 / x.length})`);
  const before = rescale ? l1Norm(x) : 0;
  applyTopK(x, selectTopK(x, k));
  if (rescale) rescaleToL1(x, before);
}

/** Draws made at a time by the random drops: 16–32 KiB, reused while still in cache. */
export const DRAW_CHUNK = 4096;

/**
 * DARE drop in place: entry i survives when rng.next() < density (one draw per entry, in order).
 * The draws come DRAW_CHUNK at a time as a keep mask (fillKeepMask: the same draws as next(),
 * compared as integers), applied to the bits without a branch (dropped entries become +0).
 */
export function sparsifyRandom(x: Float32Array, density: number, rescale: boolean, rng: Rng): void {
  if (density >= 1) return;
  const bits = bitsOf(x);
  const chunk = new Int32Array(Math.min(DRAW_CHUNK, x.length));
  // both L1 norms in the same pass, in index order as l1Norm sums them (the dropped +0s add nothing),
  // so the rescale is bit for bit the same as with two more passes over x
  let before = 0;
  let after = 0;
  for (let start = 0; start < x.length; start += DRAW_CHUNK) {
    const keep = x.length - start < DRAW_CHUNK ? chunk.subarray(0, x.length - start) : chunk;
    rng.fillKeepMask(keep, density);
    for (let j = 0; j < keep.length; j++) {
      before += Math.abs(x[start + j]);
      bits[start + j] &= keep[j];
      after += Math.abs(x[start + j]);
    }
  }
  if (rescale) rescaleToL1(x, before, after);
}
