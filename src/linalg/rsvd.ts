/**
 * Truncated SVDs of big matrices from a handful of thin GEMMs (Halko, Martinsson & Tropp 2011):
 * find an orthonormal Q whose range holds A's dominant column space, then everything else is the
 * SVD of the small B = Qᵀ·A. Power iterations (A·Aᵀ)^q sharpen Q when the spectrum decays slowly;
 * Q is re-orthonormalised after every product so f32 round-off cannot wash out the weaker
 * directions — by CholeskyQR2 on the backend where that is safe, Householder where it is not.
 *
 * The small SVD never forms B's Gram matrix (that would square its condition number): with
 * Bᵀ = W·R (thin QR), B = Rᵀ·Wᵀ and the SVD of the k×k Rᵀ gives B's. Bᵀ = Aᵀ·Q is itself the
 * product a power iteration would compute next, so it costs one pass over A like B would.
 *
 * Random test matrices come from `createRng(seed)` filled row by row, so a seed fixes the result
 * bit for bit on a given backend.
 */
import { sumSquares, transpose, type Matrix } from '../tensor/matrix.js';
import type { LinalgBackend } from './backend.js';
import { normalizeOnBackend, orthonormalizeOnBackend, qrThinOnBackend } from './qr.js';
import { createRng, type Rng } from './random.js';
import { canonicalizeSigns, svdSmall, type Svd } from './svd-small.js';

export interface RandomizedSvdOptions {
  /** number of singular triplets wanted */
  rank: number;
  /** extra random directions beyond `rank` (default 8); more makes the top `rank` more accurate */
  oversample?: number;
  /** power iterations (default 2); each costs two more passes over A */
  powerIters?: number;
  /** seed of the random test matrix (default 0) */
  seed?: number;
}

const DEFAULT_OVERSAMPLE = 8;
const DEFAULT_POWER_ITERS = 2;
const DEFAULT_SEED = 0;

/**
 * A random test matrix of independent random signs: 32 entries per random draw, 3-4x cheaper than
 * uniform entries (themselves ~20x cheaper than Gaussian ones) and as accurate (see decompose.ts).
 */
function testMatrix(rng: Rng, rows: number, cols: number): Matrix {
  const data = new Float32Array(rows * cols);
  rng.fillSigns(data);
  return { rows, cols, data };
}

/** The first `k` columns of a row-major matrix. */
function leadingColumns(m: Matrix, k: number): Matrix {
  if (k === m.cols) return m;
  const data = new Float32Array(m.rows * k);
  for (let i = 0; i < m.rows; i++) data.set(m.data.subarray(i * m.cols, i * m.cols + k), i * k);
  return { rows: m.rows, cols: k, data };
}

function truncate(svd: Svd, k: number): Svd {
  return { U: leadingColumns(svd.U, k), S: svd.S.slice(0, k), V: leadingColumns(svd.V, k) };
}

function checkCount(value: number, what: string, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`linalg/rsvd.ts: ${what} must be an integer ≥ ${min}, got ${value}`);
  }
}

/**
 * The SVD of Q·B, truncated to `keep` triplets, from Bᵀ (n×k) and a way to multiply by the
 * orthonormal Q (m×k): with Bᵀ = W·R and Rᵀ = Ur·S·Vrᵀ, Q·B = (Q·Ur)·S·(W·Vr)ᵀ.
 */
async function svdOfQB(
  backend: LinalgBackend,
  bT: Matrix,
  keep: number,
  timesQ: (x: Matrix) => Promise<Matrix>,
): Promise<Svd> {
  const { Q: w, R } = await qrThinOnBackend(backend, bT);
  const small = truncate(svdSmall(transpose(R)), keep);
  const U = await timesQ(small.U);
  const V = await backend.gemm(w, small.V);
  canonicalizeSigns(U, V);
  return { U, S: small.S, V };
}

/**
 * The top `rank` singular triplets of `a` (m×n): a ≈ U·diag(S)·Vᵀ, U m×r, V n×r, S descending,
 * r = min(rank, m, n). When rank + oversample reaches min(m, n) the answer is exact (dense
 * svdSmall: fine up to a few hundred, slow beyond).
 */
