/**
 * The one low-rank factor type: Δ ≈ B·A with A r × in and B out × r, in the weight's orientation.
 * LoRA modules, DoRA's folded updates, Σ-edited factors and merged adapters are all this shape plus
 * their own extras.
 *
 * `fromSvd` balances the two factors by default, A = √Σ·Vᵀ and B = U·√Σ, which keeps their
 * magnitudes alike when stored in bf16/f16; PEFT's merges put all of Σ on B instead.
 */
import { matrix, type Matrix } from '../tensor/matrix.js';
import { productSvd } from '../linalg/product-svd.js';
import type { Svd } from '../linalg/svd-small.js';
import type { LinalgBackend } from '../linalg/backend.js';

export interface LowRank {
  /** r × in */
  A: Matrix;
  /** out × r */
  B: Matrix;
}

export interface FromSvdOptions {
  /** names the update in the message when `rank` is out of reach */
  what?: string;
  /** 'balanced': √σ on both factors (default); 'B': B = U·Σ, A = Vᵀ, as PEFT's SVD merges split it */
  sigmaOn?: 'balanced' | 'B';
}

/**
 * The rank-r factors of an SVD (r ≤ number of singular values). r out of reach happens when NaN or
 * infinite values reached the decomposition, which then finds fewer singular values than asked for.
 */
export function fromSvd(svd: Svd, rank: number, opts: FromSvdOptions = {}): LowRank {
  const { U, S, V } = svd;
  if (rank > S.length) {
    throw new Error(
      `${opts.what ?? 'a low-rank update'}: cannot keep rank ${rank}: its decomposition found only ${S.length} usable singular values, which means NaN or infinite values in the weights behind it; check the inputs`,
    );
  }
  const balanced = (opts.sigmaOn ?? 'balanced') === 'balanced';
  const out = U.rows;
  const inF = V.rows;
  const A = matrix(rank, inF);
  const B = matrix(out, rank);
  for (let j = 0; j < rank; j++) {
    const a = balanced ? Math.sqrt(Math.max(0, S[j])) : 1;
    const b = balanced ? a : S[j];
    for (let c = 0; c < inF; c++) A.data[j * inF + c] = a * V.data[c * V.cols + j];
    for (let r = 0; r < out; r++) B.data[r * rank + j] = b * U.data[r * U.cols + j];
  }
  return { A, B };
}

/** scale · B·A as a dense out × in matrix. */
export async function product(backend: LinalgBackend, f: LowRank, scale = 1): Promise<Matrix> {
  const p = await backend.gemm(f.B, f.A);
  if (scale !== 1) for (let i = 0; i < p.data.length; i++) p.data[i] *= scale;
  return p;
}

/** The exact SVD of B·A from the factors (thin QRs, never the out × in product). */
export function svdOf(backend: LinalgBackend, f: LowRank): Promise<Svd> {
  return productSvd(backend, f.B, f.A);
}
