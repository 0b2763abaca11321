/**
 * mergekit's nearswap (merge_methods/nearswap.py): each entry moves from the base toward the other
 * model by at most t, w = clamp(t / max(|other − base|, 1e-6), 0, 1), result w·other + (1 − w)·base.
 * Written with mergekit's weight rather than as base + clamp(δ, −t, t): the two differ where
 * |δ| < 1e-6 and t < 1e-6.
 */

/** nearswap of `other` toward `base`, written into `base` and returned. */
export function nearswapInto(t: number, base: Float32Array, other: Float32Array): Float32Array {
  for (let i = 0; i < base.length; i++) {
    const a = base[i];
    const b = other[i];
    const w = Math.min(1, Math.max(0, t / Math.max(Math.abs(a - b), 1e-6)));
    base[i] = w * b + (1 - w) * a;
  }
  return base;
}
