/**
 * Element-wise task-tensor merging as PEFT's merge_utils does it: magnitude pruning, DARE
 * (random drop + rescale), TIES (trim, elect sign, disjoint merge) and the weighted sum.
 *
 * Arithmetic is f32 like PEFT's (every intermediate is stored in a Float32Array or passed through
 * Math.fround; an f32 product or sum rounded from the exact double result is the IEEE f32 result),
 * and the weights are rounded to f32 first, as torch.tensor(weights) does.
 */
import { createRng } from '../linalg/random.js';
import type { ElementwiseStep, MajoritySign, MaskSource } from './types.js';

/**
 * Keep/drop mask of the k entries of largest |value|. Selection is a two-pass radix select on the
 * bits of |x| (for non-negative floats the bit pattern orders like the value), O(n) instead of a
 * sort: deltas of 7B-sized layers have 45M entries. Entries equal to the k-th largest are taken in
 * index order (torch.topk leaves that order unspecified).
 */
export function topKMask(t: Float32Array, k: number): Uint8Array {
  const n = t.length;
  const mask = new Uint8Array(n);
  if (k <= 0) return mask;
  if (k >= n) return mask.fill(1);
  const bits = new Uint32Array(t.buffer, t.byteOffset, n);
  const high = new Uint32Array(1 << 15); // |x| has the sign bit clear: 15 high bits remain
  for (let i = 0; i < n; i++) high[(bits[i] & 0x7fffffff) >>> 16]++;
  let bucket = high.length - 1;
  let above = 0;
  while (above + high[bucket] < k) above += high[bucket--];
  const low = new Uint32Array(1 << 16);
  for (let i = 0; i < n; i++) {
    const key = bits[i] & 0x7fffffff;
    if (key >>> 16 === bucket) low[key & 0xffff]++;
  }
  let cut = low.length - 1;
  while (above + low[cut] < k) above += low[cut--];
  const threshold = ((bucket << 16) | cut) >>> 0;
  let ties = k - above; // entries equal to the threshold still to keep
  for (let i = 0; i < n; i++) {
    const key = bits[i] & 0x7fffffff;
    if (key > threshold) mask[i] = 1;
    else if (key === threshold && ties > 0) {
      mask[i] = 1;
      ties--;
    }
  }
  return mask;
}

/** PEFT's magnitude pruning: keep the floor(density·n) largest |entries|, zero the rest (in place). */
export function magnitudePruneInPlace(t: Float32Array, density: number): Float32Array {
  if (density >= 1) return t; // PEFT: nothing is pruned
  const mask = topKMask(t, Math.floor(density * t.length));
  for (let i = 0; i < t.length; i++) if (!mask[i]) t[i] = 0;
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
 * Σ_i t_i ('total') or of Σ_i sign(t_i) ('frequency'); a tie (exactly 0) goes to +1 as in PEFT.
 */
export function electSign(tensors: readonly Float32Array[], method: MajoritySign): Int8Array {
  const n = tensors[0].length;
  const sign = new Int8Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (const t of tensors) s = method === 'total' ? Math.fround(s + t[j]) : s + Math.sign(t[j]);
    sign[j] = s >= 0 ? 1 : -1;
  }
  return sign;
}

/**
 * TIES disjoint merge: per entry, the mean of w_i·t_i over the tensors whose sign agrees with the
 * elected one (zeros agree with neither sign); 0 where none agrees.
 */
export function disjointMerge(tensors: readonly Float32Array[], weights: readonly number[], sign: Int8Array): Float32Array {
  const n = tensors[0].length;
  const w = weights.map(Math.fround);
  const out = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    let sum = 0;
    let count = 0;
    for (let i = 0; i < tensors.length; i++) {
      const x = tensors[i][j];
      if (Math.sign(x) === sign[j]) {
        sum = Math.fround(sum + Math.fround(x * w[i]));
        count++;
      }
    }
    out[j] = sum / Math.max(count, 1);
  }
  return out;
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
}

/**
 * PEFT's task_arithmetic / magnitude_prune / ties / dare_linear / dare_ties over equally shaped
 * task tensors. The tensors are pruned in place: pass copies of anything still needed.
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
  }
}

/** FNV-1a, 32 bits: a fixed, documented way to turn a mask's identity into an RNG seed. */
function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * DARE masks from loraforge's seeded RNG: entry i is kept when next() < density. Each mask has its
 * own stream, seeded with fnv1a32(`${seed}/${module}/${target}/${adapter}`), so a mask does not
 * depend on which other modules are merged or in what order.
 */
export function seededMaskSource(seed: number, density: number): MaskSource {
  return ({ module, target, adapter, size }) => {
    const rng = createRng(fnv1a32(`${seed}/${module}/${target}/${adapter}`));
    const mask = new Uint8Array(size);
    for (let i = 0; i < size; i++) mask[i] = rng.next() < density ? 1 : 0;
    return mask;
  };
}
