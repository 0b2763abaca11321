/**
 * Householder QR in TypeScript, f64 throughout. The matrices that reach it are tall and thin
 * (a range-finder block: rows ≈ 4k–20k, cols ≤ ~100), where the O(rows·cols²) cost is small next
 * to the GEMMs that produced them, so no native LAPACK is needed.
 *
 * Work is done column-major (each column a contiguous run of a Float64Array) and blocked: a panel
 * of PANEL columns is factored one reflector at a time, then its reflectors reach the rest of the
 * matrix at once in compact WY form (I − V·T·Vᵀ, Schreiber & Van Loan), whose two products are
 * register-blocked 4×4 like a GEMM. In V8 that is ~3x faster than reflector-by-reflector updates
 * (orthonormalize of 11008×80: 320 ms → 95–130 ms on one Zen 3 core, depending on the load).
 *
 * For the tall, well-conditioned blocks of a power iteration, `qrThinOnBackend` at the end of this
 * file does the same job in a few GEMMs (CholeskyQR2) and falls back to Householder otherwise.
 *
 * Rank-deficient input needs no special case: a column with nothing left below the diagonal gets
 * the identity reflector (τ = 0), R gets a zero (or tiny) diagonal entry and Q still gets an
 * orthonormal column, so the result is always finite and Q always has orthonormal columns.
 */
import type { Matrix } from '../tensor/matrix.js';
import type { LinalgBackend } from './backend.js';

/**
 * A factored A = H_0·H_1·…·H_{n−1}·[R; 0], reflectors H_j = I − τ_j·v_j·v_jᵀ with v_j[j] = 1,
 * grouped in panels of PANEL columns: panel p (columns p·PANEL…) is I − V_p·T_p·V_pᵀ.
 */
export interface HouseholderFactors {
  rows: number;
  cols: number;
  /** column-major rows×cols: R on and above the diagonal, v_j below it (v_j[j] = 1 implied) */
  packed: Float64Array;
  tau: Float64Array;
  /** per panel, its upper-triangular T (jb×jb, column-major) */
  panelT: Float64Array[];
}

/**
 * Columns per panel. Any width makes the trailing update matrix-matrix work; the narrowest one
 * (the register block) measured fastest for 11008×80 (4: 95 ms, 8: 105 ms, 16: 129 ms) because in
 * V8 the cost is instructions, not memory traffic, and narrow panels factor more cheaply.
 */
const PANEL = 4;
/** Register-block width of the panel kernels; panels are padded to a multiple of it. */
const RB = 4;

/** Column-major f64 copy of a row-major f32 matrix. */
export function toColumnMajor64(m: Matrix): Float64Array {
  const { rows, cols, data } = m;
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) {
    const src = i * cols;
    for (let j = 0; j < cols; j++) out[j * rows + i] = data[src + j];
  }
  return out;
}

/** Row-major f32 matrix from the first `cols` columns of a column-major f64 array. */
export function fromColumnMajor64(x: Float64Array, rows: number, cols: number): Matrix {
  const data = new Float32Array(rows * cols);
  for (let j = 0; j < cols; j++) {
    const src = j * rows;
    for (let i = 0; i < rows; i++) data[i * cols + j] = x[src + i];
  }
  return { rows, cols, data };
}

/**
 * Applies H = I − τ·v·vᵀ (v[start] = 1, v below it stored in `x` at vOffset + i) to columns
 * [from, to) of the column-major `y` (leading dimension `rows`), rows start..rows-1 only.
 * Used inside a panel, where the work is O(rows·PANEL²).
 */
function applyReflector(
  x: Float64Array,
  vOffset: number,
  tau: number,
  y: Float64Array,
  rows: number,
  start: number,
  from: number,
  to: number,
): void {
  if (tau === 0) return;
  for (let c = from; c < to; c++) {
    const o = c * rows;
    let s = y[o + start];
    for (let i = start + 1; i < rows; i++) s += x[vOffset + i] * y[o + i];
    s *= tau;
    y[o + start] -= s;
    for (let i = start + 1; i < rows; i++) y[o + i] -= s * x[vOffset + i];
  }
}

/**
 * The panel's reflectors as a dense column-major (rows−j0)×width block (width = jb rounded up to
 * RB, extra columns zero), with the implied ones and zeros written out so the kernels below need
 * no special cases.
 */
function densePanelV(f: HouseholderFactors, j0: number, jb: number, width: number): Float64Array {
  const { rows, packed } = f;
  const h = rows - j0;
  const v = new Float64Array(h * width);
  for (let t = 0; t < jb; t++) {
    const j = j0 + t;
    v[t * h + t] = 1;
    for (let i = j + 1; i < rows; i++) v[t * h + (i - j0)] = packed[j * rows + i];
  }
  return v;
}

