/**
 * Thin SVD of a small dense matrix (min dimension up to a few hundred), in f64.
 *
 * Method: Householder QR first (A = Q·R, on the tall orientation), then one-sided Jacobi
 * (Hestenes) on Rᵀ with de Rijk's pivoting. The QR makes the Jacobi work on an n×n problem
 * whatever the height and, with Rᵀ rather than R, cuts the number of sweeps (Drmač & Veselić);
 * one-sided Jacobi gives small singular values to high relative accuracy, which is what
 * energy-based rank choice and the tests of planted spectra need.
 *
 * Jacobi on W = Rᵀ finds rotations J with W·J = Y, Y's columns orthogonal. Then Rᵀ = Y·Jᵀ, so
 * R = J·Σ·V̂ᵀ with V̂ = Y's columns normalised, and A = (Q·J)·Σ·V̂ᵀ: U = Q·J, V = V̂. J is not
 * accumulated during the sweeps (that would double their cost) but recovered afterwards as
 * J = R·V̂·Σ⁻¹ — accurate to ~eps·σ_1/σ_k, far below f32 resolution — and re-orthonormalised when
 * tiny or zero singular values make that matter.
 *
 * Sign convention (so results are reproducible and comparable): each column of V has its
 * largest-magnitude entry positive (the first such entry on exact ties); U's column follows.
 * Columns for zero singular values are completed to an orthonormal set, never left as NaN or 0.
 */
import type { Matrix } from '../tensor/matrix.js';
import { applyQ64, explicitQ64, fromColumnMajor64, householderQr64, toColumnMajor64 } from './qr.js';

export interface Svd {
  /** rows×k, orthonormal columns */
  U: Matrix;
  /** k singular values, descending */
  S: Float64Array;
  /** cols×k, orthonormal columns */
  V: Matrix;
}

const EPS = 2 ** -52;
const MAX_SWEEPS = 60;
/** below this σ_k/σ_1, the left vectors recovered from R·V̂·Σ⁻¹ are re-orthonormalised */
const RECOVERY_RATIO = 1e-6;
/** below this a Jacobi column counts as exactly zero (f32 data cannot get here unless it is 0) */
const ZERO_NORM = 1e-290;

/** below this fraction of its old value an updated squared norm is recomputed, not trusted */
const CANCELLATION = 1 / 64;

/** x_p·x_q with two partial sums, so the adds do not wait on each other */
function columnDot(x: Float64Array, po: number, qo: number, n: number): number {
  let s0 = 0;
  let s1 = 0;
  let i = 0;
  for (; i + 1 < n; i += 2) {
    s0 += x[po + i] * x[qo + i];
    s1 += x[po + i + 1] * x[qo + i + 1];
  }
  if (i < n) s0 += x[po + i] * x[qo + i];
  return s0 + s1;
}

/** (x_p, x_q) ← (c·x_p − s·x_q, s·x_p + c·x_q) */
function rotateColumns(x: Float64Array, po: number, qo: number, n: number, c: number, s: number): void {
  for (let i = 0; i < n; i++) {
    const a = x[po + i];
    const b = x[qo + i];
    x[po + i] = c * a - s * b;
    x[qo + i] = s * a + c * b;
  }
}

function swapColumns(x: Float64Array, po: number, qo: number, n: number): void {
  for (let i = 0; i < n; i++) {
    const t = x[po + i];
    x[po + i] = x[qo + i];
    x[qo + i] = t;
  }
}

function columnSumSq(x: Float64Array, offset: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += x[offset + i] * x[offset + i];
  return s;
}

/**
 * One-sided Jacobi on the column-major n×n `w`: on return its columns are orthogonal to ~n·eps
 * relative to their norms. The rotations are not accumulated (see svdTall64 for why).
 */
function oneSidedJacobi(w: Float64Array, n: number): void {
  const d = new Float64Array(n);
  const tol = EPS * Math.max(n, 1);
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    // fresh norms each sweep: the cheap updates below drift
    for (let c = 0; c < n; c++) d[c] = columnSumSq(w, c * n, n);
    let rotations = 0;
    for (let p = 0; p < n - 1; p++) {
      // de Rijk: the largest remaining column goes to p (converges faster, ends nearly sorted)
      let best = p;
      for (let q = p + 1; q < n; q++) if (d[q] > d[best]) best = q;
      if (best !== p) {
        swapColumns(w, p * n, best * n, n);
        const t = d[p];
        d[p] = d[best];
        d[best] = t;
      }
      if (d[p] === 0) break; // every column from p on is zero
      const po = p * n;
      for (let q = p + 1; q < n; q++) {
        if (d[q] === 0) continue;
        const qo = q * n;
        const g = columnDot(w, po, qo, n);
        if (Math.abs(g) <= tol * Math.sqrt(d[p]) * Math.sqrt(d[q])) continue;
        rotations++;
        // rotation that zeroes w_pᵀw_q: t = tan θ, the smaller root of t² + 2ζt − 1 = 0
        const zeta = (d[q] - d[p]) / (2 * g);
        const t =
          Math.abs(zeta) > 1e150
            ? 0.5 / zeta
            : (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        rotateColumns(w, po, qo, n, c, s);
        // the exact change of the squared norms is ∓t·g; recompute instead when it cancels badly
        const dp = d[p] - t * g;
        const dq = d[q] + t * g;
        d[p] = dp > d[p] * CANCELLATION ? dp : columnSumSq(w, po, n);
        d[q] = dq > d[q] * CANCELLATION ? dq : columnSumSq(w, qo, n);
      }
    }
    if (rotations === 0) return;
  }
}

