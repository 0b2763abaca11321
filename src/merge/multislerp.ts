/**
 * mergekit's multislerp (merge_methods/multislerp.py): barycentric interpolation of N tensors (task
 * vectors with a base) on the hypersphere. Weights are divided by their sum when normalizing;
 * u_i = x_i/(‖x_i‖ + eps); the mean m = Σ w_i·u_i is normalised; the tangent Σ w_i·(u_i − (u_i·m̂)·m̂)
 * is mapped back by cos/sin of its norm (+ eps); the result is scaled by Σ w_i·‖x_i‖. When ‖m‖ < eps
 * two models are mixed linearly and more are refused.
 *
 * Every vector above is a combination of the inputs, so the whole computation runs on their Gram
 * matrix (f64) and the tensors are read twice: once for it, once to write the result.
 */
import { combineInto, gramMatrix } from './vectors.js';

export interface MultislerpOptions {
  normalizeWeights: boolean;
  eps: number;
  /** the tensor's name, for the message when the weighted mean vanishes */
  tensor: string;
}

/** multislerp of `xs` (around `base` when given), written into xs[0] and returned. */
export function multislerpInto(xs: readonly Float32Array[], weights: readonly number[], base: Float32Array | undefined, opts: MultislerpOptions): Float32Array {
  const n = xs.length;
  if (n === 1) return xs[0];
  const total = weights.reduce((s, w) => s + w, 0);
  const w = weights.map((x) => (opts.normalizeWeights ? x / total : x));
  const g = gramMatrix(xs, base);
  const norms = w.map((_, i) => Math.sqrt(g[i * n + i]));
  // m = Σ a_i·(x_i − base) with a_i = w_i/(‖x_i‖ + eps)
  const a = w.map((wi, i) => wi / (norms[i] + opts.eps));
  const ga = a.map((_, i) => a.reduce((s, aj, j) => s + aj * g[i * n + j], 0));
  const meanNorm = Math.sqrt(Math.max(0, a.reduce((s, ai, i) => s + ai * ga[i], 0)));
  if (meanNorm < opts.eps) {
    if (n === 2) return combineInto(xs[0], xs, w, base);
    throw new Error(
      `multislerp: the weighted mean of the ${n} models' directions is zero for tensor "${opts.tensor}" (models pointing in opposite directions with weights that cancel): change the weights`,
    );
  }
  // Σ w_i·(u_i·m̂); the tangent is m·(1 − c/‖m‖), zero up to rounding, kept for mergekit's formula
  const c = w.reduce((s, wi, i) => s + (wi * ga[i]) / (norms[i] + opts.eps) / meanNorm, 0);
  const tangent = 1 - c / meanNorm;
  const tau = Math.abs(meanNorm * tangent) + opts.eps;
  const scale = w.reduce((s, wi, i) => s + wi * norms[i], 0);
  const k = (Math.cos(tau) / meanNorm + (tangent * Math.sin(tau)) / tau) * scale;
  return combineInto(
    xs[0],
    xs,
    a.map((ai) => ai * k),
    base,
  );
}
