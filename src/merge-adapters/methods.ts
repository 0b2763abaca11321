/**
 * The merge methods, one table: what each is called, which flags it takes and how it merges one
 * module. --help, option checking, the docs and the dispatcher all read from here.
 */
import { catFactors, mergeFactorsSeparately } from './combine-factors.js';
import { svdOfCombinedDeltas, svdOfWeightedSum, type SvdMerge } from './combine-svd.js';
import { dellaParamError } from '../sparsify/della.js';
import type { ElementwiseStep, LowRank, MajoritySign, ModuleMergeContext } from './types.js';

/** PEFT's examples use 0.5; ours, for every pruning method. */
export const DEFAULT_DENSITY = 0.5;
/** mergekit's defaults for breadcrumbs' gamma and della's epsilon. */
export const DEFAULT_GAMMA = 0.01;
export const DEFAULT_EPSILON = 0.15;

export const METHOD_NAMES = [
  'cat',
  'linear',
  'svd',
  'ties',
  'ties_svd',
  'dare_linear',
  'dare_ties',
  'dare_linear_svd',
  'dare_ties_svd',
  'magnitude_prune',
  'magnitude_prune_svd',
  'breadcrumbs_svd',
  'breadcrumbs_ties_svd',
  'della_svd',
  'della_linear_svd',
] as const;
export type MethodName = (typeof METHOD_NAMES)[number];

/** Options a method may take besides the adapters and their weights. */
export type MethodParam = 'density' | 'majoritySign' | 'gamma' | 'epsilon' | 'svdRank' | 'svdClamp' | 'seed';

/**
 * - cat: stacks the factors (exact, rank Σ r_i)
 * - factors: PEFT merges lora_A and lora_B separately (cross terms; needs equal ranks)
 * - svd: combines the deltas and re-factorises with a truncated SVD
 */
export type MethodFamily = 'cat' | 'factors' | 'svd';

export interface MergeMethod {
  name: MethodName;
  family: MethodFamily;
  step: ElementwiseStep;
  params: readonly MethodParam[];
  summary: string;
}

const PRUNE_PARAMS: Record<ElementwiseStep, MethodParam[]> = {
  sum: [],
  magnitude_prune: ['density'],
  ties: ['density', 'majoritySign'],
  dare_linear: ['density', 'seed'],
  dare_ties: ['density', 'majoritySign', 'seed'],
  breadcrumbs: ['density', 'gamma'],
  breadcrumbs_ties: ['density', 'gamma', 'majoritySign'],
  della: ['density', 'epsilon', 'majoritySign', 'seed'],
  della_linear: ['density', 'epsilon', 'seed'],
};
const SVD_PARAMS: MethodParam[] = ['svdRank', 'svdClamp'];

function method(name: MethodName, family: MethodFamily, step: ElementwiseStep, summary: string): MergeMethod {
  const params = [...PRUNE_PARAMS[step], ...(family === 'svd' ? SVD_PARAMS : [])];
  return { name, family, step, params, summary };
}

export const MERGE_METHODS: Readonly<Record<MethodName, MergeMethod>> = {
  cat: method('cat', 'cat', 'sum', 'stack the factors: exact, output rank = sum of the input ranks'),
  linear: method('linear', 'factors', 'sum', 'weighted sum of lora_A and of lora_B separately (PEFT; cross terms, equal ranks)'),
  svd: method('svd', 'svd', 'sum', 'weighted sum of the deltas, truncated SVD to --svd-rank'),
  ties: method('ties', 'factors', 'ties', 'TIES (trim, elect sign, disjoint mean) on lora_A and lora_B separately (PEFT; cross terms)'),
  ties_svd: method('ties_svd', 'svd', 'ties', 'TIES on the deltas, truncated SVD'),
  dare_linear: method('dare_linear', 'factors', 'dare_linear', 'DARE drop + rescale, weighted sum, on lora_A and lora_B separately (PEFT; cross terms)'),
  dare_ties: method('dare_ties', 'factors', 'dare_ties', 'DARE drop + rescale, then TIES, on lora_A and lora_B separately (PEFT; cross terms)'),
  dare_linear_svd: method('dare_linear_svd', 'svd', 'dare_linear', 'DARE + weighted sum on the deltas, truncated SVD'),
  dare_ties_svd: method('dare_ties_svd', 'svd', 'dare_ties', 'DARE + TIES on the deltas, truncated SVD'),
  magnitude_prune: method('magnitude_prune', 'factors', 'magnitude_prune', 'magnitude pruning + weighted sum on lora_A and lora_B separately (PEFT; cross terms)'),
  magnitude_prune_svd: method('magnitude_prune_svd', 'svd', 'magnitude_prune', 'magnitude pruning + weighted sum on the deltas, truncated SVD'),
  // mergekit's sparsifiers on the deltas, named after mergekit's methods (della and breadcrumbs_ties
  // elect signs, della_linear and breadcrumbs sum) with PEFT's _svd suffix; neither library has them for adapters
  breadcrumbs_svd: method('breadcrumbs_svd', 'svd', 'breadcrumbs', 'breadcrumbs (drop the top --gamma and the smallest |entries|) + weighted sum on the deltas, truncated SVD'),
  breadcrumbs_ties_svd: method('breadcrumbs_ties_svd', 'svd', 'breadcrumbs_ties', 'breadcrumbs + TIES sign election on the deltas, truncated SVD'),
  della_svd: method('della_svd', 'svd', 'della', 'DELLA (magnitude-ranked random drop, L1 rescale) + TIES sign election on the deltas, truncated SVD'),
  della_linear_svd: method('della_linear_svd', 'svd', 'della_linear', 'DELLA + weighted sum on the deltas, truncated SVD'),
};

