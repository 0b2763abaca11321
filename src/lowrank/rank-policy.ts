/**
 * How many singular directions a low-rank factorisation keeps (extract, edit, convert): a fixed
 * rank, or the smallest rank that captures a fraction of ‖Δ‖²_F (--energy) or keeps the relative
 * Frobenius error under a bound (--max-rel-error). The two adaptive modes are one rule: keep r
 * such that the energy left out, Σ_{i>r} σ_i², is at most a fraction of ‖Δ‖²_F — 1 − energy, or
 * maxRelError². Without maxRank an adaptive policy is capped by the tensor's size only (convert
 * supplies its own cap per module).
 */

export type RankPolicy =
  | { mode: 'rank'; rank: number }
  | { mode: 'energy'; energy: number; maxRank?: number }
  | { mode: 'max-rel-error'; maxRelError: number; maxRank?: number };

export const DEFAULT_RANK = 16;
export const DEFAULT_MAX_RANK = 128;

/** One line for reports: `rank 16`, `energy ≥ 0.95 (max rank 128)`. */
export function describePolicy(p: RankPolicy): string {
  if (p.mode === 'rank') return `rank ${p.rank}`;
  const cap = p.maxRank === undefined ? '' : ` (max rank ${p.maxRank})`;
  return p.mode === 'energy' ? `energy ≥ ${p.energy}${cap}` : `relative error ≤ ${p.maxRelError}${cap}`;
}

/** The fraction of ‖Δ‖²_F an adaptive policy may leave out. */
export function residualFraction(p: Exclude<RankPolicy, { mode: 'rank' }>): number {
  return p.mode === 'energy' ? 1 - p.energy : p.maxRelError ** 2;
}

/** Throws when a policy's numbers are out of range (library callers get the same checks as the CLI). */
export function checkPolicy(p: RankPolicy): void {
  const positiveInt = (v: number, what: string) => {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${what} must be a positive integer, got ${v}`);
  };
  if (p.mode === 'rank') return positiveInt(p.rank, 'rank');
  if (p.maxRank !== undefined) positiveInt(p.maxRank, 'maxRank');
  if (p.mode === 'energy' && !(p.energy > 0 && p.energy <= 1)) throw new Error(`energy must be in (0, 1], got ${p.energy}`);
  if (p.mode === 'max-rel-error' && !(p.maxRelError >= 0 && p.maxRelError < 1)) {
    throw new Error(`maxRelError must be in [0, 1), got ${p.maxRelError}`);
  }
}

export interface RankChoice {
  rank: number;
  /** false when the cap (max rank, or the tensor's size) stopped short of the target */
  targetMet: boolean;
}

/**
 * The smallest rank r ≥ 1 whose relative error meets an adaptive policy, given the error of every
 * rank (`relErrors[r]` for r = 0…available), capped at `cap`.
 */
export function chooseAdaptiveRank(relErrors: readonly number[], fraction: number, cap: number): RankChoice {
  const bound = Math.sqrt(fraction);
  const last = Math.min(cap, relErrors.length - 1);
  for (let r = 1; r <= last; r++) {
    if (relErrors[r] <= bound) return { rank: r, targetMet: true };
  }
  return { rank: Math.max(1, last), targetMet: false };
}

/** What extract's refusal suggests; other commands name their own flags. */
const EXTRACT_WAYS_OUT = "Lower --rank, leave the tensor out with --exclude, or use --energy / --max-rel-error, which never exceed a tensor's size";

/**
 * Refuses a fixed rank a tensor cannot hold (more directions than its smaller dimension), naming
 * the tensor and the ways out (`waysOut`: the command's own flags).
 */
export function checkFixedRankFits(rank: number, tensor: string, rows: number, cols: number, shape: readonly number[], waysOut = EXTRACT_WAYS_OUT): void {
  const most = Math.min(rows, cols);
  if (rank <= most) return;
  throw new Error(`--rank ${rank} is more than tensor "${tensor}" (shape [${shape.join(', ')}]) can hold: at most ${most}. ${waysOut}`);
}
