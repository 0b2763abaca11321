/**
 * What a row of logits says: the negative log-likelihood of a target, and how far one
 * distribution is from another. Log-sum-exp and every sum are taken in f64 over the whole
 * vocabulary (the tinyfam references do the same in PyTorch float64), in WebAssembly SIMD where
 * the runtime has it (softmax-simd.ts), else in the JS loops here.
 */
import { softmaxKernels } from './softmax-simd.js';

export interface ScoreOptions {
  /** false: the JS loops even where WebAssembly SIMD runs (tests compare the two) */
  simd?: boolean;
}

/** log Σ exp(row) in f64. */
export function logSumExp(row: Float32Array, opts: ScoreOptions = {}): number {
  const kernels = opts.simd === false ? undefined : softmaxKernels();
  if (kernels) return kernels.logSumExp(row);
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  return max + Math.log(sum);
}

/** Index of the largest logit; the lowest index wins an exact tie (torch.argmax). */
export function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Largest minus second-largest logit. */
export function topMargin(row: Float32Array): number {
  let a = -Infinity;
  let b = -Infinity;
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    if (v > a) {
      b = a;
      a = v;
    } else if (v > b) b = v;
  }
  return a - b;
}

/**
 * KL(P‖Q) = Σ_v P(v)(log P(v) − log Q(v)) of the distributions of logits p and q, given their
 * log-sum-exps. With `topK`, the sum runs over P's K most likely tokens plus one bucket holding
 * the rest of both distributions' mass: a lower bound of the exact value (merging outcomes never
 * increases a KL divergence) that is exact when the rest is the same share on both sides.
 */
export function klDivergence(p: Float32Array, lseP: number, q: Float32Array, lseQ: number, topK?: number, opts: ScoreOptions = {}): number {
  if (topK === undefined || topK >= p.length) {
    const kernels = opts.simd === false ? undefined : softmaxKernels();
    if (kernels) return Math.max(0, kernels.klSum(p, lseP, q, lseQ));
    let kl = 0;
    for (let i = 0; i < p.length; i++) {
      const lp = p[i]! - lseP;
      kl += Math.exp(lp) * (lp - (q[i]! - lseQ));
    }
    return Math.max(0, kl);
  }
  const top = topIndices(p, topK);
  let kl = 0;
  let massP = 0;
  let massQ = 0;
  for (const i of top) {
    const lp = p[i]! - lseP;
    const lq = q[i]! - lseQ;
    const pp = Math.exp(lp);
    massP += pp;
    massQ += Math.exp(lq);
    kl += pp * (lp - lq);
  }
  const restP = Math.max(0, 1 - massP);
  const restQ = Math.max(1e-300, 1 - massQ);
  if (restP > 0) kl += restP * Math.log(restP / restQ);
  return Math.max(0, kl);
}

/** Indices of the k largest values (unordered; ties at the threshold taken by index order). */
function topIndices(row: Float32Array, k: number): number[] {
  const threshold = kthLargest(Float32Array.from(row), k);
  const above: number[] = [];
  const at: number[] = [];
  for (let i = 0; i < row.length; i++) {
    if (row[i]! > threshold) above.push(i);
    else if (row[i] === threshold) at.push(i);
  }
  return above.concat(at.slice(0, k - above.length));
}

/** The k-th largest value of `a` (reorders `a`): quickselect, O(n) on average. */
function kthLargest(a: Float32Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  const want = k - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (want <= j) hi = j;
    else if (want >= i) lo = i;
    else break;
  }
  return a[want]!;
}
