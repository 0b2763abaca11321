/**
 * How far a merged module is from the exact merge X = Σ w_i·s_i·B_i·A_i, without forming any
 * m×n matrix for real layer sizes.
 *
 * With the stacked inputs factored as [c_1·B_1 | …] = Q_B·R_B and [A_1; …]ᵀ = Q_A·R_A (thin QRs),
 * X = Q_B·C·Q_Aᵀ with C = R_B·R_Aᵀ. The result Y = B'·A' splits against those bases into
 * B' = Q_B·B_in + B_out and A' = A_in·Q_Aᵀ + A_out (B_out ⟂ Q_B, A_out ⟂ Q_A), and
 *   Y − X = Q_B(B_in·A_in − C)Q_Aᵀ + B_out·A_in·Q_Aᵀ + Q_B·B_in·A_out + B_out·A_out
 * is a sum of four mutually orthogonal terms. Their squared norms come from small Gram matrices,
 * and none is a difference of large numbers, so an exact merge reports ~1e-7, not the ~1e-3 noise
 * floor of ‖Y‖² − 2⟨Y, X⟩ + ‖X‖² in f32.
 */
import { matrix, transpose, type Matrix } from '../tensor/matrix.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { qrThinOnBackend } from '../linalg/qr.js';
import type { LowRank, MergeTerm } from './types.js';

/**
 * Norms at or below this fraction of Σ|c_i|·‖B_i‖_F·‖A_i‖_F (a bound on ‖Σ c_i·B_i·A_i‖_F) are f32
 * round-off, not signal.
 */
const ROUNDOFF_FRACTION = 1e-6;

/** The norm below which a combination of these terms (coefficients c_i on B_i·A_i) counts as zero. */
export function roundoffFloor(terms: readonly MergeTerm[], coefficients: readonly number[]): number {
  const norm = (m: Matrix) => Math.sqrt(m.data.reduce((s, x) => s + x * x, 0));
  return ROUNDOFF_FRACTION * terms.reduce((s, t, i) => s + Math.abs(coefficients[i]) * norm(t.B) * norm(t.A), 0);
}

/** Below this many entries X and Y are simply formed (in f64): cheaper than the factorisations. */
const DENSE_LIMIT = 1 << 16;

export interface ExactComparison {
  /** ‖X‖_F of the exact weighted sum */
  exactNorm: number;
  /** ‖Y − X‖_F */
  errorNorm: number;
  /** ‖Y − X‖_F / ‖X‖_F; null when X is zero to round-off (the adapters cancel) */
  relError: number | null;
}

/** c_i = w_i·s_i: the exact merge's coefficient on B_i·A_i. */
function exactCoefficients(terms: readonly MergeTerm[]): number[] {
  return terms.map((t) => t.weight * t.scaling);
}

function comparison(errorSq: number, exactSq: number, zeroBelow: number): ExactComparison {
  const exactNorm = Math.sqrt(exactSq);
  const errorNorm = Math.sqrt(Math.max(0, errorSq));
  return { exactNorm, errorNorm, relError: exactNorm > zeroBelow ? errorNorm / exactNorm : null };
}

/** acc += c·B·A in f64 (acc is m×n row-major). */
function addProduct(acc: Float64Array, B: Matrix, A: Matrix, c: number): void {
  const r = B.cols;
  const n = A.cols;
  for (let i = 0; i < B.rows; i++) {
    for (let k = 0; k < r; k++) {
      const f = c * B.data[i * r + k];
      if (f === 0) continue;
      for (let j = 0; j < n; j++) acc[i * n + j] += f * A.data[k * n + j];
    }
  }
}

function compareDense(result: LowRank, terms: readonly MergeTerm[]): ExactComparison {
  const m = terms[0].B.rows;
  const n = terms[0].A.cols;
  const x = new Float64Array(m * n);
  exactCoefficients(terms).forEach((c, i) => addProduct(x, terms[i].B, terms[i].A, c));
  const diff = new Float64Array(m * n);
  addProduct(diff, result.B, result.A, 1);
  let errorSq = 0;
  let exactSq = 0;
  for (let i = 0; i < x.length; i++) {
    errorSq += (diff[i] - x[i]) ** 2;
    exactSq += x[i] ** 2;
  }
  return comparison(errorSq, exactSq, roundoffFloor(terms, exactCoefficients(terms)));
}

