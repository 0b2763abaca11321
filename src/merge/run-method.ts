/**
 * One output tensor through its merge method, the same on the main thread and in the worker:
 * scratch arrays come from the arrays lent with the inputs (a worker's come from the main thread's
 * pool, so every large array is counted in one place), then from a pool, and go back to it; the
 * result always lands in one of the input arrays (so it can travel back from a worker as an index).
 */
import type { BufferPool } from '../pipeline/buffer-pool.js';
import { maskRng } from './mask-rng.js';
import type { MergeMethodDef, TensorContext } from './methods.js';

/** Working arrays `method` may take per tensor: the executor's memory budget counts them. */
export const scratchArrays = (method: MergeMethodDef): number => method.scratch ?? 0;

/**
 * Merges `inputs` in place; returns the index of the input now holding the result. `lent`: arrays
 * of context.numel entries or more to use as scratch first (they stay the caller's).
 */
export function runMethod(method: MergeMethodDef, context: TensorContext, inputs: Float32Array[], seed: number, pool: BufferPool, lent: readonly Float32Array[] = []): number {
  const taken: Float32Array[] = [];
  let count = 0;
  const env = {
    rng: (input: number) => maskRng(seed, context.tensor, input),
    scratch: () => {
      // the budget would no longer bound memory: a method must declare what it takes
      if (count >= scratchArrays(method)) throw new Error(`merge method ${method.name} takes more working arrays than the ${scratchArrays(method)} it declares (tensor "${context.tensor}")`);
      const s = count < lent.length ? lent[count].subarray(0, context.numel) : pool.acquire(context.numel);
      if (count >= lent.length) taken.push(s);
      count++;
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
    taken.forEach((s) => pool.release(s));
  }
}
