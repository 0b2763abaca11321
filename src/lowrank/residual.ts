/**
 * How far a low-rank approximation is from the matrix it approximates, measured rather than read
 * off a spectrum: extract's exact check, the measured errors of tight adaptive bounds, and
 * convert's per-module report.
 */
import type { LinalgBackend } from '../linalg/backend.js';
import type { Matrix } from '../tensor/matrix.js';

/** Σ (delta[offset + i] − scale·p[i])², four partial sums (2x faster in V8 than one chain of additions). */
function residualSquares(delta: Float32Array, offset: number, p: Float32Array, scale: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  const whole = p.length - (p.length % 4);
  for (let i = 0; i < whole; i += 4) {
    const e0 = delta[offset + i] - scale * p[i];
    const e1 = delta[offset + i + 1] - scale * p[i + 1];
    const e2 = delta[offset + i + 2] - scale * p[i + 2];
    const e3 = delta[offset + i + 3] - scale * p[i + 3];
    s0 += e0 * e0;
    s1 += e1 * e1;
    s2 += e2 * e2;
    s3 += e3 * e3;
  }
  for (let i = whole; i < p.length; i++) {
    const e = delta[offset + i] - scale * p[i];
    s0 += e * e;
  }
  return s0 + s1 + s2 + s3;
}

/** Rows of Δ − scale·B·A formed per block, so the check never holds a second full-size matrix. */
const VERIFY_BLOCK_ELEMENTS = 4 << 20;

/**
 * ‖Δ − scale·B·A‖_F / ‖Δ‖_F computed exactly with GEMMs (B out×r, A r×in), block of rows by block.
 * Used to check the error the spectrum predicts against the factors as actually stored.
 */
export async function exactRelError(backend: LinalgBackend, delta: Matrix, B: Matrix, A: Matrix, scale: number, frobSq: number): Promise<number> {
  const { rows, cols } = delta;
  const blockRows = Math.max(1, Math.floor(VERIFY_BLOCK_ELEMENTS / Math.max(1, cols)));
  let residual = 0;
  for (let r0 = 0; r0 < rows; r0 += blockRows) {
    const r1 = Math.min(rows, r0 + blockRows);
    const bBlock: Matrix = { rows: r1 - r0, cols: B.cols, data: B.data.subarray(r0 * B.cols, r1 * B.cols) };
    const product = await backend.gemm(bBlock, A);
    residual += residualSquares(delta.data, r0 * cols, product.data, scale);
  }
  return frobSq > 0 ? Math.sqrt(residual / frobSq) : 0;
}