export function isMethodName(name: string): name is MethodName {
  return (METHOD_NAMES as readonly string[]).includes(name);
}

/** The flags a method accepts under the given mode: --exact turns the factor family into SVD merges. */
export function acceptedParams(m: MergeMethod, exact: boolean): MethodParam[] {
  if (exact && m.family === 'factors') return [...m.params, ...SVD_PARAMS];
  return [...m.params];
}

/**
 * Output rank of the SVD paths when --svd-rank is not given: linear --exact keeps everything (it is
 * meant to be lossless), every other SVD merge uses the largest input rank, as PEFT does.
 */
export function defaultSvdRank(m: MergeMethod, exact: boolean, maxInputRank: number): number {
  return exact && m.name === 'linear' ? Infinity : maxInputRank;
}

export interface MergedFactors extends LowRank {
  /** singular values kept, for the SVD paths */
  S?: Float64Array;
  clampHi?: number;
}

/** Merges one module with method `m` (already resolved: one adapter means linear, as in PEFT). */
export async function mergeModule(m: MergeMethod, ctx: ModuleMergeContext): Promise<MergedFactors> {
  if (m.family === 'cat') return catFactors(ctx);
  if (m.family === 'factors' && !ctx.exact) return mergeFactorsSeparately(ctx, m.step, m.name);
  const merged: SvdMerge = m.step === 'sum' ? await svdOfWeightedSum(ctx) : await svdOfCombinedDeltas(ctx, m.step);
  return merged;
}

export interface MethodOptions {
  density?: number;
  majoritySign?: MajoritySign;
  gamma?: number;
  epsilon?: number;
  svdRank?: number;
  svdClamp?: number;
  seed?: number;
  exact?: boolean;
}

const FLAG_OF: Record<MethodParam, string> = {
  density: '--density',
  majoritySign: '--majority-sign',
  gamma: '--gamma',
  epsilon: '--epsilon',
  svdRank: '--svd-rank',
  svdClamp: '--svd-clamp',
  seed: '--seed',
};

/**
 * The first problem with these options for this method, or undefined: a flag the method ignores
 * is refused rather than silently dropped, and values must be in range.
 */
export function checkMethodOptions(m: MergeMethod, opts: MethodOptions): string | undefined {
  const accepted = acceptedParams(m, opts.exact ?? false);
  for (const p of Object.keys(FLAG_OF) as MethodParam[]) {
    if (opts[p] !== undefined && !accepted.includes(p)) {
      const hint = m.family === 'factors' && SVD_PARAMS.includes(p) ? ' (it applies with --exact)' : '';
      return `${FLAG_OF[p]} has no effect with method ${m.name}${hint}`;
    }
  }
  if (opts.density !== undefined && !(opts.density > 0 && opts.density <= 1)) {
    return `--density must be in (0, 1] (the fraction of entries kept), got ${opts.density}`;
  }
  if (opts.gamma !== undefined && !(opts.gamma > 0 && opts.gamma < 1)) {
    return `--gamma must be in (0, 1) (the fraction of largest entries dropped), got ${opts.gamma}`;
  }
  if (opts.epsilon !== undefined && !(opts.epsilon >= 0 && opts.epsilon < 1)) {
    return `--epsilon must be in [0, 1) (the spread of della's keep probabilities), got ${opts.epsilon}`;
  }
  if (accepted.includes('epsilon')) {
    const problem = dellaParamError(opts.density ?? DEFAULT_DENSITY, opts.epsilon ?? DEFAULT_EPSILON);
    if (problem) return `${m.name}: ${problem}`;
  }
  if (opts.svdRank !== undefined && !(Number.isInteger(opts.svdRank) && opts.svdRank >= 1)) {
    return `--svd-rank must be an integer ≥ 1, got ${opts.svdRank}`;
  }
  if (opts.svdClamp !== undefined && !(opts.svdClamp > 0 && opts.svdClamp <= 1)) {
    return `--svd-clamp must be a quantile in (0, 1], got ${opts.svdClamp}`;
  }
  if (opts.seed !== undefined && !Number.isSafeInteger(opts.seed)) return `--seed must be an integer, got ${opts.seed}`;
  return undefined;
}
