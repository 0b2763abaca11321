/**
 * Turning an SVD into LoRA factors and back. The split A = √Σ·Vᵀ, B = U·√Σ balances the two
 * factors, which keeps their magnitudes alike when stored in bf16/f16.
 */
import { matrix, type Matrix } from '../tensor/matrix.js';
import type { Svd } from '../linalg/svd-small.js';
import type { LinalgBackend } from '../linalg/backend.js';

export interface LowRankFactors {
  /** r × in */
  A: Matrix;
  /** out × r */
  B: Matrix;
}

/**
 * The rank-r factors of an SVD (r ≤ number of singular values), with √σ on both sides. `what`
 * names the update in the message when r is out of reach: that happens when NaN or infinite
 * values reached the decomposition, which then finds fewer singular values than asked for.
 */
export function factorsFromSvd(svd: Svd, rank: number, what = 'a low-rank update'): LowRankFactors {
  const { U, S, V } = svd;
  if (rank > S.length) {
    throw new Error(
      `${what}: cannot keep rank ${rank}: its decomposition found only ${S.length} usable singular values, which means NaN or infinite values in the weights behind it; check the inputs`,
    );
  }
  const out = U.rows;
  const inF = V.rows;
  const A = matrix(rank, inF);
  const B = matrix(out, rank);
  for (let j = 0; j < rank; j++) {
    const s = Math.sqrt(Math.max(0, S[j]));
    for (let c = 0; c < inF; c++) A.data[j * inF + c] = s * V.data[c * V.cols + j];
    for (let r = 0; r < out; r++) B.data[r * rank + j] = s * U.data[r * U.cols + j];
  }
  return { A, B };
}

/** scale · B·A as a dense out × in matrix. */
export async function lowRankProduct(backend: LinalgBackend, f: LowRankFactors, scale = 1): Promise<Matrix> {
  const p = await backend.gemm(f.B, f.A);
  if (scale !== 1) for (let i = 0; i < p.data.length; i++) p.data[i] *= scale;
  return p;
}
