/**
 * Test matrices with a known SVD: A = U·diag(S)·Vᵀ with U, V the Q factors of seeded Gaussian
 * matrices and S chosen by the test. Everything a test compares against comes from here.
 */
import { orthonormalize } from '../../src/linalg/qr.js';
import { createRng } from '../../src/linalg/random.js';
import type { Matrix } from '../../src/tensor/matrix.js';

export interface Planted {
  a: Matrix;
  U: Matrix;
  S: Float64Array;
  V: Matrix;
}

export function gaussianMatrix(rows: number, cols: number, seed: number): Matrix {
  const data = new Float32Array(rows * cols);
  createRng(seed).fillNormal(data);
  return { rows, cols, data };
}

/** A (rows×cols) with singular values `s` (length ≤ min(rows, cols), any order given is kept). */
export function plantedMatrix(rows: number, cols: number, s: ArrayLike<number>, seed: number): Planted {
  const k = s.length;
  const U = orthonormalize(gaussianMatrix(rows, k, seed));
  const V = orthonormalize(gaussianMatrix(cols, k, seed + 1));
  const acc = new Float64Array(cols);
  const data = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    acc.fill(0);
    for (let c = 0; c < k; c++) {
      const f = U.data[i * k + c] * s[c];
      if (f === 0) continue;
      for (let j = 0; j < cols; j++) acc[j] += f * V.data[j * k + c];
    }
    for (let j = 0; j < cols; j++) data[i * cols + j] = acc[j];
  }
  return { a: { rows, cols, data }, U, S: Float64Array.from(s), V };
}

/** sqrt(Σ_{i≥r} s_i²): the Frobenius error of the best rank-r approximation. */
export function tailNorm(s: ArrayLike<number>, r: number): number {
  let t = 0;
  for (let i = r; i < s.length; i++) t += s[i] * s[i];
  return Math.sqrt(t);
}

/** ‖A − U·diag(S)·Vᵀ‖_F in f64, using the first `r` triplets (default all). */
export function reconstructionError(a: Matrix, U: Matrix, S: ArrayLike<number>, V: Matrix, r = S.length): number {
  const { rows, cols } = a;
  const k = U.cols;
  let err = 0;
  const row = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) row[j] = a.data[i * cols + j];
    for (let c = 0; c < r; c++) {
      const f = U.data[i * k + c] * S[c];
      for (let j = 0; j < cols; j++) row[j] -= f * V.data[j * V.cols + c];
    }
    for (let j = 0; j < cols; j++) err += row[j] * row[j];
  }
  return Math.sqrt(err);
}

/** max |XᵀX − I| over the first `k` columns (default all): 0 for exactly orthonormal columns. */
export function orthonormalityError(x: Matrix, k = x.cols): number {
  let worst = 0;
  for (let a = 0; a < k; a++) {
    for (let b = a; b < k; b++) {
      let s = 0;
      for (let i = 0; i < x.rows; i++) s += x.data[i * x.cols + a] * x.data[i * x.cols + b];
      worst = Math.max(worst, Math.abs(s - (a === b ? 1 : 0)));
    }
  }
  return worst;
}

/** max over i of |x_i − y_i| / |y_i| (entries of y that are 0 compare absolutely). */
export function maxRelativeDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < y.length; i++) {
    const d = Math.abs(x[i] - y[i]);
    worst = Math.max(worst, y[i] === 0 ? d : d / Math.abs(y[i]));
  }
  return worst;
}

/** ‖x − y‖_F / ‖y‖_F in f64. */
export function relativeFrobeniusDiff(x: Float32Array, y: Float32Array): number {
  let d = 0;
  let t = 0;
  for (let i = 0; i < y.length; i++) {
    d += (x[i] - y[i]) ** 2;
    t += y[i] * y[i];
  }
  return t === 0 ? Math.sqrt(d) : Math.sqrt(d / t);
}
