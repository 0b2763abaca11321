/**
 * Element-wise task-tensor merging as PEFT's merge_utils does it: magnitude pruning, DARE
 * (random drop + rescale), TIES (trim, elect sign, disjoint merge) and the weighted sum. Beside
 * them, mergekit's breadcrumbs and della sparsifiers, from src/merge's own implementation, each
 * followed by PEFT's weighted sum or TIES election + disjoint merge (neither library offers these
 * for adapters).
 *
 * Arithmetic is f32 like PEFT's (every intermediate is stored in a Float32Array or passed through
 * Math.fround; an f32 product or sum rounded from the exact double result is the IEEE f32 result),
 * and the weights are rounded to f32 first, as torch.tensor(weights) does.
 */
import { createRng, fnv1a32, type Rng } from '../linalg/random.js';
import { sparsifyOutliers } from '../sparsify/breadcrumbs.js';
import { sparsifyDella } from '../sparsify/della.js';
import { bitsOf, kthLargestMagnitude } from '../tensor/top-k.js';
import type { ElementwiseStep, MajoritySign, MaskSource, MaskTarget } from './types.js';

/** Calls keep(i) for the k entries of largest |t[i]| and drop(i) for the others, in index order. */
function selectTopK(t: Float32Array, k: number, keep: (i: number) => void, drop: (i: number) => void): void {
  const n = t.length;
  if (k <= 0 || k >= n) {
    for (let i = 0; i < n; i++) (k <= 0 ? drop : keep)(i);
    return;
  }
  const bits = bitsOf(t);
  const { threshold, above } = kthLargestMagnitude(bits, k);
  // torch.topk leaves the order among equal values unspecified; index order is ours
  let ties = k - above;
  for (let i = 0; i < n; i++) {
    const key = bits[i] & 0x7fffffff;
    if (key > threshold || (key === threshold && ties-- > 0)) keep(i);
    else drop(i);
  }
}

/** Keep (1) / drop (0) mask of the k entries of largest |value|, ties at the cut in index order. */
export function topKMask(t: Float32Array, k: number): Uint8Array {
  const mask = new Uint8Array(t.length);
  selectTopK(t, k, (i) => (mask[i] = 1), () => {});
  return mask;
}

/** PEFT's magnitude pruning: keep the floor(density·n) largest |entries|, zero the rest (in place). */
export function magnitudePruneInPlace(t: Float32Array, density: number): Float32Array {
  if (density >= 1) return t; // PEFT: nothing is pruned
  selectTopK(t, Math.floor(density * t.length), () => {}, (i) => (t[i] = 0));
  return t;
}

/** DARE: drop the entries the mask marks 0 and divide the survivors by density (in place). */
export function dareInPlace(t: Float32Array, mask: Uint8Array, density: number): Float32Array {
  if (density >= 1) return t; // PEFT: nothing is dropped or rescaled
  if (mask.length !== t.length) {
    throw new Error(`merge-adapters/prune.ts: DARE mask has ${mask.length} entries for a tensor of ${t.length}`);
  }
  const d = Math.fround(density);
  for (let i = 0; i < t.length; i++) t[i] = mask[i] ? t[i] / d : 0;
  return t;
}

/**
 * TIES sign election per entry, on the (pruned, unweighted) task tensors: +1 or −1 from the sign of
 * Σ_i t_i ('total', summed in f32) or of Σ_i sign(t_i) ('frequency'); a tie (exactly 0) goes to +1
 * as in PEFT. Loops run tensor by tensor so each pass streams through memory.
 */
export function electSign(tensors: readonly Float32Array[], method: MajoritySign): Int8Array {
  const n = tensors[0].length;
  const acc = new Float32Array(n);
  for (const t of tensors) {
    if (method === 'total') for (let j = 0; j < n; j++) acc[j] += t[j];
    else for (let j = 0; j < n; j++) acc[j] += t[j] > 0 ? 1 : t[j] < 0 ? -1 : 0;
  }
  const sign = new Int8Array(n);
  for (let j = 0; j < n; j++) sign[j] = acc[j] >= 0 ? 1 : -1;
  return sign;
}

/**
 * TIES disjoint merge: per entry, the mean of w_i·t_i over the tensors whose sign agrees with the
 * elected one (zeros agree with neither sign); 0 where none agrees. Sums are f32, in tensor order.
 */
export function disjointMerge(tensors: readonly Float32Array[], weights: readonly number[], sign: Int8Array): Float32Array {
  const n = tensors[0].length;
  const sum = new Float32Array(n);
  const count = new Uint16Array(n);
  tensors.forEach((t, i) => {
    const w = Math.fround(weights[i]);
    for (let j = 0; j < n; j++) {
      const x = t[j];
      if ((x > 0 && sign[j] > 0) || (x < 0 && sign[j] < 0)) {
        sum[j] += Math.fround(x * w);
        count[j]++;
      }
    }
  });
  for (let j = 0; j < n; j++) if (count[j] > 1) sum[j] /= count[j];
  return sum;
}

