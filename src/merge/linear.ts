/**
 * mergekit's linear merge (merge_methods/linear.py): Σ_i w_i·x_i, divided by Σ_i w_i when
 * `normalize` (the default). The planner refuses normalize with weights summing to 0 up front.
 * One pass per model: an inner loop over models per entry runs several times slower in V8.
 */

/** The weighted sum of `inputs`, written into inputs[0] and returned. */
export function mergeLinear(inputs: Float32Array[], weights: readonly number[], normalize: boolean): Float32Array {
  const out = inputs[0];
  const total = weights.reduce((s, w) => s + w, 0);
  const scale = normalize ? 1 / total : 1;
  if (inputs.length === 1) {
    const c = weights[0] * scale;
    for (let i = 0; i < out.length; i++) out[i] *= c;
    return out;
  }
  const w0 = weights[0];
  for (let i = 0; i < out.length; i++) out[i] *= w0;
  for (let j = 1; j < inputs.length; j++) {
    const x = inputs[j];
    const w = weights[j];
    for (let i = 0; i < out.length; i++) out[i] += w * x[i];
  }
  if (normalize) for (let i = 0; i < out.length; i++) out[i] *= scale;
  return out;
}
