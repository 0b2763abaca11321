/**
 * Exact SVD of a low-rank product B·A (B m×r, A r×n, r small) without forming the m×n matrix:
 * with B = Q_B·R_B and Aᵀ = Q_A·R_A (thin QRs), B·A = Q_B·(R_B·R_Aᵀ)·Q_Aᵀ, so the SVD of the
 * r×r core, rotated by Q_B and Q_A, is that of B·A. This is how a LoRA pair (B, A) is put in
 * canonical form, truncated, or merged with others exactly.
 */
import { transpose, type Matrix } from '../tensor/matrix.js';
import type { LinalgBackend } from './backend.js';
import { qrThinOnBackend } from './qr.js';
import { canonicalizeSigns, svdSmall, type Svd } from './svd-small.js';

/**
 * SVD of B·A: U m×k, S (k, descending, trailing zeros when B·A has lower rank), V n×k, with
 * k = r normally; when r exceeds m or n (a "low-rank" pair that is not) the product is formed
 * and k = min(m, n).
 */
export async function productSvd(backend: LinalgBackend, B: Matrix, A: Matrix): Promise<Svd> {
  if (B.cols !== A.rows) {
    throw new Error(
      `linalg/product-svd.ts: B is ${B.rows}×${B.cols} but A is ${A.rows}×${A.cols}; B's columns must equal A's rows (the rank)`,
    );
  }
  const m = B.rows;
  const n = A.cols;
  const r = B.cols;
  if (r > m || r > n) return svdSmall(await backend.gemm(B, A));

  const { Q: qb, R: rb } = await qrThinOnBackend(backend, B);
  const { Q: qa, R: ra } = await qrThinOnBackend(backend, transpose(A));
  const core = svdSmall(await backend.gemm(rb, ra, { transB: true })); // R_B·R_Aᵀ = U'·S·V'ᵀ
  const U = await backend.gemm(qb, core.U);
  const V = await backend.gemm(qa, core.V);
  canonicalizeSigns(U, V);
  return { U, S: core.S, V };
}

/**
 * SVD of Σ w_i·B_i·A_i: the same as the product [w_1·B_1 | w_2·B_2 | …]·[A_1; A_2; …], whose inner
 * dimension is Σ r_i. Every B_i must have the same rows and every A_i the same columns.
 */
export async function stackedProductSvd(
  backend: LinalgBackend,
  parts: ReadonlyArray<{ B: Matrix; A: Matrix; weight: number }>,
): Promise<Svd> {
  if (parts.length === 0) {
    throw new Error('linalg/product-svd.ts: stackedProductSvd needs at least one (B, A, weight) part');
  }
  const m = parts[0].B.rows;
  const n = parts[0].A.cols;
  let total = 0;
  parts.forEach(({ B, A, weight }, i) => {
    if (B.rows !== m || A.cols !== n || B.cols !== A.rows) {
      throw new Error(
        `linalg/product-svd.ts: part ${i} has B ${B.rows}×${B.cols} and A ${A.rows}×${A.cols}; ` +
          `every part needs B ${m}×r_i and A r_i×${n}`,
      );
    }
    if (!Number.isFinite(weight)) throw new Error(`linalg/product-svd.ts: part ${i} has weight ${weight}; use a finite number`);
    total += B.cols;
  });
  const bCat = new Float32Array(m * total);
  const aCat = new Float32Array(total * n);
  let offset = 0;
  for (const { B, A, weight } of parts) {
    const r = B.cols;
    for (let i = 0; i < m; i++) {
      for (let c = 0; c < r; c++) bCat[i * total + offset + c] = weight * B.data[i * r + c];
    }
    aCat.set(A.data, offset * n); // A_i's rows follow the previous parts' rows
    offset += r;
  }
  return productSvd(backend, { rows: m, cols: total, data: bCat }, { rows: total, cols: n, data: aCat });
}
