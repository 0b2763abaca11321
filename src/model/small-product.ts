/**
 * The engine's matrix products: the backend's GEMM, except for products too small to pay for a
 * native call. An onnxruntime call costs ~0.1–0.3 ms whatever its size (tensor wrapping, session
 * dispatch, thread-pool wake-up), while decoding one token runs a few dozen tiny products per
 * layer (projections of one row, attention over a short cache): tinyfam llama-base generated 59
 * tokens/s with 45 native calls a token, 83 % of the time in them. Below SMALL_WORK
 * multiply-adds, a plain loop here (sums in f64) is faster than the call's fixed cost.
 */
import type { GemmOptions, LinalgBackend } from '../linalg/backend.js';
import { matrix, type Matrix } from '../tensor/matrix.js';

/** m·n·k below which the loop wins: ~0.05–0.1 ms of scalar JS, about one native call's overhead. */
export const SMALL_WORK = 1 << 16;

/** op(A)·op(B) for A m×k (never transposed here) and B n×k (transB) or k×n. */
export async function product(backend: LinalgBackend, a: Matrix, b: Matrix, opts: Pick<GemmOptions, 'transB'> = {}): Promise<Matrix> {
  const transB = opts.transB ?? false;
  const [m, k] = [a.rows, a.cols];
  const n = transB ? b.rows : b.cols;
  // mismatched shapes go to the backend too, whose error names both
  if (m * n * k >= SMALL_WORK || k !== (transB ? b.cols : b.rows)) return backend.gemm(a, b, opts);
  return matrix(m, n, transB ? timesTransposed(a.data, b.data, m, n, k) : times(a.data, b.data, m, n, k));
}

/** A·Bᵀ: each entry one contiguous dot product. */
function timesTransposed(a: Float32Array, b: Float32Array, m: number, n: number, k: number): Float32Array {
  const c = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    const ai = i * k;
    for (let j = 0; j < n; j++) {
      const bj = j * k;
      let s = 0;
      for (let p = 0; p < k; p++) s += a[ai + p]! * b[bj + p]!;
      c[i * n + j] = s;
    }
  }
  return c;
}

/** A·B: each row of C accumulated (in f64) from contiguous rows of B. */
function times(a: Float32Array, b: Float32Array, m: number, n: number, k: number): Float32Array {
  const c = new Float32Array(m * n);
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let p = 0; p < k; p++) {
      const x = a[i * k + p]!;
      const bp = p * n;
      for (let j = 0; j < n; j++) row[j]! += x * b[bp + j]!;
    }
    c.set(row, i * n);
  }
  return c;
}
