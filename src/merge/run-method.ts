/**
 * One output tensor through its merge method, the same on the main thread and in the worker:
 * scratch arrays come from a pool and go back to it, and the result always lands in one of the
 * input arrays (so it can travel back from a worker as an index).
 */
import type { BufferPool } from '../pipeline/buffer-pool.js';
import { maskRng } from './mask-rng.js';
import type { MergeMethodDef, TensorContext } from './methods.js';

/** Merges `inputs` in place; returns the index of the input now holding the result. */
export function runMethod(method: MergeMethodDef, context: TensorContext, inputs: Float32Array[], seed: number, pool: BufferPool): number {
  const scratch: Float32Array[] = [];
  const env = {
    rng: (input: number) => maskRng(seed, context.tensor, input),
    scratch: () => {
      const s = pool.acquire(context.numel);
      scratch.push(s);
      return s;
    },
  };
  try {
    const out = method.merge(context, inputs, env);
    let index = inputs.indexOf(out);
    if (index < 0) {
      inputs[0].set(out);
      index = 0;
    }
    return index;
  } finally {
    scratch.forEach((s) => pool.release(s));
  }
}
