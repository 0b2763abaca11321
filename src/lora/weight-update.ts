/**
 * The merge math of LoRA, DoRA and EDoRA on one base weight W (out × in, row-major f32).
 *
 *   LoRA / rsLoRA      W' = W + s·B·A
 *   LoRA-XS            W' = W + s·B·R·A                    (latent R, no magnitude)
 *   DoRA (PEFT)        W' = diag(m / ‖W + s·B·A‖) · (W + s·B·A)
 *   EDoRA              as DoRA with s·B·R·A in place of s·B·A
 *
 * The norm is taken over each output row for Linear layers and over each column (one per
 * embedding dimension) for Embedding layers, as PEFT's DoraEmbeddingLayer does. PEFT detaches the
 * norm during training, so at merge time it is a plain constant per row (or column).
 *
 * A user weight w scales what the adapter does to W: W ← W + w·(W' − W). For LoRA that is w·s·B·A;
 * for DoRA it interpolates between W (w = 0) and the merged weight (w = 1).
 *
 * Everything is computed as the difference D = w·(W' − W) in row blocks, never as W' − W after the
 * fact: for DoRA, D = w·((c − 1)·W + c·ΔW) with c = m/‖W + ΔW‖ taken in f64, which keeps D accurate
 * even when c is within f32 rounding of 1 (subtracting two merged weights would lose it). Blocks
 * bound the extra memory to one block of ΔW, whatever the size of W; the full-size product B·A
 * goes through the GEMM backend one block at a time.
 */
import type { LinalgBackend } from '../linalg/backend.js';
import type { LoraKind, LoraModule } from './adapter.js';
import { matrix, type Matrix } from '../tensor/matrix.js';
import type { LowRank } from '../lowrank/low-rank.js';

/** PEFT's DoRA normalises rows for Linear layers and columns for Embedding layers. */
export type NormAxis = 'rows' | 'cols';

export function doraNormAxis(kind: LoraKind): NormAxis {
  return kind === 'embedding' ? 'cols' : 'rows';
}

/** How an adapter module changes its weight. */
export type AdapterMethod = 'lora' | 'lora-xs' | 'dora' | 'edora';

export function adapterMethod(m: { hasMagnitude: boolean; hasLatent: boolean }): AdapterMethod {
  if (m.hasMagnitude) return m.hasLatent ? 'edora' : 'dora';
  return m.hasLatent ? 'lora-xs' : 'lora';
}

/** Everything needed to change one weight: ΔW = B·A with the scaling and latent folded into B (s·B·R or s·B), plus DoRA's magnitude. */
export interface WeightUpdate extends LowRank {
  kind: LoraKind;
  /** DoRA/EDoRA magnitude: `out` entries (Linear) or `in` entries (Embedding) */
  magnitude?: Float32Array;
  /** the user's weight w: W ← W + w·(W' − W) */
  weight: number;
}

/**
 * The update for a loaded module: folds the latent R into B (an out×r by r×r product, on the
 * backend since r can reach a few hundred) and the scaling into the same matrix.
 */
export async function weightUpdate(backend: LinalgBackend, mod: LoraModule, scaling: number, weight = 1): Promise<WeightUpdate> {
  const B = mod.latent ? await backend.gemm(mod.B, mod.latent) : matrix(mod.B.rows, mod.B.cols, Float32Array.from(mod.B.data));
  for (let i = 0; i < B.data.length; i++) B.data[i] *= scaling;
  return { kind: mod.kind, B, A: mod.A, magnitude: mod.magnitude, weight };
}

/**
 * ΔW rows are produced this many elements at a time (4 MiB of f32): small beside W and small
 * enough to stay in cache between the GEMM and the loops over it (measured ~25% faster than 16 MiB).
 */
const BLOCK_ELEMENTS = 1 << 20;

export interface BlockOptions {
  /** elements of ΔW per row block (default 1M); at least one row is always taken */
  blockElements?: number;
}

function rowBlocks(rows: number, cols: number, blockElements = BLOCK_ELEMENTS): Array<[number, number]> {
  const step = Math.max(1, Math.floor(blockElements / Math.max(1, cols)));
  const blocks: Array<[number, number]> = [];
  for (let r0 = 0; r0 < rows; r0 += step) blocks.push([r0, Math.min(rows, r0 + step)]);
  return blocks;
}

function rowsView(m: Matrix, r0: number, r1: number): Matrix {
  return { rows: r1 - r0, cols: m.cols, data: m.data.subarray(r0 * m.cols, r1 * m.cols) };
}

function checkShapes(W: Matrix, u: WeightUpdate): void {
  const r = u.A.rows;
  if (u.B.rows !== W.rows || u.A.cols !== W.cols || u.B.cols !== r) {
    throw new Error(
      `dora/formula.ts: the update is (${u.B.rows}×${u.B.cols})·(${u.A.rows}×${u.A.cols}) but the weight is ${W.rows}×${W.cols}`,
    );
  }
  if (u.magnitude) {
    const want = doraNormAxis(u.kind) === 'rows' ? W.rows : W.cols;
    if (u.magnitude.length !== want) {
      throw new Error(`dora/formula.ts: the magnitude vector has ${u.magnitude.length} entries, the ${u.kind} weight ${W.rows}×${W.cols} needs ${want}`);
    }
  }
}