/** Σ_i w_i·t_i in f32. */
export function weightedSum(tensors: readonly Float32Array[], weights: readonly number[]): Float32Array {
  const n = tensors[0].length;
  const out = new Float32Array(n);
  tensors.forEach((t, i) => {
    const w = Math.fround(weights[i]);
    for (let j = 0; j < n; j++) out[j] += Math.fround(t[j] * w);
  });
  return out;
}

export interface CombineOptions {
  density: number;
  majoritySign: MajoritySign;
  /** DARE keep-mask for the i-th tensor */
  mask: (i: number) => Uint8Array;
  /** breadcrumbs*: fraction of largest |entries| dropped */
  gamma?: number;
  /** della*: half-width of the keep probabilities */
  epsilon?: number;
  /** della*: the tensors' shape (it ranks along dim 1) and the i-th tensor's stream */
  shape?: readonly number[];
  rng?: (i: number) => Rng;
}

/** A breadcrumbs / della setting the caller must supply (the method table declares it). */
function required<T>(value: T | undefined, name: string, step: ElementwiseStep): T {
  if (value === undefined) throw new Error(`merge-adapters/prune.ts: ${step} needs ${name}`);
  return value;
}

/**
 * mergekit's breadcrumbs (magnitude_outliers, no rescale) or della (della_magprune, rescaled to
 * the L1 norm), its defaults for `rescale`, in place on every tensor.
 */
function sparsifyAll(step: 'breadcrumbs' | 'breadcrumbs_ties' | 'della' | 'della_linear', tensors: Float32Array[], opts: CombineOptions): Float32Array[] {
  if (step === 'breadcrumbs' || step === 'breadcrumbs_ties') {
    const gamma = required(opts.gamma, 'gamma', step);
    for (const t of tensors) sparsifyOutliers(t, opts.density, gamma, false);
    return tensors;
  }
  const epsilon = required(opts.epsilon, 'epsilon', step);
  const shape = required(opts.shape, 'a shape', step);
  const rng = required(opts.rng, 'an RNG', step);
  const probs = new Float32Array(tensors[0].length);
  tensors.forEach((t, i) => sparsifyDella(t, shape, opts.density, epsilon, true, rng(i), probs));
  return tensors;
}

/**
 * PEFT's task_arithmetic / magnitude_prune / ties / dare_linear / dare_ties, and breadcrumbs /
 * della sparsification + weighted sum (breadcrumbs, della_linear) or + PEFT's TIES election and
 * disjoint merge (breadcrumbs_ties, della), over equally shaped task tensors. The tensors are pruned in place: pass copies of anything still needed.
 */
export function combineTaskTensors(
  step: ElementwiseStep,
  tensors: Float32Array[],
  weights: readonly number[],
  opts: CombineOptions,
): Float32Array {
  if (tensors.length === 0) throw new Error('merge-adapters/prune.ts: no task tensors to combine');
  if (tensors.some((t) => t.length !== tensors[0].length)) {
    throw new Error('merge-adapters/prune.ts: task tensors differ in size; every adapter must have the same shape here');
  }
  switch (step) {
    case 'sum':
      return weightedSum(tensors, weights);
    case 'magnitude_prune':
      return weightedSum(tensors.map((t) => magnitudePruneInPlace(t, opts.density)), weights);
    case 'dare_linear':
      return weightedSum(tensors.map((t, i) => dareInPlace(t, opts.mask(i), opts.density)), weights);
    case 'ties': {
      const pruned = tensors.map((t) => magnitudePruneInPlace(t, opts.density));
      return disjointMerge(pruned, weights, electSign(pruned, opts.majoritySign));
    }
    case 'dare_ties': {
      const dropped = tensors.map((t, i) => dareInPlace(t, opts.mask(i), opts.density));
      return disjointMerge(dropped, weights, electSign(dropped, opts.majoritySign));
    }
    case 'breadcrumbs':
    case 'della_linear':
      return weightedSum(sparsifyAll(step, tensors, opts), weights);
    case 'breadcrumbs_ties':
    case 'della': {
      const sparse = sparsifyAll(step, tensors, opts);
      return disjointMerge(sparse, weights, electSign(sparse, opts.majoritySign));
    }
  }
}

/**
 * The seeded stream of one adapter's tensor in one module, seeded with
 * fnv1a32(`${seed}/${module}/${target}/${adapter}`), so its draws do not depend on which other
 * modules are merged or in what order. DARE's masks and della's keep draws come from it.
 */
export function maskStream(seed: number, module: string, target: MaskTarget, adapter: number): Rng {
  return createRng(fnv1a32(`${seed}/${module}/${target}/${adapter}`));
}

/** DARE masks from loraforge's seeded RNG (maskStream): entry i is kept when next() < density. */
export function seededMaskSource(seed: number, density: number): MaskSource {
  return ({ module, target, adapter, size }) => {
    const keep = new Int32Array(size);
    maskStream(seed, module, target, adapter).fillKeepMask(keep, density);
    return Uint8Array.from(keep, (k) => k & 1);
  };
}
