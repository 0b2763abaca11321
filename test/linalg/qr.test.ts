import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LinalgBackend } from '../../src/linalg/backend.js';
import { getBackend } from '../../src/linalg/index.js';
import { normalizeOnBackend, orthonormalize, orthonormalizeOnBackend, qrThin, qrThinOnBackend } from '../../src/linalg/qr.js';
import type { Matrix } from '../../src/tensor/matrix.js';
import { gaussianMatrix, orthonormalityError, plantedMatrix } from './planted.js';

/** max |Q·R − m| / max |m|, in f64. */
function reconstructionError(m: Matrix, Q: Matrix, R: Matrix): number {
  const k = Q.cols;
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < m.rows; i++) {
    for (let j = 0; j < m.cols; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += Q.data[i * k + p] * R.data[p * m.cols + j];
      worst = Math.max(worst, Math.abs(s - m.data[i * m.cols + j]));
      scale = Math.max(scale, Math.abs(m.data[i * m.cols + j]));
    }
  }
  return scale === 0 ? worst : worst / scale;
}

function withZeroColumns(m: Matrix, cols: number[]): Matrix {
  const data = m.data.slice();
  for (let i = 0; i < m.rows; i++) for (const c of cols) data[i * m.cols + c] = 0;
  return { rows: m.rows, cols: m.cols, data };
}

describe('qr', () => {
  it('qrThin: Q orthonormal, R upper triangular, Q·R = m, for tall, square and panel-ragged shapes', () => {
    for (const [rows, cols] of [[1, 1], [5, 1], [9, 4], [37, 37], [300, 23], [1000, 65]]) {
      const m = gaussianMatrix(rows, cols, rows + cols);
      const { Q, R } = qrThin(m);
      assert.deepEqual([Q.rows, Q.cols, R.rows, R.cols], [rows, cols, cols, cols]);
      assert.ok(orthonormalityError(Q) < 1e-6, `${rows}×${cols} orthonormality ${orthonormalityError(Q)}`);
      for (let i = 0; i < cols; i++) for (let j = 0; j < i; j++) assert.equal(R.data[i * cols + j], 0);
      const err = reconstructionError(m, Q, R);
      assert.ok(err < 1e-6, `${rows}×${cols} reconstruction ${err}`);
    }
  });

  it('handles rank-deficient input: zero and repeated columns give finite, orthonormal Q', () => {
    const base = withZeroColumns(gaussianMatrix(200, 12, 3), [0, 5, 11]);
    for (let i = 0; i < 200; i++) base.data[i * 12 + 7] = base.data[i * 12 + 2]; // column 7 = column 2
    const { Q, R } = qrThin(base);
    assert.ok(Q.data.every(Number.isFinite) && R.data.every(Number.isFinite));
    assert.ok(orthonormalityError(Q) < 1e-6);
    assert.ok(reconstructionError(base, Q, R) < 1e-6);
    assert.equal(R.data[0], 0); // a zero first column: R[0][0] = 0
    assert.ok(Math.abs(R.data[7 * 12 + 7]) < 1e-5, `R77 = ${R.data[7 * 12 + 7]}`);
  });

  it('the all-zero matrix gives the leading identity columns and R = 0', () => {
    const { Q, R } = qrThin({ rows: 6, cols: 3, data: new Float32Array(18) });
    assert.ok(R.data.every((x) => x === 0));
    assert.ok(orthonormalityError(Q) === 0);
  });

  it('orthonormalize spans the same leading subspaces as the input', () => {
    const m = gaussianMatrix(500, 20, 8);
    const q = orthonormalize(m);
    assert.ok(orthonormalityError(q) < 1e-6);
    // column j of m lies in span(q_0..q_j): its part outside is zero
    for (const j of [0, 7, 19]) {
      const proj = new Float64Array(500);
      for (let c = 0; c <= j; c++) {
        let d = 0;
        for (let i = 0; i < 500; i++) d += q.data[i * 20 + c] * m.data[i * 20 + j];
        for (let i = 0; i < 500; i++) proj[i] += d * q.data[i * 20 + c];
      }
      let out = 0;
      let norm = 0;
      for (let i = 0; i < 500; i++) {
        out += (m.data[i * 20 + j] - proj[i]) ** 2;
        norm += m.data[i * 20 + j] ** 2;
      }
      assert.ok(Math.sqrt(out / norm) < 1e-6, `column ${j}`);
    }
  });

  it('copes with huge and tiny magnitudes without overflow or underflow', () => {
    for (const scale of [1e-30, 1e30]) {
      const m = gaussianMatrix(50, 5, 2);
      for (let i = 0; i < m.data.length; i++) m.data[i] *= scale;
      const { Q, R } = qrThin(m);
      assert.ok(orthonormalityError(Q) < 1e-6, `scale ${scale}`);
      assert.ok(reconstructionError(m, Q, R) < 1e-6, `scale ${scale}`);
    }
  });

  it('rejects wide input', () => {
    assert.throws(() => qrThin(gaussianMatrix(3, 5, 1)), /rows ≥ cols/);
  });
});

