/**
 * Sparsification of task vectors, as mergekit/sparsify.py defines it, in place on f32 data:
 *
 * - magnitude (TIES trim): keep the k = ⌊density·n⌋ entries of largest |x|, zero the rest.
 *   mergekit takes the first k of a descending sort; we find the k-th largest magnitude by a
 *   radix select over the f32 bit patterns (two counting passes, no sort of millions of entries) and
 *   keep entries equal to it in index order until k are kept — what a stable sort would keep.
 * - random (DARE): keep each entry with probability `density`, from a seeded RNG.
 *
 * With `rescale`, the kept entries are scaled so that the L1 norm matches the original (mergekit's
 * `rescale` maps to RescaleNorm.l1), unless either norm is below 1e-7. density ≥ 1 leaves the
 * tensor untouched, rescale or not.
 */
import type { Rng } from '../linalg/random.js';

/** mergekit's tolerance below which a norm is treated as zero and no rescaling happens. */
const RESCALE_EPS = 1e-7;

/** Entries TIES keeps for `density` out of `n`: ⌊density·n⌋ as mergekit's int(density * numel). */
export function magnitudeKeepCount(density: number, n: number): number {
  return Math.trunc(density * n);
}

function l1Norm(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.abs(x[i]);
  return s;
}

function rescaleToL1(x: Float32Array, before: number): void {
  const after = l1Norm(x);
  if (before < RESCALE_EPS || after < RESCALE_EPS) return;
  const scale = before / after;
  for (let i = 0; i < x.length; i++) x[i] *= scale;
}

/**
 * The k-th largest |x| as an f32 bit pattern with the sign cleared (for non-negative floats the bit
 * patterns order like the values), and how many entries lie strictly above it. 1 ≤ k ≤ n.
 */
export function kthLargestMagnitude(bits: Uint32Array, k: number): { threshold: number; above: number } {
  const high = new Uint32Array(1 << 15);
  for (let i = 0; i < bits.length; i++) high[(bits[i] & 0x7fffffff) >>> 16]++;
  let above = 0;
  let h = high.length - 1;
  for (; h > 0 && above + high[h] < k; h--) above += high[h];
  const low = new Uint32Array(1 << 16);
  for (let i = 0; i < bits.length; i++) {
    const a = bits[i] & 0x7fffffff;
    if (a >>> 16 === h) low[a & 0xffff]++;
  }
  let l = low.length - 1;
  for (; l > 0 && above + low[l] < k; l--) above += low[l];
  return { threshold: (h << 16) | l, above };
}

/** TIES trim in place: keeps the ⌊density·n⌋ largest-magnitude entries. Throws when that is none. */
export function sparsifyMagnitude(x: Float32Array, density: number, rescale: boolean): void {
  if (density >= 1) return;
  const k = magnitudeKeepCount(density, x.length);
  if (k <= 0) throw new Error(`density ${density} keeps no entry of a ${x.length}-entry tensor (use a density ≥ ${1 / x.length})`);
  const before = rescale ? l1Norm(x) : 0;
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const { threshold, above } = kthLargestMagnitude(bits, k);
  let ties = k - above;
  for (let i = 0; i < bits.length; i++) {
    const a = bits[i] & 0x7fffffff;
    if (a > threshold) continue;
    if (a === threshold && ties > 0) {
      ties--;
      continue;
    }
    x[i] = 0;
  }
  if (rescale) rescaleToL1(x, before);
}

/** DARE drop in place: entry i survives when rng.next() < density (one draw per entry, in order). */
export function sparsifyRandom(x: Float32Array, density: number, rescale: boolean, rng: Rng): void {
  if (density >= 1) return;
  const before = rescale ? l1Norm(x) : 0;
  for (let i = 0; i < x.length; i++) {
    if (!(rng.next() < density)) x[i] = 0;
  }
  if (rescale) rescaleToL1(x, before);
}
