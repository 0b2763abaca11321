/**
 * mergekit's "generalized task arithmetic" (merge_methods/generalized_task_arithmetic.py), behind
 * task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, della and della_linear:
 *
 *   δ_i = x_i − base                          task vectors
 *   δ_i ← sparsify(δ_i, density_i)            ties: magnitude trim; dare_*: random drop;
 *                                             breadcrumbs*: outliers and smallest dropped; della*: ranked random drop
 *   d_i = w_i · δ_i                           weighted
 *   consensus (ties, dare_ties): per entry, the majority sign is that of Σ_i d_i (≥ 0 counts as +);
 *     only entries whose sign equals it (zeros never do) enter the sum and the divisor:
 *     mixed = Σ_{agree} d_i,  divisor = Σ_{agree} w_i  (0 → 1)
 *   no consensus: mixed = Σ_i d_i,  divisor = Σ_i w_i  (|·| < 1e-8 → 1)
 *   normalize: mixed /= divisor;  then mixed *= λ;  result = base + mixed
 *
 * Speed: every loop is one simple pass over typed arrays (a loop over models inside the loop over
 * entries runs several times slower in V8), entries are kept or dropped with integer masks rather
 * than branches (signs are random, so branches mispredict half the time), and entries below the
 * TIES threshold are masked while summing instead of being zeroed in a pass of their own.
 */
import type { Rng } from '../linalg/random.js';
import { sparsifyOutliers } from '../sparsify/breadcrumbs.js';
import { sparsifyDella } from '../sparsify/della.js';
import { keepAll, keptBy, magnitudeKeepCount, selectTopK, sparsifyMagnitude, sparsifyRandom, subtract, type TopK } from '../sparsify/sparsify.js';

export interface TaskVector {
  /** the model's tensor; overwritten with its (sparsified) task vector */
  data: Float32Array;
  weight: number;
  density: number;
  /** breadcrumbs: fraction of largest entries dropped */
  gamma?: number;
  /** della: half-width of the keep probabilities around density */
  epsilon?: number;
  /** the seeded stream for its DARE / della mask */
  rng?: () => Rng;
}

export interface TaskArithmeticOptions {
  /** mergekit's sparsification_method */
  sparsification: 'magnitude' | 'random' | 'magnitude_outliers' | 'della_magprune' | undefined;
  /** the tensor's shape (della ranks along dim 1) */
  shape: readonly number[];
  /** TIES sign election by the sign of the sum */
  consensus: boolean;
  normalize: boolean;
  lambda: number;
  rescale: boolean;
}

/** mergekit: a divisor this close to 0 (weights summing to ~0 without consensus) is replaced by 1. */
const MIN_DIVISOR = 1e-8;

/**
 * x ← sparsify(x − base). Returns which entries count: a TIES trim is left as a rule for the
 * summing passes to apply (saving a pass over memory); otherwise x is final and all entries count.
 */
function taskVector(base: Float32Array, tv: TaskVector, opts: TaskArithmeticOptions, scratch: () => Float32Array): TopK {
  const x = tv.data;
  if (opts.sparsification === 'magnitude' && tv.density < 1) {
    const k = magnitudeKeepCount(tv.density, x.length);
    if (k <= 0) throw new Error(`density ${tv.density} keeps no entry of a ${x.length}-entry tensor (use a density ≥ ${1 / x.length})`);
    if (!opts.rescale) return selectTopK(x, k, base);
    subtract(x, base);
    sparsifyMagnitude(x, tv.density, true);
    return keepAll(x.length);
  }
  subtract(x, base);
  const random = opts.sparsification === 'random' || opts.sparsification === 'della_magprune';
  if (random && !tv.rng) throw new Error('task arithmetic: a random sparsification needs an RNG for every task vector');
  if (opts.sparsification === 'random') sparsifyRandom(x, tv.density, opts.rescale, (tv.rng as () => Rng)());
  if (opts.sparsification === 'magnitude_outliers') sparsifyOutliers(x, tv.density, tv.gamma as number, opts.rescale);
  if (opts.sparsification === 'della_magprune') sparsifyDella(x, opts.shape, tv.density, tv.epsilon as number, opts.rescale, (tv.rng as () => Rng)(), scratch());
  return keepAll(x.length);
}

/**
 * Entries the summing passes take at a time: their working arrays (sum, mixed, divisor) are this
 * small whatever the tensor's size, so a merge holds only its inputs, and they stay in cache
 * between passes. Every entry is computed as it would be in one pass, so results are the same bit
 * for bit.
 */
const CHUNK_ENTRIES = 1 << 14;

/** acc[i − off] (+)= c·x[i] for i in [from, to), over the entries `keep` keeps (`assign`: = instead of +=). */
function accumulateKept(acc: Float32Array, off: number, x: Float32Array, from: number, to: number, keep: TopK, c: number, assign: boolean): void {
  const bits = new Int32Array(x.buffer, x.byteOffset, x.length);
  const { threshold, lastTie } = keep;
  if (assign) for (let i = from; i < to; i++) acc[i - off] = keptBy(bits[i] & 0x7fffffff, i, threshold, lastTie) * x[i] * c;
  else for (let i = from; i < to; i++) acc[i - off] += keptBy(bits[i] & 0x7fffffff, i, threshold, lastTie) * x[i] * c;
}

