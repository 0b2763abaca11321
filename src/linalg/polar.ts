/**
 * The orthogonal polar factor of a rectangular matrix: the Q with orthonormal columns (or rows,
 * for a wide matrix) nearest to M, i.e. U·Vᵀ of M's thin SVD — what orthogonal Procrustes needs —
 * plus the sum of M's singular values (Umeyama's scale numerator), without forming an SVD.
 *
 * Small problems (the shorter side ≤ `eigLimit`): Q = M·(MᵀM)^-½ from a Jacobi eigen-decomposition
 * of the Gram matrix in f64. Larger ones: Newton–Schulz iterations X ← X·(3I − XᵀX)/2 from
 * M/‖M‖_F, two GEMMs per step on the backend, until XᵀX is the identity to 1e-6.
 * Directions where M is (numerically) rank-deficient have no defined rotation: the eigen path
 * leaves them out of Q, Newton–Schulz grows them slowly; both are reported through `rank`.
 */
import type { LinalgBackend } from './backend.js';
import { symEig } from './eig.js';
import { matrix, transpose, type Matrix } from '../tensor/matrix.js';

export interface Polar {
  /** same shape as M */
  Q: Matrix;
  /** Σ σᵢ(M) = tr(QᵀM) */
  traceSigma: number;
  /** singular values above 1e-7·σ_max */
  rank: number;
}

export async function polarFactor(backend: LinalgBackend, M: Matrix, opts: { eigLimit?: number; maxIterations?: number } = {}): Promise<Polar> {
  // work on the tall orientation: Q of a wide M is the transpose of Q of Mᵀ
  if (M.cols > M.rows) {
    const p = await polarFactor(backend, transpose(M), opts);
    return { ...p, Q: transpose(p.Q) };
  }
  return M.cols <= (opts.eigLimit ?? 512) ? polarByEig(backend, M) : polarByNewtonSchulz(backend, M, opts.maxIterations ?? 100);
}

async function polarByEig(backend: LinalgBackend, M: Matrix): Promise<Polar> {
  const n = M.cols;
  const gram = await backend.gemm(M, M, { transA: true });
  const { values, vectors } = symEig(gram);
  const top = Math.max(values[0] ?? 0, 0);
  // (MᵀM)^-½ over the directions M really spans
  const inv = new Float32Array(n * n);
  let traceSigma = 0;
  let rank = 0;
  for (let k = 0; k < n; k++) {
    const lambda = values[k]!;
    if (!(lambda > 1e-14 * top)) continue;
    rank++;
    traceSigma += Math.sqrt(lambda);
    const s = 1 / Math.sqrt(lambda);
    for (let i = 0; i < n; i++) {
      const vi = vectors.data[i * n + k]! * s;
      if (vi === 0) continue;
      for (let j = 0; j < n; j++) inv[i * n + j]! += vi * vectors.data[j * n + k]!;
    }
  }
  return { Q: await backend.gemm(M, matrix(n, n, inv)), traceSigma, rank };
}

async function polarByNewtonSchulz(backend: LinalgBackend, M: Matrix, maxIterations: number): Promise<Polar> {
  const n = M.cols;
  let norm = 0;
  for (const v of M.data) norm += v * v;
  norm = Math.sqrt(norm);
  let X = matrix(M.rows, n, M.data.map((v) => v / norm));
  for (let it = 0; it < maxIterations; it++) {
    const G = await backend.gemm(X, X, { transA: true });
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) off += (G.data[i * n + j]! - (i === j ? 1 : 0)) ** 2;
    if (Math.sqrt(off) < 1e-6 * Math.sqrt(n)) break;
    for (let i = 0; i < n * n; i++) G.data[i] = (i % (n + 1) === 0 ? 1.5 : 0) - 0.5 * G.data[i]!;
    X = await backend.gemm(X, G);
  }
  let traceSigma = 0;
  for (let i = 0; i < M.data.length; i++) traceSigma += X.data[i]! * M.data[i]!;
  const G = await backend.gemm(X, X, { transA: true });
  let rank = 0;
  for (let i = 0; i < n; i++) if (G.data[i * n + i]! > 0.5) rank++;
  return { Q: X, traceSigma, rank };
}
