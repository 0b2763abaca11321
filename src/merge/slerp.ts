/**
 * Spherical linear interpolation of two whole tensors, as mergekit's slerp(): the angle comes from
 * the tensors flattened and normalised (a norm ≤ 1e-8 is left unnormalised), the result mixes the
 * ORIGINAL tensors with sin((1−t)θ)/sin θ and sin(tθ)/sin θ, and when |cos θ| > 0.9995 (parallel or
 * antiparallel) it falls back to plain lerp (1−t)·v0 + t·v1. Sums run in f64.
 */

/** mergekit's DOT_THRESHOLD: beyond this |cos θ| the tensors count as colinear. */
export const SLERP_DOT_THRESHOLD = 0.9995;

/** mergekit's eps: norms at or below it are not divided by. */
const NORM_EPS = 1e-8;

/** The coefficients c0, c1 with slerp(t, v0, v1) = c0·v0 + c1·v1, and whether lerp was used. */
export function slerpCoefficients(t: number, v0: Float32Array, v1: Float32Array): { c0: number; c1: number; lerp: boolean } {
  if (v0.length !== v1.length) throw new Error(`slerp: tensors of ${v0.length} and ${v1.length} entries cannot be interpolated`);
  let s00 = 0;
  let s11 = 0;
  let s01 = 0;
  for (let i = 0; i < v0.length; i++) {
    const a = v0[i];
    const b = v1[i];
    s00 += a * a;
    s11 += b * b;
    s01 += a * b;
  }
  const n0 = Math.sqrt(s00);
  const n1 = Math.sqrt(s11);
  const dot = s01 / ((n0 > NORM_EPS ? n0 : 1) * (n1 > NORM_EPS ? n1 : 1));
  if (Math.abs(dot) > SLERP_DOT_THRESHOLD) return { c0: 1 - t, c1: t, lerp: true };
  const theta0 = Math.acos(dot);
  const sinTheta0 = Math.sin(theta0);
  const thetaT = theta0 * t;
  return { c0: Math.sin(theta0 - thetaT) / sinTheta0, c1: Math.sin(thetaT) / sinTheta0, lerp: false };
}

/** slerp(t, v0, v1) written into `out` (which may be v0 or v1); returns `out`. */
export function slerpInto(t: number, v0: Float32Array, v1: Float32Array, out: Float32Array = v0): Float32Array {
  const { c0, c1 } = slerpCoefficients(t, v0, v1);
  for (let i = 0; i < out.length; i++) out[i] = c0 * v0[i] + c1 * v1[i];
  return out;
}
