/**
 * The vocabulary of merge-adapters, shared by the per-module methods and the orchestration.
 *
 * Every factor here is in PEFT's own orientation (delta = scaling · B·A with B = lora_B, A = lora_A):
 * for linear layers that is the base weight's orientation, for embeddings it is its transpose.
 * PEFT's merge code works on lora_A / lora_B as stored, so which factor carries a sign or the
 * singular values follows the stored tensors; merge.ts swaps embedding factors in and out.
 */
import type { LinalgBackend } from '../linalg/backend.js';
import type { LowRank } from '../lowrank/low-rank.js';
import type { LoraKind } from '../lora/adapter.js';

export type { LowRank };

/** One source adapter's contribution to one module: A is PEFT's lora_A, B its lora_B. */
export interface MergeTerm extends LowRank {
  /** position of the adapter on the command line (DARE masks and reports are keyed by it) */
  adapter: number;
  /** the adapter's own scaling for this module: alpha / r, or alpha / √r with rsLoRA */
  scaling: number;
  /** the user's weight for this adapter */
  weight: number;
}

/**
 * The element-wise operation applied to the task tensors before they are summed: PEFT's, and
 * mergekit's breadcrumbs and della sparsifiers (with a TIES sign election in breadcrumbs_ties
 * and della, as in mergekit).
 */
export type ElementwiseStep =
  | 'sum'
  | 'ties'
  | 'dare_linear'
  | 'dare_ties'
  | 'magnitude_prune'
  | 'breadcrumbs'
  | 'breadcrumbs_ties'
  | 'della'
  | 'della_linear';

/** TIES sign election: sign of the sum of the entries, or of the count of their signs. */
export type MajoritySign = 'total' | 'frequency';
export const MAJORITY_SIGNS: readonly MajoritySign[] = ['total', 'frequency'];

/** Which tensor a DARE mask is drawn for. */
export type MaskTarget = 'A' | 'B' | 'delta';

export interface MaskRequest {
  module: string;
  target: MaskTarget;
  /** the adapter's position on the command line */
  adapter: number;
  /** number of entries (row-major, in PEFT's orientation) */
  size: number;
}

/**
 * Where DARE's keep/drop decisions come from: 1 keeps an entry, 0 drops it. The default draws them
 * from a seeded RNG; tests replay the masks PEFT drew.
 */
export type MaskSource = (req: MaskRequest) => Uint8Array;

/** Everything a method needs to merge one module. */
export interface ModuleMergeContext {
  backend: LinalgBackend;
  module: string;
  /** the adapters that have this module, in command-line order */
  terms: MergeTerm[];
  /** fraction of entries kept by pruning / DARE, in (0, 1] */
  density: number;
  majoritySign: MajoritySign;
  /** output rank of the SVD-based paths; Infinity keeps everything the merged delta has */
  rank: number;
  /** clamp the SVD factors at this quantile of their entries (PEFT's svd_clamp) */
  svdClamp?: number;
  /** merge the true deltas (w_i · s_i·B_i·A_i) instead of PEFT's formulas */
  exact: boolean;
  masks: MaskSource;
  /** breadcrumbs_*: fraction of largest |entries| dropped as outliers (mergekit's gamma) */
  gamma?: number;
  /** della_*: half-width of the keep probabilities around density (mergekit's epsilon) */
  epsilon?: number;
  /** della_*: seed of the keep draws (default 0), streamed per module and adapter like DARE's masks */
  seed?: number;
  /** della_* ranks each row of the base weight: a linear delta's rows, an embedding delta's columns (default linear) */
  kind?: LoraKind;
}
