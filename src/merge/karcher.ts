/**
 * mergekit's karcher (merge_methods/karcher.py): the Riemannian (Karcher) mean of the inputs as
 * points on the unit sphere, every input weighted 1/N (base_model, when given, is one more point).
 * The mean starts at the normalised average of the unit vectors and takes gradient steps of size 1
 * until the tangent's norm drops below tol or max_iter steps are taken; points within tol of the
 * mean are skipped. The result is scaled by the mean input norm (zero-norm inputs included, though
 * they take no part in the direction).
 *
 * The mean and every step are combinations of the inputs, so the iteration runs on their Gram matrix
 * (f64) as coefficient vectors; the tensors are read once for it and once to write the result.
 */
import { combineInto, gramMatrix } from './vectors.js';

/** The Karcher mean of `xs`, written into xs[0] and returned. */
export function karcherInto(xs: readonly Float32Array[], maxIter: number, tol: number): Float32Array {
  const n = xs.length;
  if (n === 1) return xs[0];
  const g = gramMatrix(xs);
  const quad = (c: Float64Array) => {
    let s = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) s += c[i] * g[i * n + j] * c[j];
    return Math.sqrt(Math.max(0, s));
  };
  const norms = xs.map((_, i) => Math.sqrt(g[i * n + i]));
  const valid = norms.flatMap((x, i) => (x > tol ? [i] : []));
  const u = new Float64Array(n);
  if (valid.length === 0) return combineInto(xs[0], xs, u);
  // weights are equal, so the valid points' normalised weights are equal too
  const alpha = 1 / valid.length;
  for (const i of valid) u[i] = alpha / norms[i];
  const initial = quad(u);
  if (initial < tol) {
    u.fill(0);
    u[valid[0]] = 1 / norms[valid[0]];
  } else for (let i = 0; i < n; i++) u[i] /= initial;
  const step = new Float64Array(n);
  for (let iter = 0; iter < maxIter; iter++) {
    step.fill(0);
    for (const i of valid) {
      let gu = 0;
      for (let j = 0; j < n; j++) gu += g[i * n + j] * u[j];
      const dot = Math.min(1, Math.max(-1, gu / norms[i]));
      const theta = Math.acos(dot);
      if (theta < tol) continue;
      const f = (alpha * theta) / Math.sin(theta);
      step[i] += f / norms[i];
      for (let j = 0; j < n; j++) step[j] -= f * dot * u[j];
    }
    const stepNorm = quad(step);
    if (stepNorm < tol) break;
    const cos = Math.cos(stepNorm);
    const sin = Math.sin(stepNorm) / stepNorm;
    for (let j = 0; j < n; j++) u[j] = cos * u[j] + sin * step[j];
    const norm = quad(u);
    if (norm > tol) for (let j = 0; j < n; j++) u[j] /= norm;
  }
  const scale = norms.reduce((s, x) => s + x, 0) / n;
  for (let j = 0; j < n; j++) u[j] *= scale;
  return combineInto(xs[0], xs, u);
}
