/**
 * mergekit's ramplus_tl (merge_methods/ram.py, tensor-local RAM+): ram with each model's unique
 * entries scaled by λ_i = 1 + r·clamp(shared_i / max(unique_i, epsilon), 0, alpha), where shared_i
 * counts the model's active entries that another model is active at too and unique_i those only it
 * has, per tensor.
 */
import { ramInto, taskEntry } from './ram.js';

/** Each model's λ on its unique entries. */
export function ramplusLambdas(base: Float32Array, models: readonly Float32Array[], epsilon: number, r: number, alpha: number): number[] {
  const n = models.length;
  const shared = new Array<number>(n).fill(0);
  const unique = new Array<number>(n).fill(0);
  const active = new Uint8Array(n);
  for (let k = 0; k < base.length; k++) {
    let count = 0;
    for (let i = 0; i < n; i++) {
      active[i] = Math.abs(taskEntry(models[i], base, k)) > epsilon ? 1 : 0;
      count += active[i];
    }
    if (count === 0) continue;
    const counts = count === 1 ? unique : shared;
    for (let i = 0; i < n; i++) counts[i] += active[i];
  }
  return shared.map((s, i) => 1 + r * Math.min(alpha, Math.max(0, s / Math.max(unique[i], epsilon))));
}

/** ramplus_tl of `models` around `base`, written into base and returned. */
export function ramplusTlInto(base: Float32Array, models: readonly Float32Array[], epsilon: number, r: number, alpha: number): Float32Array {
  return ramInto(base, models, epsilon, ramplusLambdas(base, models, epsilon, r, alpha));
}