/**
 * W (width×count, column-major) = Vᵀ·Y over rows j0… of the column-major `y` (leading dim ld).
 * 4×4 register blocks: per row, 8 loads feed 16 multiply-adds.
 */
function panelTransposeTimes(
  v: Float64Array,
  h: number,
  width: number,
  y: Float64Array,
  ld: number,
  j0: number,
  count: number,
): Float64Array {
  const w = new Float64Array(width * count);
  for (let t = 0; t < width; t += RB) {
    const v0 = t * h, v1 = v0 + h, v2 = v1 + h, v3 = v2 + h;
    let c = 0;
    for (; c + RB <= count; c += RB) {
      const y0 = c * ld + j0, y1 = y0 + ld, y2 = y1 + ld, y3 = y2 + ld;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      for (let i = 0; i < h; i++) {
        const a0 = v[v0 + i], a1 = v[v1 + i], a2 = v[v2 + i], a3 = v[v3 + i];
        const b0 = y[y0 + i], b1 = y[y1 + i], b2 = y[y2 + i], b3 = y[y3 + i];
        s00 += a0 * b0; s01 += a0 * b1; s02 += a0 * b2; s03 += a0 * b3;
        s10 += a1 * b0; s11 += a1 * b1; s12 += a1 * b2; s13 += a1 * b3;
        s20 += a2 * b0; s21 += a2 * b1; s22 += a2 * b2; s23 += a2 * b3;
        s30 += a3 * b0; s31 += a3 * b1; s32 += a3 * b2; s33 += a3 * b3;
      }
      const o = c * width + t;
      w[o] = s00; w[o + 1] = s10; w[o + 2] = s20; w[o + 3] = s30;
      w[o + width] = s01; w[o + width + 1] = s11; w[o + width + 2] = s21; w[o + width + 3] = s31;
      w[o + 2 * width] = s02; w[o + 2 * width + 1] = s12; w[o + 2 * width + 2] = s22; w[o + 2 * width + 3] = s32;
      w[o + 3 * width] = s03; w[o + 3 * width + 1] = s13; w[o + 3 * width + 2] = s23; w[o + 3 * width + 3] = s33;
    }
    for (; c < count; c++) {
      const y0 = c * ld + j0;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < h; i++) {
        const b = y[y0 + i];
        s0 += v[v0 + i] * b; s1 += v[v1 + i] * b; s2 += v[v2 + i] * b; s3 += v[v3 + i] * b;
      }
      const o = c * width + t;
      w[o] = s0; w[o + 1] = s1; w[o + 2] = s2; w[o + 3] = s3;
    }
  }
  return w;
}

/** Y −= V·W over rows j0… of `y`; the same 4×4 blocking, W's block held in locals. */
function panelSubtractTimes(
  v: Float64Array,
  h: number,
  width: number,
  w: Float64Array,
  y: Float64Array,
  ld: number,
  j0: number,
  count: number,
): void {
  for (let t = 0; t < width; t += RB) {
    const v0 = t * h, v1 = v0 + h, v2 = v1 + h, v3 = v2 + h;
    let c = 0;
    for (; c + RB <= count; c += RB) {
      const y0 = c * ld + j0, y1 = y0 + ld, y2 = y1 + ld, y3 = y2 + ld;
      const o = c * width + t;
      const w00 = w[o], w10 = w[o + 1], w20 = w[o + 2], w30 = w[o + 3];
      const w01 = w[o + width], w11 = w[o + width + 1], w21 = w[o + width + 2], w31 = w[o + width + 3];
      const w02 = w[o + 2 * width], w12 = w[o + 2 * width + 1], w22 = w[o + 2 * width + 2], w32 = w[o + 2 * width + 3];
      const w03 = w[o + 3 * width], w13 = w[o + 3 * width + 1], w23 = w[o + 3 * width + 2], w33 = w[o + 3 * width + 3];
      for (let i = 0; i < h; i++) {
        const a0 = v[v0 + i], a1 = v[v1 + i], a2 = v[v2 + i], a3 = v[v3 + i];
        y[y0 + i] -= a0 * w00 + a1 * w10 + a2 * w20 + a3 * w30;
        y[y1 + i] -= a0 * w01 + a1 * w11 + a2 * w21 + a3 * w31;
        y[y2 + i] -= a0 * w02 + a1 * w12 + a2 * w22 + a3 * w32;
        y[y3 + i] -= a0 * w03 + a1 * w13 + a2 * w23 + a3 * w33;
      }
    }
    for (; c < count; c++) {
      const y0 = c * ld + j0;
      const o = c * width + t;
      const w0 = w[o], w1 = w[o + 1], w2 = w[o + 2], w3 = w[o + 3];
      for (let i = 0; i < h; i++) y[y0 + i] -= v[v0 + i] * w0 + v[v1 + i] * w1 + v[v2 + i] * w2 + v[v3 + i] * w3;
    }
  }
}

