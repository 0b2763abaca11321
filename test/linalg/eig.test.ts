import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { symEig } from '../../src/linalg/eig.js';
import type { Matrix } from '../../src/tensor/matrix.js';
import { gaussianMatrix, maxRelativeDiff, orthonormalityError } from './planted.js';
import { orthonormalize } from '../../src/linalg/qr.js';

/** Q·diag(λ)·Qᵀ for a seeded orthogonal Q. */
function plantedSymmetric(values: number[], seed: number): Matrix {
  const n = values.length;
  const q = orthonormalize(gaussianMatrix(n, n, seed));
  const data = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let c = 0; c < n; c++) s += q.data[i * n + c] * values[c] * q.data[j * n + c];
      data[i * n + j] = s;
    }
  }
  // exact symmetry, as a caller would pass
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) data[i * n + j] = data[j * n + i];
  return { rows: n, cols: n, data };
}

function reconstruction(m: Matrix, values: Float64Array, vectors: Matrix): number {
  const n = m.rows;
  let err = 0;
  let norm = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let c = 0; c < n; c++) s += vectors.data[i * n + c] * values[c] * vectors.data[j * n + c];
      err += (s - m.data[i * n + j]) ** 2;
      norm += m.data[i * n + j] ** 2;
    }
  }
  return Math.sqrt(err / Math.max(norm, 1e-300));
}

describe('symEig', () => {
  it('recovers planted eigenvalues (mixed signs, repeated) in descending order', () => {
    const planted = [5, -4, 3, 3, 0.5, 0, -0.25, 2, 1e-3, -7];
    const m = plantedSymmetric(planted, 3);
    const { values, vectors } = symEig(m);
    const expect = [...planted].sort((a, b) => b - a);
    for (let i = 0; i < expect.length; i++) assert.ok(Math.abs(values[i] - expect[i]) < 1e-5, `λ${i} ${values[i]} vs ${expect[i]}`);
    assert.ok(orthonormalityError(vectors) < 1e-6);
    assert.ok(reconstruction(m, values, vectors) < 1e-6);
  });

  it('diagonalises a random symmetric matrix: A·v = λ·v', () => {
    const g = gaussianMatrix(40, 40, 8);
    const n = 40;
    const data = new Float32Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) data[i * n + j] = g.data[i * n + j] + g.data[j * n + i];
    const m = { rows: n, cols: n, data };
    const { values, vectors } = symEig(m);
    for (const c of [0, 17, 39]) {
      let worst = 0;
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let j = 0; j < n; j++) s += data[i * n + j] * vectors.data[j * n + c];
        worst = Math.max(worst, Math.abs(s - values[c] * vectors.data[i * n + c]));
      }
      assert.ok(worst < 1e-4, `column ${c}: ${worst}`);
    }
    // trace is the sum of eigenvalues
    let trace = 0;
    for (let i = 0; i < n; i++) trace += data[i * n + i];
    assert.ok(Math.abs(values.reduce((a, b) => a + b, 0) - trace) < 1e-4);
  });

  it('handles 1×1, diagonal and zero matrices and follows the sign convention', () => {
    assert.deepEqual([...symEig({ rows: 1, cols: 1, data: Float32Array.of(-2) }).values], [-2]);
    const diag = symEig({ rows: 3, cols: 3, data: Float32Array.of(1, 0, 0, 0, 3, 0, 0, 0, 2) });
    assert.ok(maxRelativeDiff(diag.values, [3, 2, 1]) === 0);
    assert.deepEqual([...diag.vectors.data], [0, 0, 1, 1, 0, 0, 0, 1, 0]);
    const zero = symEig({ rows: 4, cols: 4, data: new Float32Array(16) });
    assert.ok(zero.values.every((x) => x === 0));
    assert.ok(orthonormalityError(zero.vectors) === 0);
    const { vectors } = symEig(plantedSymmetric([2, 1, -1], 5));
    for (let c = 0; c < 3; c++) {
      const col = [0, 1, 2].map((i) => vectors.data[i * 3 + c]);
      const big = col.reduce((a, b) => (Math.abs(b) > Math.abs(a) ? b : a));
      assert.ok(big > 0);
    }
  });

  it('rejects non-square input', () => {
    assert.throws(() => symEig(gaussianMatrix(3, 4, 1)), /square/);
  });
});
