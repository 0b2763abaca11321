/**
 * mergekit's ram (merge_methods/ram.py, Reinforced Agent Merging): an entry of a task vector is
 * active when |x − base| > epsilon (the difference in float32, as mergekit takes it). Where one model
 * is active its task vector is taken whole (times λ, which ramplus_tl sets per model), where several
 * are their mean, where none the base stays.
 */

/** The task vector entry mergekit tests and sums: the float32 difference. */
export function taskEntry(x: Float32Array, base: Float32Array, k: number): number {
  return Math.fround(x[k] - base[k]);
}

/** ram of `models` around `base` with per-model λ on unique entries (1 for plain ram); written into base. */
export function ramInto(base: Float32Array, models: readonly Float32Array[], epsilon: number, lambdas?: readonly number[]): Float32Array {
  const n = models.length;
  for (let k = 0; k < base.length; k++) {
    let count = 0;
    let sum = 0;
    let last = 0;
    for (let i = 0; i < n; i++) {
      const d = taskEntry(models[i], base, k);
      if (Math.abs(d) > epsilon) {
        count++;
        sum += d;
        last = i;
      }
    }
    if (count === 1) base[k] += lambdas ? lambdas[last] * sum : sum;
    else if (count > 1) base[k] += sum / count;
  }
  return base;
}
