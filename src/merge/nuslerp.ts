/**
 * mergekit's nuslerp (merge_methods/nuslerp.py): spherical interpolation of two models at
 * t = w₂/(w₁ + w₂) (0.5 when |w₁ + w₂| < 1e-6) — of their task vectors, added back to the base,
 * when base_model is given. Each vector of the layout is interpolated on its own: the angle comes
 * from the vectors normalised (norms clamped at 1e-7), the result mixes the unnormalised vectors
 * by sin((1−t)θ)/sin θ and sin(tθ)/sin θ, and |sin θ| < 1e-8 falls back to lerp (no 0.9995
 * threshold as in slerp). Sums run in f64.
 */
import type { VectorLayout } from './vectors.js';

/** mergekit's interpolation position from the two models' weights, in model order. */
export function nuslerpT(w1: number, w2: number): number {
  const sum = w1 + w2;
  return Math.abs(sum) < 1e-6 ? 0.5 : w2 / sum;
}

/** nuslerp from `v0` (t = 0) to `v1` (t = 1), around `base` when given; written into `v0` and returned. */
export function nuslerpInto(t: number, v0: Float32Array, v1: Float32Array, base: Float32Array | undefined, layout: VectorLayout): Float32Array {
  for (let v = 0; v < layout.count; v++) {
    const start = layout.start(v);
    let s00 = 0;
    let s11 = 0;
    let s01 = 0;
    for (let k = 0, idx = start; k < layout.length; k++, idx += layout.step) {
      const b = base ? base[idx] : 0;
      const a0 = v0[idx] - b;
      const a1 = v1[idx] - b;
      s00 += a0 * a0;
      s11 += a1 * a1;
      s01 += a0 * a1;
    }
    const cos = s01 / (Math.max(Math.sqrt(s00), 1e-7) * Math.max(Math.sqrt(s11), 1e-7));
    const theta = Math.acos(Math.min(1, Math.max(-1, cos)));
    const sin = Math.sin(theta);
    const lerp = Math.abs(sin) < 1e-8;
    const c0 = lerp ? 1 - t : Math.sin((1 - t) * theta) / sin;
    const c1 = lerp ? t : Math.sin(t * theta) / sin;
    for (let k = 0, idx = start; k < layout.length; k++, idx += layout.step) {
      const b = base ? base[idx] : 0;
      v0[idx] = b + c0 * (v0[idx] - b) + c1 * (v1[idx] - b);
    }
  }
  return v0;
}