/**
 * m/‖·‖ per row or column. A zero row (or column) of W + ΔW has no direction to rescale; PEFT
 * would produce NaN there (m/0 · 0). We keep it zero, the only value that is not arbitrary: it
 * matters for zero-padded vocabulary rows of lm_head.
 */
function magnitudeFactors(norms: Float64Array, magnitude: Float32Array): Float64Array {
  const c = new Float64Array(norms.length);
  for (let i = 0; i < c.length; i++) c[i] = norms[i] > 0 ? magnitude[i] / norms[i] : 1;
  return c;
}

/** Σ over each column of (W + ΔW)², for the column-wise (Embedding) DoRA norm: needs all rows before any row can be finished. */
async function columnNorms(backend: LinalgBackend, W: Matrix, u: WeightUpdate, blockElements?: number): Promise<Float64Array> {
  const sums = new Float64Array(W.cols);
  for (const [r0, r1] of rowBlocks(W.rows, W.cols, blockElements)) {
    const delta = await backend.gemm(rowsView(u.B, r0, r1), u.A);
    const w = rowsView(W, r0, r1).data;
    for (let i = 0; i < delta.data.length; i++) {
      const v = w[i] + delta.data[i];
      sums[i % W.cols] += v * v;
    }
  }
  for (let j = 0; j < sums.length; j++) sums[j] = Math.sqrt(sums[j]);
  return sums;
}

/**
 * Hands D = w·(W' − W) to `emit`, one row block at a time, in order; `delta` is reused as D's
 * storage and is only valid during the call. W is read, never written, so `emit` may update the
 * block of W it was given (rows already consumed).
 */
async function forEachDifferenceBlock(
  backend: LinalgBackend,
  W: Matrix,
  u: WeightUpdate,
  emit: (row0: number, d: Matrix) => void,
  blockElements?: number,
): Promise<void> {
  checkShapes(W, u);
  const { cols } = W;
  const w = u.weight;
  const colFactors =
    u.magnitude && doraNormAxis(u.kind) === 'cols' ? magnitudeFactors(await columnNorms(backend, W, u, blockElements), u.magnitude) : undefined;
  for (const [r0, r1] of rowBlocks(W.rows, cols, blockElements)) {
    const d = await backend.gemm(rowsView(u.B, r0, r1), u.A);
    const wBlock = rowsView(W, r0, r1).data;
    const dd = d.data;
    if (!u.magnitude) {
      if (w !== 1) for (let i = 0; i < dd.length; i++) dd[i] *= w;
    } else if (colFactors) {
      for (let i = 0; i < dd.length; i++) {
        const c = colFactors[i % cols];
        dd[i] = w * ((c - 1) * wBlock[i] + c * dd[i]);
      }
    } else {
      for (let row = 0; row < r1 - r0; row++) {
        const off = row * cols;
        let sq = 0;
        for (let j = 0; j < cols; j++) {
          const v = wBlock[off + j] + dd[off + j];
          sq += v * v;
        }
        const norm = Math.sqrt(sq);
        const c = norm > 0 ? u.magnitude[r0 + row] / norm : 1;
        for (let j = 0; j < cols; j++) dd[off + j] = w * ((c - 1) * wBlock[off + j] + c * dd[off + j]);
      }
    }
    emit(r0, d);
  }
}

/** W ← W + w·(W' − W), in place. */
export async function applyUpdateInPlace(backend: LinalgBackend, W: Matrix, u: WeightUpdate, opts: BlockOptions = {}): Promise<void> {
  await forEachDifferenceBlock(
    backend,
    W,
    u,
    (r0, d) => {
      const base = r0 * W.cols;
      for (let i = 0; i < d.data.length; i++) W.data[base + i] += d.data[i];
    },
    opts.blockElements,
  );
}

/** D = w·(W' − W) as a dense out × in matrix (W is left unchanged). */
export async function updateDifference(backend: LinalgBackend, W: Matrix, u: WeightUpdate, opts: BlockOptions = {}): Promise<Matrix> {
  const D = matrix(W.rows, W.cols);
  await forEachDifferenceBlock(backend, W, u, (r0, d) => D.data.set(d.data, r0 * W.cols), opts.blockElements);
  return D;
}

/** Row (axis 'rows') or column norms of a weight, in f64: DoRA's initial magnitude for an unchanged weight. */
export function weightNorms(W: Matrix, axis: NormAxis): Float64Array {
  const n = new Float64Array(axis === 'rows' ? W.rows : W.cols);
  for (let i = 0; i < W.rows; i++) {
    for (let j = 0; j < W.cols; j++) {
      const v = W.data[i * W.cols + j];
      n[axis === 'rows' ? i : j] += v * v;
    }
  }
  for (let k = 0; k < n.length; k++) n[k] = Math.sqrt(n[k]);
  return n;
}