describe('qrThinOnBackend (CholeskyQR2 with Householder fallback)', async () => {
  const ort = await getBackend({ threads: 2 });
  /** the backend, counting its GEMM calls */
  const counting = (): { backend: LinalgBackend; calls: () => number } => {
    let calls = 0;
    return {
      backend: { name: 'counting', gemm: (a, b, o) => (calls++, ort.gemm(a, b, o)) },
      calls: () => calls,
    };
  };

  it('factors a well-conditioned block in GEMMs: Q orthonormal, R upper triangular, Q·R = y', async () => {
    const y = gaussianMatrix(3000, 40, 21);
    const { backend, calls } = counting();
    const { Q, R } = await qrThinOnBackend(backend, y);
    assert.equal(calls(), 5, 'two Cholesky passes and the check');
    assert.ok(orthonormalityError(Q) < 2e-6, `${orthonormalityError(Q)}`);
    for (let i = 0; i < 40; i++) for (let j = 0; j < i; j++) assert.equal(R.data[i * 40 + j], 0);
    assert.ok(reconstructionError(y, Q, R) < 1e-5);
    // R agrees with Householder's up to the signs of its rows
    const h = qrThin(y);
    for (let i = 0; i < 40; i++) assert.ok(Math.abs(Math.abs(R.data[i * 41]) - Math.abs(h.R.data[i * 41])) < 1e-4 * Math.abs(h.R.data[i * 41]));
  });

  it('falls back to Householder for rank-deficient and ill-conditioned input', async () => {
    const zeroCol = gaussianMatrix(500, 10, 22);
    for (let i = 0; i < 500; i++) zeroCol.data[i * 10 + 4] = 0;
    const { a: lowRank } = plantedMatrix(500, 12, [1, 1e-3, 1e-6, 1e-9], 23);
    for (const y of [zeroCol, lowRank]) {
      const { backend, calls } = counting();
      const { Q, R } = await qrThinOnBackend(backend, y);
      assert.ok(calls() < 5);
      assert.ok(Q.data.every(Number.isFinite));
      assert.ok(orthonormalityError(Q) < 1e-6);
      assert.ok(reconstructionError(y, Q, R) < 1e-5);
    }
    const q = await orthonormalizeOnBackend(ort, lowRank);
    assert.ok(orthonormalityError(q) < 1e-6);
  });
});

describe('normalizeOnBackend (one CholeskyQR pass, Householder fallback)', async () => {
  const ort = await getBackend({ threads: 2 });

  it('gives a well-conditioned basis of the same space in two GEMMs', async () => {
    const y = gaussianMatrix(3000, 40, 31);
    let calls = 0;
    const q = await normalizeOnBackend({ name: 'counting', gemm: (a, b, o) => (calls++, ort.gemm(a, b, o)) }, y);
    assert.equal(calls, 2, 'the Gram matrix and the triangular solve');
    assert.ok(orthonormalityError(q) < 1e-4, `${orthonormalityError(q)}`);
    // y = q·(qᵀy): projecting onto q's span loses nothing of y
    const coef = await ort.gemm(q, y, { transA: true });
    assert.ok(reconstructionError(y, q, coef) < 1e-4);
  });

  it('falls straight back to Householder when the Cholesky factor fails', async () => {
    const y = gaussianMatrix(500, 10, 32);
    for (let i = 0; i < 500; i++) y.data[i * 10 + 4] = 0;
    let calls = 0;
    const q = await normalizeOnBackend({ name: 'counting', gemm: (a, b, o) => (calls++, ort.gemm(a, b, o)) }, y);
    assert.equal(calls, 1, 'only the Gram matrix: no second attempt through CholeskyQR2');
    assert.ok(q.data.every(Number.isFinite));
    assert.ok(orthonormalityError(q) < 1e-6);
  });
});

