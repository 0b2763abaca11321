/**
 * Which rows a stage blends and by how much, and the blend itself.
 *
 * A stage compares each shared token's mapped donor row with the base row (cosine). Rows at or
 * above `minTau` are candidates; the best `targetFrac` of them (or at most `targetRows`) are
 * blended, row ← (1 − α)·row + α·donor, with α rising along a logistic curve in the cosine from
 * `alphaFloor` (at minTau) to `alphaCap` (at the best cosine chosen), centred between them: the
 * more the donor agrees with the base about a token, the more of it is taken.
 *
 * Donor rows are first given the norm of the base row they replace, so a blend changes
 * directions, not scales. Rows the base never trained (see untrained.ts) have no meaningful
 * direction to compare with; they follow their own rule: `skip` (left as they are), `donor`
 * (replaced by the donor row, scaled to the base's typical trained norm), or `blend` (treated like
 * any other row).
 */
import { matrix, type Matrix } from '../tensor/matrix.js';

export interface StageParams {
  /** share of the candidate rows blended (embeddings) */
  targetFrac?: number;
  /** at most this many rows blended (lm_head) */
  targetRows?: number;
  alphaCap: number;
  alphaFloor: number;
  minTau: number;
}

export type UntrainedRule = 'skip' | 'donor' | 'blend';

export interface BlendRow {
  /** index into the shared pairs */
  pair: number;
  cos: number;
  alpha: number;
  untrained: boolean;
}

export interface StagePlan {
  rows: BlendRow[];
  candidates: number;
  untrainedReplaced: number;
}

export function rowNorm(data: Float32Array, row: number, width: number): number {
  let s = 0;
  for (let j = 0; j < width; j++) s += data[row * width + j]! ** 2;
  return Math.sqrt(s);
}

/**
 * Cosine of each pair's base row (a row of `table`, id baseIds[i]) with its mapped donor row (row i
 * of mapped), both centred on the base mean `mu`: the mean is shared by construction and would
 * otherwise make every pair look alike.
 */
export function pairCosines(table: Float32Array, width: number, baseIds: readonly number[], mapped: Matrix, mu: Float64Array): Float64Array {
  const cos = new Float64Array(baseIds.length);
  for (let i = 0; i < baseIds.length; i++) {
    const b = baseIds[i]! * width;
    let dot = 0;
    let nb = 0;
    let nm = 0;
    for (let j = 0; j < width; j++) {
      const x = table[b + j]! - mu[j]!;
      const y = mapped.data[i * width + j]! - mu[j]!;
      dot += x * y;
      nb += x * x;
      nm += y * y;
    }
    cos[i] = nb > 0 && nm > 0 ? dot / Math.sqrt(nb * nm) : 0;
  }
  return cos;
}

export function planStage(cos: Float64Array, untrained: Uint8Array, p: StageParams, rule: UntrainedRule): StagePlan {
  const candidates: number[] = [];
  const rows: BlendRow[] = [];
  let untrainedReplaced = 0;
  for (let i = 0; i < cos.length; i++) {
    if (untrained[i] && rule !== 'blend') {
      if (rule === 'donor') {
        rows.push({ pair: i, cos: cos[i]!, alpha: 1, untrained: true });
        untrainedReplaced++;
      }
      continue;
    }
    if (cos[i]! >= p.minTau) candidates.push(i);
  }
  // best cosine first; the lower index first on ties, so a plan never depends on sort stability
  candidates.sort((a, b) => cos[b]! - cos[a]! || a - b);
  let keep = candidates.length;
  if (p.targetFrac !== undefined) keep = Math.min(keep, Math.ceil(p.targetFrac * candidates.length));
  if (p.targetRows !== undefined) keep = Math.min(keep, p.targetRows);
  const chosen = candidates.slice(0, keep);
  const hi = chosen.length ? cos[chosen[0]!]! : p.minTau;
  const mid = (p.minTau + hi) / 2;
  const width = Math.max((hi - p.minTau) / 8, 1e-9);
  for (const i of chosen) {
    const alpha = p.alphaFloor + (p.alphaCap - p.alphaFloor) / (1 + Math.exp(-(cos[i]! - mid) / width));
    rows.push({ pair: i, cos: cos[i]!, alpha, untrained: untrained[i] === 1 });
  }
  rows.sort((a, b) => a.pair - b.pair);
  return { rows, candidates: candidates.length, untrainedReplaced };
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : 0;
}

/** The typical trained norm of a table's rows and the spread used by the soft clip (median, 1.4826·MAD). */
export function normStats(norms: number[]): { median: number; spread: number } {
  const med = median(norms);
  return { median: med, spread: 1.4826 * median(norms.map((n) => Math.abs(n - med))) };
}

/** Smoothly limits x to median ± 3·spread (tanh), leaving the bulk unchanged. */
export function softClip(x: number, s: { median: number; spread: number }): number {
  const k = 3 * s.spread;
  if (!(k > 0)) return x;
  return s.median + k * Math.tanh((x - s.median) / k);
}

export interface BlendInput {
  /** the base table (rows × width), not changed */
  table: Float32Array;
  width: number;
  baseIds: readonly number[];
  mapped: Matrix;
  plan: StagePlan;
  /** target norm of a donor row replacing an untrained row */
  untrainedNorm: (mappedNorm: number) => number;
}

/** A copy of the table with the plan's rows blended; every other row is the base's, bit for bit. */
export function blendRows(b: BlendInput): Float32Array {
  const out = Float32Array.from(b.table);
  const w = b.width;
  for (const r of b.plan.rows) {
    const id = b.baseIds[r.pair]!;
    const mNorm = rowNorm(b.mapped.data, r.pair, w);
    if (!(mNorm > 0)) continue;
    const target = r.untrained && r.alpha === 1 ? b.untrainedNorm(mNorm) : rowNorm(b.table, id, w);
    const s = target / mNorm;
    for (let j = 0; j < w; j++) {
      const base = b.table[id * w + j]!;
      out[id * w + j] = (1 - r.alpha) * base + r.alpha * s * b.mapped.data[r.pair * w + j]!;
    }
  }
  return out;
}

/** Rows `ids` of a table as a matrix. */
export function gatherRows(table: Float32Array, width: number, ids: readonly number[]): Matrix {
  const out = new Float32Array(ids.length * width);
  ids.forEach((id, i) => out.set(table.subarray(id * width, (id + 1) * width), i * width));
  return matrix(ids.length, width, out);
}
