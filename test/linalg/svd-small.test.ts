import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { symEig } from '../../src/linalg/eig.js';
import { svdSmall } from '../../src/linalg/svd-small.js';
import type { Matrix } from '../../src/tensor/matrix.js';
import { transpose } from '../../src/tensor/matrix.js';
import { gaussianMatrix, maxRelativeDiff, orthonormalityError, plantedMatrix, reconstructionError } from './planted.js';

function frob(m: Matrix): number {
  let s = 0;
  for (const x of m.data) s += x * x;
  return Math.sqrt(s);
}

/** the sign convention: each column of V has its largest-|.| entry positive */
function assertCanonicalSigns(V: Matrix): void {
  for (let c = 0; c < V.cols; c++) {
    let best = 0;
    let at = 0;
    for (let i = 0; i < V.rows; i++) {
      if (Math.abs(V.data[i * V.cols + c]) > best) {
        best = Math.abs(V.data[i * V.cols + c]);
        at = i;
      }
    }
    assert.ok(V.data[at * V.cols + c] >= 0, `column ${c}`);
  }
}

function checkSvd(m: Matrix, tol: number): { S: Float64Array } {
  const { U, S, V } = svdSmall(m);
  const k = Math.min(m.rows, m.cols);
  assert.deepEqual([U.rows, U.cols, S.length, V.rows, V.cols], [m.rows, k, k, m.cols, k]);
  for (let i = 1; i < k; i++) assert.ok(S[i] <= S[i - 1], 'descending');
  assert.ok(orthonormalityError(U) < tol, `U orthonormality ${orthonormalityError(U)}`);
  assert.ok(orthonormalityError(V) < tol, `V orthonormality ${orthonormalityError(V)}`);
  const scale = Math.max(frob(m), 1e-30);
  assert.ok(reconstructionError(m, U, S, V) / scale < tol, `reconstruction ${reconstructionError(m, U, S, V) / scale}`);
  assertCanonicalSigns(V);
  return { S };
}

describe('svdSmall', () => {
  it('recovers a planted spectrum, tall and wide, including tiny singular values', () => {
    const plant = [10, 5, 2, 1, 0.1, 1e-3, 1e-4];
    for (const [rows, cols] of [[120, 7], [7, 120], [40, 30], [30, 40]]) {
      const s = plant.slice(0, Math.min(rows, cols, plant.length));
      const { a } = plantedMatrix(rows, cols, s, rows * 3 + cols);
      const { S } = checkSvd(a, 1e-6);
      // f32 input: each σ is known to ~1e-7·σ_max absolutely
      for (let i = 0; i < s.length; i++) {
        assert.ok(Math.abs(S[i] - s[i]) <= 1e-6 * s[0] + 1e-5 * s[i], `${rows}×${cols} σ${i} ${S[i]} vs ${s[i]}`);
      }
      for (let i = s.length; i < S.length; i++) assert.ok(S[i] < 1e-5 * s[0], `σ${i} = ${S[i]} should be ~0`);
    }
  });

  it('gives singular values agreeing with the eigenvalues of AᵀA (independent route)', () => {
    const a = gaussianMatrix(60, 25, 4);
    const { S } = svdSmall(a);
    const gram = new Float32Array(25 * 25);
    for (let i = 0; i < 25; i++) {
      for (let j = 0; j < 25; j++) {
        let s = 0;
        for (let r = 0; r < 60; r++) s += a.data[r * 25 + i] * a.data[r * 25 + j];
        gram[i * 25 + j] = s;
      }
    }
    const { values } = symEig({ rows: 25, cols: 25, data: gram });
    assert.ok(maxRelativeDiff(S.map((x) => x * x), values) < 1e-5);
  });

  it('handles repeated singular values', () => {
    const s = [3, 3, 3, 1, 1];
    const { a } = plantedMatrix(50, 20, s, 9);
    const { S } = checkSvd(a, 1e-6);
    assert.ok(maxRelativeDiff(S.slice(0, 5), s) < 1e-5);
  });

  it('handles the zero matrix, rank one, and 1×n / n×1 without NaN', () => {
    const zero = { rows: 9, cols: 4, data: new Float32Array(36) };
    const z = svdSmall(zero);
    assert.ok(z.S.every((x) => x === 0));
    assert.ok(orthonormalityError(z.U) < 1e-6 && orthonormalityError(z.V) < 1e-6);

    const { a: rankOne } = plantedMatrix(30, 20, [4], 2);
    const { S } = checkSvd(rankOne, 1e-6);
    assert.ok(Math.abs(S[0] - 4) < 1e-5 && S[1] < 1e-5);

    for (const m of [gaussianMatrix(1, 17, 3), gaussianMatrix(17, 1, 3), gaussianMatrix(1, 1, 5)]) {
      const { S: s1 } = checkSvd(m, 1e-6);
      assert.ok(Math.abs(s1[0] - frob(m)) < 1e-6 * frob(m));
    }
    const empty = svdSmall({ rows: 0, cols: 5, data: new Float32Array(0) });
    assert.deepEqual([empty.U.rows, empty.U.cols, empty.S.length, empty.V.rows, empty.V.cols], [0, 0, 0, 5, 0]);
  });

  it('completes the basis for exactly-zero singular values (zero columns)', () => {
    const a = gaussianMatrix(15, 6, 1);
    for (let i = 0; i < 15; i++) {
      a.data[i * 6 + 1] = 0;
      a.data[i * 6 + 4] = 0;
    }
    const { S } = checkSvd(a, 1e-6);
    assert.equal(S[4], 0);
    assert.equal(S[5], 0);
  });

  it('stays orthonormal and exact when singular values fall far below f32 resolution', () => {
    const graded = plantedMatrix(200, 60, Array.from({ length: 60 }, (_, i) => 10 ** ((-12 * i) / 59)), 13).a;
    const dup = gaussianMatrix(100, 30, 14);
    for (let i = 0; i < 100; i++) for (let c = 15; c < 30; c++) dup.data[i * 30 + c] = 2 * dup.data[i * 30 + c - 15];
    const lowRank = plantedMatrix(80, 80, [3, 2, 1], 15).a;
    for (const m of [graded, transpose(graded), dup, lowRank]) checkSvd(m, 1e-6);
  });

  it('transposing the input swaps U and V and keeps S', () => {
    const a = gaussianMatrix(30, 12, 6);
    const x = svdSmall(a);
    const y = svdSmall(transpose(a));
    assert.ok(maxRelativeDiff(y.S, x.S) < 1e-6);
  });

  it('is deterministic and does 64×64 quickly', () => {
    const a = gaussianMatrix(64, 64, 12);
    svdSmall(a);
    const t = performance.now();
    const x = svdSmall(a);
    const ms = performance.now() - t;
    const y = svdSmall(a);
    assert.deepEqual(x.U.data, y.U.data);
    assert.deepEqual(x.V.data, y.V.data);
    assert.deepEqual(x.S, y.S);
    assert.ok(ms < 500, `64×64 took ${ms} ms`);
  });
});