export async function randomizedSvd(backend: LinalgBackend, a: Matrix, opts: RandomizedSvdOptions): Promise<Svd> {
  const oversample = opts.oversample ?? DEFAULT_OVERSAMPLE;
  const powerIters = opts.powerIters ?? DEFAULT_POWER_ITERS;
  checkCount(opts.rank, 'rank', 0);
  checkCount(oversample, 'oversample', 0);
  checkCount(powerIters, 'powerIters', 0);
  const { rows: m, cols: n } = a;
  const full = Math.min(m, n);
  const r = Math.min(opts.rank, full);
  const k = Math.min(r + oversample, full);
  if (r === 0) {
    return { U: { rows: m, cols: 0, data: new Float32Array(0) }, S: new Float64Array(0), V: { rows: n, cols: 0, data: new Float32Array(0) } };
  }
  if (k === full) return truncate(svdSmall(a), r);

  const rng = createRng(opts.seed ?? DEFAULT_SEED);
  // rough normalisation between products; the basis Q that B and U come from is orthonormal
  const basis = (y: Matrix, last: boolean) => (last ? orthonormalizeOnBackend(backend, y) : normalizeOnBackend(backend, y));
  let q = await basis(await backend.gemm(a, testMatrix(rng, n, k)), powerIters === 0); // m×k
  for (let i = 0; i < powerIters; i++) {
    const w = await normalizeOnBackend(backend, await backend.gemm(a, q, { transA: true })); // n×k
    q = await basis(await backend.gemm(a, w), i === powerIters - 1);
  }
  const bT = await backend.gemm(a, q, { transA: true });
  return svdOfQB(backend, bT, r, (x) => backend.gemm(q, x));
}

export interface IncrementalSvdState {
  /** columns of Q so far */
  rank: number;
  /** ‖A − Q·Qᵀ·A‖²_F = ‖A‖²_F − ‖B‖²_F, clamped at 0 */
  errorFrobSq: number;
  /** ‖A‖²_F, summed in f64 */
  totalFrobSq: number;
}

export interface IncrementalSvdOptions {
  /** columns added per step (default 16) */
  blockSize?: number;
  /** never grow past this rank (clamped to min(m, n)) */
  maxRank: number;
  /** power iterations per block (default 2) */
  powerIters?: number;
  /** seed of the random blocks (default 0) */
  seed?: number;
  /** asked after every block; true stops growing */
  stop?: (state: IncrementalSvdState) => boolean;
  /** ‖A‖²_F when the caller has it already (summed in f64): saves a pass over A */
  frobSq?: number;
}

export interface IncrementalSvd extends Svd {
  /** number of triplets returned (the rank of Q when growing stopped) */
  rank: number;
  /** for r = 0…rank: the relative Frobenius error of keeping the first r triplets */
  errors: Array<{ rank: number; relError: number }>;
}

/** Rows [0, count) of a row-major buffer of `cols` columns, as a matrix view (no copy). */
function leadingRows(buffer: Float32Array, count: number, cols: number): Matrix {
  return { rows: count, cols, data: buffer.subarray(0, count * cols) };
}

/** x − y, elementwise, into a new matrix. */
function minus(x: Matrix, y: Matrix): Matrix {
  const data = new Float32Array(x.data.length);
  for (let i = 0; i < data.length; i++) data[i] = x.data[i] - y.data[i];
  return { rows: x.rows, cols: x.cols, data };
}

/**
 * A truncated SVD grown block by block until `stop` is satisfied or `maxRank` is reached
 * (Martinsson & Voronin 2016, randQB_EI with power iterations), reporting the error of every rank.
 *
 * Each block is drawn from what the previous blocks left of A, A − Q·B, so Q grows as one
 * orthonormal basis; ‖A‖²_F − ‖B‖²_F is then the exact residual energy at every block boundary at
 * no cost. After the last block the SVD of B = U_B·S·Vᵀ gives A ≈ (Q·U_B)·S·Vᵀ, and for every r
 *   relError(r) = sqrt(max(0, ‖A‖²_F − Σ_{i≤r} σ_i²) / ‖A‖²_F),
 * which is exactly the error of the rank-r truncation returned here: A − Q·B is orthogonal to
 * range(Q), so ‖A − Q·B_r‖² = (‖A‖² − ‖B‖²) + Σ_{i>r} σ_i(B)². Since σ_i(B) ≤ σ_i(A), it is an
 * upper bound on the optimum sqrt(Σ_{i>r} σ_i(A)²), close to it when the power iterations did
 * their job (within ~1% on a slowly decaying spectrum with 2 iterations, except for ranks in the
 * last block, which had the fewest iterations: let maxRank run a block past the ranks you need).
 * Because it is a difference of two f32-computed energies, values below ~1e-3 are at the noise
 * floor and should not be told apart.
 */
