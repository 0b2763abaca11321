/**
 * mergekit's model_stock (merge_methods/model_stock.py; Jang et al. 2024): with task vectors
 * δ_i = x_i − base of N ≥ 2 models, cos = the mean pairwise cosine (norm products clamped at 1e-6),
 * t = N·cos / (1 + (N − 1)·cos), result t·mean(x) + (1 − t)·base. cos comes from the whole tensor,
 * or per last-dim vector with filter_wise. As in mergekit, nothing guards t: a negative mean cosine
 * gives t < 0, and cos = −1/(N − 1) divides by zero. Sums run in f64.
 */
import type { VectorLayout } from './vectors.js';

/** model_stock of `models` around `base`, written into `base` and returned. */
export function modelStockInto(base: Float32Array, models: readonly Float32Array[], layout: VectorLayout): Float32Array {
  const n = models.length;
  const offset = new Float64Array(n);
  const sq = new Float64Array(n);
  const dot = new Float64Array(n * n);
  for (let v = 0; v < layout.count; v++) {
    sq.fill(0);
    dot.fill(0);
    const start = layout.start(v);
    for (let k = 0, idx = start; k < layout.length; k++, idx += layout.step) {
      const b = base[idx];
      for (let i = 0; i < n; i++) {
        const o = models[i][idx] - b;
        offset[i] = o;
        sq[i] += o * o;
        for (let j = 0; j < i; j++) dot[i * n + j] += o * offset[j];
      }
    }
    let cosSum = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < i; j++) {
        const cos = dot[i * n + j] / Math.max(Math.sqrt(sq[i]) * Math.sqrt(sq[j]), 1e-6);
        cosSum += Math.min(1, Math.max(-1, cos));
      }
    }
    const cos = cosSum / ((n * (n - 1)) / 2);
    const t = (n * cos) / (1 + (n - 1) * cos);
    for (let k = 0, idx = start; k < layout.length; k++, idx += layout.step) {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += models[i][idx];
      base[idx] = (t * sum) / n + (1 - t) * base[idx];
    }
  }
  return base;
}