/**
 * T of the compact WY form H_{j0}·…·H_{j0+jb−1} = I − V·T·Vᵀ (upper triangular, column-major
 * jb×jb): T[t,t] = τ_t, T[0:t, t] = −τ_t·T[0:t, 0:t]·(V[:, 0:t]ᵀ·v_t).
 */
function panelT(v: Float64Array, h: number, jb: number, tau: Float64Array, j0: number): Float64Array {
  const tm = new Float64Array(jb * jb);
  const z = new Float64Array(jb);
  for (let t = 0; t < jb; t++) {
    const tauT = tau[j0 + t];
    tm[t * jb + t] = tauT;
    if (tauT === 0) continue; // H_t = I: its column of T stays zero
    for (let s = 0; s < t; s++) {
      let d = 0;
      // v_t is zero above row t, so the dot starts there
      for (let i = t; i < h; i++) d += v[s * h + i] * v[t * h + i];
      z[s] = d;
    }
    for (let r = 0; r < t; r++) {
      let acc = 0;
      for (let s = r; s < t; s++) acc += tm[s * jb + r] * z[s];
      tm[t * jb + r] = -tauT * acc;
    }
  }
  return tm;
}

/** W ← T·W (or Tᵀ·W) in place; T upper triangular jb×jb, W width×count (rows ≥ jb are zero). */
function triangularTimes(tm: Float64Array, jb: number, w: Float64Array, width: number, count: number, transposed: boolean): void {
  const col = new Float64Array(jb);
  for (let c = 0; c < count; c++) {
    const o = c * width;
    for (let r = 0; r < jb; r++) col[r] = w[o + r];
    for (let r = 0; r < jb; r++) {
      let acc = 0;
      if (transposed) for (let s = 0; s <= r; s++) acc += tm[r * jb + s] * col[s];
      else for (let s = r; s < jb; s++) acc += tm[s * jb + r] * col[s];
      w[o + r] = acc;
    }
  }
}

/**
 * Y ← (I − V·T·Vᵀ)·Y, or with Tᵀ, for panel `p` of `f`: columns [from, to) of the column-major
 * `y`, rows j0… (rows above are untouched by this panel's reflectors).
 */
function applyPanel(f: HouseholderFactors, p: number, y: Float64Array, from: number, to: number, transposed: boolean): void {
  const j0 = p * PANEL;
  const jb = Math.min(PANEL, f.cols - j0);
  const count = to - from;
  if (count <= 0) return;
  const width = Math.ceil(jb / RB) * RB;
  const h = f.rows - j0;
  const v = densePanelV(f, j0, jb, width);
  const yOffset = from * f.rows;
  const ySub = yOffset === 0 ? y : y.subarray(yOffset);
  const w = panelTransposeTimes(v, h, width, ySub, f.rows, j0, count);
  triangularTimes(f.panelT[p], jb, w, width, count, transposed);
  panelSubtractTimes(v, h, width, w, ySub, f.rows, j0, count);
}

/**
 * ‖x[from..to)‖ given the plain sum of squares; recomputed with scaling only when that sum
 * overflowed or lost precision to underflow (never for data that came from f32).
 */
function columnNorm(x: Float64Array, from: number, to: number, sumSq: number): number {
  if (sumSq < Number.MAX_VALUE && sumSq > 1e-290) return Math.sqrt(sumSq);
  let scale = 0;
  for (let i = from; i < to; i++) scale = Math.max(scale, Math.abs(x[i]));
  if (scale === 0) return 0;
  const inv = 1 / scale;
  let scaled = 0;
  for (let i = from; i < to; i++) scaled += (x[i] * inv) ** 2;
  return scale * Math.sqrt(scaled);
}