export async function incrementalSvd(backend: LinalgBackend, a: Matrix, opts: IncrementalSvdOptions): Promise<IncrementalSvd> {
  const blockSize = opts.blockSize ?? 16;
  const powerIters = opts.powerIters ?? DEFAULT_POWER_ITERS;
  checkCount(blockSize, 'blockSize', 1);
  checkCount(opts.maxRank, 'maxRank', 0);
  checkCount(powerIters, 'powerIters', 0);
  const { rows: m, cols: n } = a;
  const maxRank = Math.min(opts.maxRank, m, n);
  const total = opts.frobSq ?? sumSquares(a.data);

  // Q is kept transposed (rows are basis vectors) and B row by row, both in buffers sized for
  // maxRank, so growing is a copy into the next rows and the current state a zero-copy view.
  const qtBuffer = new Float32Array(maxRank * m);
  const bBuffer = new Float32Array(maxRank * n);
  let rank = 0;
  let residual = total;
  const rng = createRng(opts.seed ?? DEFAULT_SEED);

  // (A − Q·B)·X and (A − Q·B)ᵀ·Y without forming A − Q·B
  const deflated = async (x: Matrix): Promise<Matrix> => {
    const ax = await backend.gemm(a, x);
    if (rank === 0) return ax;
    const bx = await backend.gemm(leadingRows(bBuffer, rank, n), x);
    return minus(ax, await backend.gemm(leadingRows(qtBuffer, rank, m), bx, { transA: true }));
  };
  const deflatedT = async (y: Matrix): Promise<Matrix> => {
    const aty = await backend.gemm(a, y, { transA: true });
    if (rank === 0) return aty;
    const qty = await backend.gemm(leadingRows(qtBuffer, rank, m), y);
    return minus(aty, await backend.gemm(leadingRows(bBuffer, rank, n), qty, { transA: true }));
  };

  while (total > 0 && rank < maxRank) {
    const width = Math.min(blockSize, maxRank - rank);
    let qi = await orthonormalizeOnBackend(backend, await deflated(testMatrix(rng, n, width)));
    for (let i = 0; i < powerIters; i++) {
      const wi = await orthonormalizeOnBackend(backend, await deflatedT(qi));
      qi = await orthonormalizeOnBackend(backend, await deflated(wi));
    }
    if (rank > 0) {
      // one more pass against the earlier blocks: round-off lets some of them leak back in
      const qt = leadingRows(qtBuffer, rank, m);
      qi = await orthonormalizeOnBackend(backend, minus(qi, await backend.gemm(qt, await backend.gemm(qt, qi), { transA: true })));
    }
    const biT = await backend.gemm(a, qi, { transA: true }); // (Qiᵀ·A)ᵀ, n×width
    const bi = transpose(biT);
    qtBuffer.set(transpose(qi).data, rank * m);
    bBuffer.set(bi.data, rank * n);
    rank += width;
    residual -= sumSquares(bi.data);
    const state = { rank, errorFrobSq: Math.max(0, residual), totalFrobSq: total };
    if (opts.stop?.(state)) break;
  }

  if (rank === 0) {
    return {
      U: { rows: m, cols: 0, data: new Float32Array(0) },
      S: new Float64Array(0),
      V: { rows: n, cols: 0, data: new Float32Array(0) },
      rank: 0,
      errors: [{ rank: 0, relError: total > 0 ? 1 : 0 }],
    };
  }
  const qt = leadingRows(qtBuffer, rank, m);
  const bT = transpose(leadingRows(bBuffer, rank, n));
  const { U, S, V } = await svdOfQB(backend, bT, rank, (x) => backend.gemm(qt, x, { transA: true }));

  const errors: Array<{ rank: number; relError: number }> = [{ rank: 0, relError: 1 }];
  let kept = 0;
  for (let r = 1; r <= rank; r++) {
    kept += S[r - 1] ** 2;
    errors.push({ rank: r, relError: Math.sqrt(Math.max(0, total - kept) / total) });
  }
  return { U, S, V, rank, errors };
}
