/**
 * mergekit's passthrough (merge_methods/passthrough.py): each output tensor is one input tensor,
 * optionally multiplied by the per-model `scale`. Combined with `slices`, this stacks or drops
 * layers ("frankenmerges"); the renumbering is done by the planner (plan.ts).
 */

/** The input itself, or the input times `scale` (in place). */
export function passthroughTensor(input: Float32Array, scale: number | undefined): Float32Array {
  if (scale === undefined) return input;
  for (let i = 0; i < input.length; i++) input[i] *= scale;
  return input;
}