/** Householder QR of a column-major f64 rows×cols array (rows ≥ cols), in place. */
export function householderQr64(a: Float64Array, rows: number, cols: number): HouseholderFactors {
  if (rows < cols) {
    throw new Error(`linalg/qr.ts: thin QR needs rows ≥ cols, got ${rows}×${cols}; factor the transpose instead`);
  }
  const tau = new Float64Array(cols);
  const f: HouseholderFactors = { rows, cols, packed: a, tau, panelT: [] };
  for (let j0 = 0; j0 < cols; j0 += PANEL) {
    const jEnd = Math.min(j0 + PANEL, cols);
    for (let j = j0; j < jEnd; j++) {
      const o = j * rows;
      let below = 0;
      for (let i = j + 1; i < rows; i++) below += a[o + i] * a[o + i];
      if (below === 0) continue; // nothing below the diagonal: H_j = I, τ_j = 0
      const alpha = a[o + j];
      const norm = columnNorm(a, o + j, o + rows, alpha * alpha + below);
      const beta = alpha >= 0 ? -norm : norm; // opposite sign to alpha: no cancellation in alpha − beta
      tau[j] = (beta - alpha) / beta;
      const inv = 1 / (alpha - beta);
      for (let i = j + 1; i < rows; i++) a[o + i] *= inv;
      a[o + j] = beta;
      applyReflector(a, o, tau[j], a, rows, j, j + 1, jEnd);
    }
    const jb = jEnd - j0;
    const v = densePanelV(f, j0, jb, Math.ceil(jb / RB) * RB);
    f.panelT.push(panelT(v, rows - j0, jb, tau, j0));
    // the trailing columns get this panel's Qᵀ = I − V·Tᵀ·Vᵀ in one matrix-matrix step
    applyPanel(f, f.panelT.length - 1, a, jEnd, cols, true);
  }
  return f;
}

/** Q·y in place for a column-major rows×count `y`: the panels' I − V·T·Vᵀ, last panel first. */
export function applyQ64(f: HouseholderFactors, y: Float64Array, count: number): void {
  for (let p = f.panelT.length - 1; p >= 0; p--) applyPanel(f, p, y, 0, count, false);
}

/** The explicit thin Q (column-major rows×cols, orthonormal columns). */
export function explicitQ64(f: HouseholderFactors): Float64Array {
  const { rows, cols } = f;
  const q = new Float64Array(rows * cols);
  for (let j = 0; j < cols; j++) q[j * rows + j] = 1;
  // Going backwards, panel p meets only columns ≥ its first: the earlier ones are still e_c,
  // zero from that row on.
  for (let p = f.panelT.length - 1; p >= 0; p--) applyPanel(f, p, q, p * PANEL, cols, false);
  return q;
}

/** R (cols×cols, upper triangular) as a row-major f64 array. */
export function upperR64(f: HouseholderFactors): Float64Array {
  const { rows, cols, packed } = f;
  const r = new Float64Array(cols * cols);
  for (let j = 0; j < cols; j++) {
    for (let i = 0; i <= j; i++) r[i * cols + j] = packed[j * rows + i];
  }
  return r;
}

/** Thin QR, rows ≥ cols: m = Q·R, Q rows×cols with orthonormal columns, R cols×cols upper triangular. */
export function qrThin(m: Matrix): { Q: Matrix; R: Matrix } {
  const f = householderQr64(toColumnMajor64(m), m.rows, m.cols);
  const Q = fromColumnMajor64(explicitQ64(f), m.rows, m.cols);
  const R = { rows: m.cols, cols: m.cols, data: Float32Array.from(upperR64(f)) };
  return { Q, R };
}

/**
 * Q of the thin QR alone (rows ≥ cols): orthonormal columns whose first j span the first j columns
 * of m whenever those are independent.
 */
export function orthonormalize(m: Matrix): Matrix {
  const f = householderQr64(toColumnMajor64(m), m.rows, m.cols);
  return fromColumnMajor64(explicitQ64(f), m.rows, m.cols);
}

// --- CholeskyQR2 on a GEMM backend, with Householder as the safety net ---------------------------

/** Pivots below this fraction of their column's own energy mean Y is too close to rank-deficient for CholeskyQR. */
const CHOLESKY_PIVOT_FLOOR = 1e-5;
/**
 * Largest |QᵀQ − I| entry accepted from CholeskyQR2 before falling back to Householder: a few
 * times what f32 Householder achieves (typical CholeskyQR2 results: ~3e-7 at k = 40).
 */
const ORTHONORMALITY_TOLERANCE = 2e-6;

/**
 * The Cholesky factor R (G = RᵀR, upper triangular, row-major f64) of a k×k Gram matrix, or
 * undefined when a pivot is not comfortably positive (dependent or zero columns).
 */