/**
 * The sign convention of this module applied to an SVD held as row-major Matrices (in place):
 * each column of V gets its largest-magnitude entry positive (first on ties), U's column follows.
 */
export function canonicalizeSigns(U: Matrix, V: Matrix): void {
  const k = V.cols;
  for (let c = 0; c < k; c++) {
    let best = 0;
    let at = 0;
    for (let i = 0; i < V.rows; i++) {
      const x = Math.abs(V.data[i * k + c]);
      if (x > best) {
        best = x;
        at = i;
      }
    }
    if (V.data[at * k + c] < 0) {
      for (let i = 0; i < V.rows; i++) V.data[i * k + c] = -V.data[i * k + c];
      for (let i = 0; i < U.rows; i++) U.data[i * U.cols + c] = -U.data[i * U.cols + c];
    }
  }
}

/**
 * Makes the columns of the column-major n×n `x` exactly orthonormal in place, column by column
 * (Householder QR, each column replaced by ±Q's so that it keeps its direction): nearly
 * orthonormal columns barely move, zero columns at the end become an orthonormal completion.
 */
function reorthonormalize(x: Float64Array, n: number): void {
  const f = householderQr64(x.slice(), n, n);
  const q = explicitQ64(f);
  for (let c = 0; c < n; c++) {
    const sign = f.packed[c * n + c] < 0 ? -1 : 1;
    for (let i = 0; i < n; i++) x[c * n + i] = sign * q[c * n + i];
  }
}

/** SVD of a column-major rows×cols f64 array with rows ≥ cols; U rows×cols, V cols×cols, column-major. */
function svdTall64(a: Float64Array, rows: number, cols: number): { u: Float64Array; s: Float64Array; v: Float64Array } {
  const n = cols;
  const f = householderQr64(a, rows, n);
  // W = Rᵀ: column c of W is row c of R, the packed entries at (c, i) for i ≥ c
  const w = new Float64Array(n * n);
  for (let c = 0; c < n; c++) {
    for (let i = c; i < n; i++) w[c * n + i] = f.packed[i * rows + c];
  }
  oneSidedJacobi(w, n);

  const norms = new Float64Array(n);
  for (let c = 0; c < n; c++) norms[c] = Math.sqrt(columnSumSq(w, c * n, n));
  const order = Array.from({ length: n }, (_, c) => c).sort((x, y) => norms[y] - norms[x] || x - y);

  const s = new Float64Array(n);
  const v = new Float64Array(n * n);
  let nonzero = 0;
  order.forEach((c, k) => {
    const sigma = norms[c] < ZERO_NORM ? 0 : norms[c];
    s[k] = sigma;
    if (sigma > 0) {
      nonzero = k + 1;
      for (let i = 0; i < n; i++) v[k * n + i] = w[c * n + i] / sigma;
    }
  });
  if (nonzero < n) reorthonormalize(v, n);

  // J = R·V̂·Σ⁻¹ (column k: R·v_k / σ_k), with R's columns contiguous in the packed factor
  const uSmall = new Float64Array(rows * n); // [J; 0], then Q·[J; 0]
  for (let k = 0; k < nonzero; k++) {
    const out = k * rows;
    for (let l = 0; l < n; l++) {
      const vl = v[k * n + l] / s[k];
      const rCol = l * rows;
      for (let i = 0; i <= l; i++) uSmall[out + i] += f.packed[rCol + i] * vl;
    }
  }
  // R·v_k carries an absolute error ~eps·σ_1, so J's column k is orthonormal only to ~eps·σ_1/σ_k;
  // clean up when that could show in f32, and complete the basis for zero σ
  if (nonzero < n || s[nonzero - 1] < RECOVERY_RATIO * s[0]) {
    const j = new Float64Array(n * n);
    for (let k = 0; k < n; k++) j.set(uSmall.subarray(k * rows, k * rows + n), k * n);
    reorthonormalize(j, n);
    for (let k = 0; k < n; k++) uSmall.set(j.subarray(k * n, k * n + n), k * rows);
  }
  applyQ64(f, uSmall, n);
  return { u: uSmall, s, v };
}

/**
 * Thin SVD m = U·diag(S)·Vᵀ of a small dense matrix, either orientation: k = min(rows, cols),
 * U rows×k, V cols×k, S descending. Intended for min(rows, cols) ≤ 512 (512×512: ~3 s;
 * cost grows as rows·k² + k³ per sweep).
 */
export function svdSmall(m: Matrix): Svd {
  const { rows, cols } = m;
  const k = Math.min(rows, cols);
  if (k === 0) {
    return { U: { rows, cols: 0, data: new Float32Array(0) }, S: new Float64Array(0), V: { rows: cols, cols: 0, data: new Float32Array(0) } };
  }
  const tall = rows >= cols;
  // A row-major rows×cols array *is* Aᵀ column-major, so the wide case needs no transpose copy
  const a64 = tall ? toColumnMajor64(m) : Float64Array.from(m.data);
  const big = tall ? rows : cols;
  const { u, s, v } = svdTall64(a64, big, k);
  // tall: A = u·S·vᵀ. wide: Aᵀ = u·S·vᵀ, so A's U is v and A's V is u.
  const left = tall ? u : v;
  const right = tall ? v : u;
  const U = fromColumnMajor64(left, rows, k);
  const V = fromColumnMajor64(right, cols, k);
  canonicalizeSigns(U, V);
  return { U, S: s, V };
}

