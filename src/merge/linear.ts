/**
 * mergekit's linear merge (merge_methods/linear.py): Σ_i w_i·x_i, divided by Σ_i w_i when
 * `normalize` (the default). The planner refuses normalize with weights summing to 0 up front.
 */

/** The weighted sum of `inputs`, written into inputs[0] and returned. */
export function mergeLinear(inputs: Float32Array[], weights: readonly number[], normalize: boolean): Float32Array {
  const out = inputs[0];
  const w = Float64Array.from(weights);
  let total = 0;
  for (const x of w) total += x;
  const divisor = normalize ? total : 1;
  const m = inputs.length;
  for (let i = 0; i < out.length; i++) {
    let s = 0;
    for (let j = 0; j < m; j++) s += inputs[j][i] * w[j];
    out[i] = s / divisor;
  }
  return out;
}