function choleskyFactor(gram: Matrix): Float64Array | undefined {
  const k = gram.rows;
  const r = new Float64Array(k * k);
  for (let j = 0; j < k; j++) {
    const gjj = gram.data[j * k + j];
    let d = gjj;
    for (let p = 0; p < j; p++) d -= r[p * k + j] ** 2;
    if (!(d > CHOLESKY_PIVOT_FLOOR * gjj)) return undefined;
    const rjj = Math.sqrt(d);
    r[j * k + j] = rjj;
    for (let i = j + 1; i < k; i++) {
      let s = 0.5 * (gram.data[j * k + i] + gram.data[i * k + j]);
      for (let p = 0; p < j; p++) s -= r[p * k + j] * r[p * k + i];
      r[j * k + i] = s / rjj;
    }
  }
  return r;
}

/** R⁻¹ of an upper-triangular row-major f64 R, as an f32 matrix (back substitution per column). */
function invertUpper(r: Float64Array, k: number): Matrix {
  const inv = new Float64Array(k * k);
  for (let c = 0; c < k; c++) {
    for (let i = c; i >= 0; i--) {
      let s = i === c ? 1 : 0;
      for (let p = i + 1; p <= c; p++) s -= r[i * k + p] * inv[p * k + c];
      inv[i * k + c] = s / r[i * k + i];
    }
  }
  return { rows: k, cols: k, data: Float32Array.from(inv) };
}

/** R2·R1 for upper-triangular row-major f64 factors, as an f32 matrix. */
function multiplyUpper(r2: Float64Array, r1: Float64Array, k: number): Matrix {
  const out = new Float32Array(k * k);
  for (let i = 0; i < k; i++) {
    for (let j = i; j < k; j++) {
      let s = 0;
      for (let p = i; p <= j; p++) s += r2[i * k + p] * r1[p * k + j];
      out[i * k + j] = s;
    }
  }
  return { rows: k, cols: k, data: out };
}

function maxOffIdentity(m: Matrix): number {
  let worst = 0;
  for (let i = 0; i < m.rows; i++) {
    for (let j = 0; j < m.cols; j++) worst = Math.max(worst, Math.abs(m.data[i * m.cols + j] - (i === j ? 1 : 0)));
  }
  return worst;
}

/**
 * Thin QR of a tall y (rows ≥ cols), same contract as qrThin: CholeskyQR2 (Fukaya et al. 2014) in five small GEMMs on the backend when
 * y's columns are far enough from dependent — ~10x cheaper than Householder in TypeScript, and the
 * usual case once a power iteration has separated the directions — else Householder. The
 * CholeskyQR2 result is checked (QᵀQ ≈ I) before it is trusted, so Q is always orthonormal.
 */
export async function qrThinOnBackend(backend: LinalgBackend, y: Matrix): Promise<{ Q: Matrix; R: Matrix }> {
  if (y.rows < y.cols) return qrThin(y); // which explains why it cannot
  const r1 = choleskyFactor(await backend.gemm(y, y, { transA: true }));
  if (r1) {
    const q1 = await backend.gemm(y, invertUpper(r1, y.cols));
    const r2 = choleskyFactor(await backend.gemm(q1, q1, { transA: true }));
    if (r2) {
      const q = await backend.gemm(q1, invertUpper(r2, y.cols));
      if (maxOffIdentity(await backend.gemm(q, q, { transA: true })) <= ORTHONORMALITY_TOLERANCE) {
        return { Q: q, R: multiplyUpper(r2, r1, y.cols) };
      }
    }
  }
  return qrThin(y);
}

/**
 * A basis of y's range with columns orthonormal only roughly (to about κ(y)²·ε): one CholeskyQR
 * pass, two small GEMMs, where CholeskyQR2 takes five. Enough between the products of a power
 * iteration, whose job is to keep f32 round-off from washing out weak directions, not to be
 * orthonormal; the basis that is used afterwards comes from orthonormalizeOnBackend.
 */
export async function normalizeOnBackend(backend: LinalgBackend, y: Matrix): Promise<Matrix> {
  if (y.rows < y.cols) return qrThin(y).Q;
  const r = choleskyFactor(await backend.gemm(y, y, { transA: true }));
  // the same Gram matrix would fail CholeskyQR2's first step too: straight to Householder
  return r ? backend.gemm(y, invertUpper(r, y.cols)) : qrThin(y).Q;
}

/** Q of `qrThinOnBackend`: an orthonormal basis whose leading columns span y's leading columns. */
export async function orthonormalizeOnBackend(backend: LinalgBackend, y: Matrix): Promise<Matrix> {
  return (await qrThinOnBackend(backend, y)).Q;
}