/**
 * mixed[i − from] += w·x[i] and divisor[i − from] += w, for i in [from, to), where the kept entry
 * x[i] is non-zero and w·x[i] has the sign of sum[i − from] (compared on sign bits: w < 0 flips the
 * entry's sign).
 */
function accumulateAgreeing(mixed: Float32Array, divisor: Float32Array, sum: Float32Array, x: Float32Array, from: number, to: number, keep: TopK, w: number): void {
  const bits = new Int32Array(x.buffer, x.byteOffset, x.length);
  const sumBits = new Int32Array(sum.buffer, sum.byteOffset, sum.length);
  const flip = w < 0 ? -0x80000000 : 0;
  const { threshold, lastTie } = keep;
  for (let i = from; i < to; i++) {
    const b = bits[i];
    const a = b & 0x7fffffff;
    const k = i - from;
    // same sign: the top bit of b ^ sum ^ flip is clear; non-zero: −a < 0
    const agree = keptBy(a, i, threshold, lastTie) & (((b ^ sumBits[k] ^ flip) >>> 31) ^ 1) & (-a >>> 31);
    mixed[k] += agree * w * x[i];
    divisor[k] += agree * w;
  }
}

function mergeWithConsensus(base: Float32Array, deltas: Float32Array[], keep: TopK[], w: number[], opts: TaskArithmeticOptions): void {
  const n = base.length;
  if (deltas.length === 1) {
    // one task vector always agrees with its own sign: mixed = w·δ over non-zero entries, divisor w
    if (w[0] !== 0) accumulateKept(base, 0, deltas[0], 0, n, keep[0], (opts.normalize ? 1 : w[0]) * opts.lambda, false);
    return;
  }
  const size = Math.min(n, CHUNK_ENTRIES);
  const [sum, mixed, divisor] = [0, 1, 2].map(() => new Float32Array(size));
  const { lambda } = opts;
  for (let from = 0; from < n; from += CHUNK_ENTRIES) {
    const to = Math.min(n, from + CHUNK_ENTRIES);
    deltas.forEach((d, j) => accumulateKept(sum, from, d, from, to, keep[j], w[j], j === 0));
    mixed.fill(0);
    divisor.fill(0);
    deltas.forEach((d, j) => accumulateAgreeing(mixed, divisor, sum, d, from, to, keep[j], w[j]));
    if (opts.normalize) for (let i = from; i < to; i++) base[i] += (mixed[i - from] / (divisor[i - from] === 0 ? 1 : divisor[i - from])) * lambda;
    else for (let i = from; i < to; i++) base[i] += mixed[i - from] * lambda;
  }
}

function mergeSum(base: Float32Array, deltas: Float32Array[], keep: TopK[], w: number[], opts: TaskArithmeticOptions): void {
  const n = base.length;
  const total = w.reduce((s, x) => s + x, 0);
  const scale = (opts.normalize ? 1 / (Math.abs(total) < MIN_DIVISOR ? 1 : total) : 1) * opts.lambda;
  if (deltas.length === 1) {
    accumulateKept(base, 0, deltas[0], 0, n, keep[0], w[0] * scale, false);
    return;
  }
  const mixed = new Float32Array(Math.min(n, CHUNK_ENTRIES));
  for (let from = 0; from < n; from += CHUNK_ENTRIES) {
    const to = Math.min(n, from + CHUNK_ENTRIES);
    deltas.forEach((d, j) => accumulateKept(mixed, from, d, from, to, keep[j], w[j], j === 0));
    for (let i = from; i < to; i++) base[i] += mixed[i - from] * scale;
  }
}

/**
 * Merges the task vectors into `base` (in place) and returns it; with no task vector, `base` is
 * the result. `scratch` supplies della's one working array of base.length entries (contents undefined);
 * the summing passes work chunk by chunk in small arrays of their own (CHUNK_ENTRIES).
 */
export function mergeTaskVectors(
  base: Float32Array,
  tvs: TaskVector[],
  opts: TaskArithmeticOptions,
  scratch: () => Float32Array = () => new Float32Array(base.length),
): Float32Array {
  for (const tv of tvs) {
    if (tv.data.length !== base.length) throw new Error(`task arithmetic: a tensor of ${tv.data.length} entries cannot be merged into a base of ${base.length}`);
  }
  if (tvs.length === 0) return base;
  // della's probabilities need one working array, the same for every task vector
  let probs: Float32Array | undefined;
  const lend = () => (probs ??= scratch());
  const keep = tvs.map((tv) => taskVector(base, tv, opts, lend));
  const deltas = tvs.map((tv) => tv.data);
  const w = tvs.map((tv) => tv.weight);
  if (opts.consensus) mergeWithConsensus(base, deltas, keep, w, opts);
  else mergeSum(base, deltas, keep, w, opts);
  return base;
}
