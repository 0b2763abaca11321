/**
 * mergekit's "generalized task arithmetic" (merge_methods/generalized_task_arithmetic.py), behind
 * task_arithmetic, ties, dare_linear and dare_ties:
 *
 *   δ_i = x_i − base                          task vectors
 *   δ_i ← sparsify(δ_i, density_i)            ties: magnitude trim; dare_*: random drop
 *   d_i = w_i · δ_i                           weighted
 *   consensus (ties, dare_ties): per entry, the majority sign is that of Σ_i d_i (≥ 0 counts as +);
 *     only entries whose sign equals it (zeros never do) enter the sum and the divisor:
 *     mixed = Σ_{agree} d_i,  divisor = Σ_{agree} w_i  (0 → 1)
 *   no consensus: mixed = Σ_i d_i,  divisor = Σ_i w_i  (|·| < 1e-8 → 1)
 *   normalize: mixed /= divisor;  then mixed *= λ;  result = base + mixed
 */
import type { Rng } from '../linalg/random.js';
import { sparsifyMagnitude, sparsifyRandom } from './sparsify.js';

export interface TaskVector {
  /** the model's tensor; overwritten with its (sparsified) task vector */
  data: Float32Array;
  weight: number;
  density: number;
  /** the seeded stream for its DARE mask */
  rng?: () => Rng;
}

export interface TaskArithmeticOptions {
  sparsification: 'magnitude' | 'random' | undefined;
  /** TIES sign election by the sign of the sum */
  consensus: boolean;
  normalize: boolean;
  lambda: number;
  rescale: boolean;
}

/** mergekit: a divisor this close to 0 (weights summing to ~0 without consensus) is replaced by 1. */
const MIN_DIVISOR = 1e-8;

function sparsify(tv: TaskVector, opts: TaskArithmeticOptions): void {
  if (opts.sparsification === 'magnitude') sparsifyMagnitude(tv.data, tv.density, opts.rescale);
  else if (opts.sparsification === 'random') {
    if (!tv.rng) throw new Error('task arithmetic: a random sparsification needs an RNG for every task vector');
    sparsifyRandom(tv.data, tv.density, opts.rescale, tv.rng());
  }
}

/** Majority-sign merge: entry by entry, only the task vectors agreeing with the sign of the sum count. */
function mergeWithConsensus(base: Float32Array, deltas: Float32Array[], w: Float64Array, opts: TaskArithmeticOptions): void {
  const m = deltas.length;
  for (let i = 0; i < base.length; i++) {
    let sum = 0;
    for (let j = 0; j < m; j++) sum += deltas[j][i] * w[j];
    const positive = sum >= 0;
    let mixed = 0;
    let divisor = 0;
    for (let j = 0; j < m; j++) {
      const d = deltas[j][i] * w[j];
      if (positive ? d > 0 : d < 0) {
        mixed += d;
        divisor += w[j];
      }
    }
    if (opts.normalize) mixed /= divisor === 0 ? 1 : divisor;
    base[i] += mixed * opts.lambda;
  }
}

function mergeSum(base: Float32Array, deltas: Float32Array[], w: Float64Array, opts: TaskArithmeticOptions): void {
  let total = 0;
  for (const x of w) total += x;
  const divisor = Math.abs(total) < MIN_DIVISOR ? 1 : total;
  const scale = (opts.normalize ? 1 / divisor : 1) * opts.lambda;
  const m = deltas.length;
  for (let i = 0; i < base.length; i++) {
    let mixed = 0;
    for (let j = 0; j < m; j++) mixed += deltas[j][i] * w[j];
    base[i] += mixed * scale;
  }
}

/** Merges the task vectors into `base` (in place) and returns it. With no task vector, `base` is the result. */
export function mergeTaskVectors(base: Float32Array, tvs: TaskVector[], opts: TaskArithmeticOptions): Float32Array {
  for (const tv of tvs) {
    if (tv.data.length !== base.length) throw new Error(`task arithmetic: a tensor of ${tv.data.length} entries cannot be merged into a base of ${base.length}`);
    const x = tv.data;
    for (let i = 0; i < x.length; i++) x[i] -= base[i];
    sparsify(tv, opts);
  }
  if (tvs.length === 0) return base;
  const deltas = tvs.map((tv) => tv.data);
  const w = Float64Array.from(tvs, (tv) => tv.weight);
  if (opts.consensus) mergeWithConsensus(base, deltas, w, opts);
  else mergeSum(base, deltas, w, opts);
  return base;
}