/** [c_1·B_1 | c_2·B_2 | …] (m × Σr) and [A_1; A_2; …]ᵀ (n × Σr). */
function stackInputs(terms: readonly MergeTerm[], coefficients: readonly number[]): { B: Matrix; At: Matrix } {
  const m = terms[0].B.rows;
  const n = terms[0].A.cols;
  const total = terms.reduce((s, t) => s + t.B.cols, 0);
  const B = matrix(m, total);
  const A = matrix(total, n);
  let offset = 0;
  terms.forEach((t, idx) => {
    const r = t.B.cols;
    for (let i = 0; i < m; i++) {
      for (let k = 0; k < r; k++) B.data[i * total + offset + k] = coefficients[idx] * t.B.data[i * r + k];
    }
    A.data.set(t.A.data, offset * n);
    offset += r;
  });
  return { B, At: transpose(A) };
}

/** x − y, elementwise. */
function minus(x: Matrix, y: Matrix): Matrix {
  const out = matrix(x.rows, x.cols);
  for (let i = 0; i < out.data.length; i++) out.data[i] = x.data[i] - y.data[i];
  return out;
}

/** Σ_jk G_jk·H_jk = tr(G·H) for symmetric G, H. */
function gramInner(g: ArrayLike<number>, h: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < g.length; i++) s += g[i] * h[i];
  return s;
}

/** XᵀX (transposeFirst) or X·Xᵀ in f64, for small X. */
function gram64(x: Matrix, transposeFirst: boolean): Float64Array {
  const k = transposeFirst ? x.cols : x.rows;
  const len = transposeFirst ? x.rows : x.cols;
  const at = (p: number, j: number) => (transposeFirst ? x.data[p * x.cols + j] : x.data[j * x.cols + p]);
  const g = new Float64Array(k * k);
  for (let a = 0; a < k; a++) {
    for (let b = a; b < k; b++) {
      let s = 0;
      for (let p = 0; p < len; p++) s += at(p, a) * at(p, b);
      g[a * k + b] = s;
      g[b * k + a] = s;
    }
  }
  return g;
}

async function compareFactored(backend: LinalgBackend, result: LowRank, terms: readonly MergeTerm[]): Promise<ExactComparison> {
  const stacked = stackInputs(terms, exactCoefficients(terms));
  const { Q: qb, R: rb } = await qrThinOnBackend(backend, stacked.B);
  const { Q: qa, R: ra } = await qrThinOnBackend(backend, stacked.At);
  const K = rb.rows;
  const core = new Float64Array(K * K); // C = R_B·R_Aᵀ in f64
  for (let i = 0; i < K; i++) {
    for (let j = 0; j < K; j++) {
      let s = 0;
      for (let p = 0; p < K; p++) s += rb.data[i * K + p] * ra.data[j * K + p];
      core[i * K + j] = s;
    }
  }
  const exactSq = gramInner(core, core);
  const r = result.A.rows;
  const zeroBelow = roundoffFloor(terms, exactCoefficients(terms));
  if (r === 0) return comparison(exactSq, exactSq, zeroBelow);

  const bIn = await backend.gemm(qb, result.B, { transA: true }); // K×r
  const bOut = minus(result.B, await backend.gemm(qb, bIn)); // m×r
  const aIn = await backend.gemm(result.A, qa); // r×K
  const aOut = minus(result.A, await backend.gemm(aIn, qa, { transB: true })); // r×n

  let inside = 0; // ‖B_in·A_in − C‖²
  for (let i = 0; i < K; i++) {
    for (let j = 0; j < K; j++) {
      let s = -core[i * K + j];
      for (let p = 0; p < r; p++) s += bIn.data[i * r + p] * aIn.data[p * K + j];
      inside += s * s;
    }
  }
  const gBOut = Float64Array.from((await backend.gemm(bOut, bOut, { transA: true })).data);
  const gAOut = Float64Array.from((await backend.gemm(aOut, aOut, { transB: true })).data);
  const gBIn = gram64(bIn, true);
  const gAIn = gram64(aIn, false);
  const errorSq = inside + gramInner(gBOut, gAIn) + gramInner(gBIn, gAOut) + gramInner(gBOut, gAOut);
  return comparison(errorSq, exactSq, zeroBelow);
}

/**
 * Compares a merged module (delta = B'·A', scaling 1) with the exact weighted sum of the terms.
 * Both in PEFT's orientation; every term must have the module's shape.
 */
export async function compareToWeightedSum(
  backend: LinalgBackend,
  result: LowRank,
  terms: readonly MergeTerm[],
): Promise<ExactComparison> {
  const m = terms[0].B.rows;
  const n = terms[0].A.cols;
  const total = terms.reduce((s, t) => s + t.B.cols, 0);
  if (m * n <= DENSE_LIMIT || total >= Math.min(m, n)) return compareDense(result, terms);
  return compareFactored(backend, result, terms);
}
