import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getBackend } from '../../src/linalg/index.js';
import { productSvd, stackedProductSvd } from '../../src/linalg/product-svd.js';
import { svdSmall } from '../../src/linalg/svd-small.js';
import type { Matrix } from '../../src/tensor/matrix.js';
import { gaussianMatrix, maxRelativeDiff, orthonormalityError, plantedMatrix, reconstructionError } from './planted.js';

const backend = await getBackend({ threads: 2 });

/** Σ w_i·B_i·A_i formed densely in f64: the truth to compare against. */
function denseSum(parts: Array<{ B: Matrix; A: Matrix; weight: number }>): Matrix {
  const m = parts[0].B.rows;
  const n = parts[0].A.cols;
  const acc = new Float64Array(m * n);
  for (const { B, A, weight } of parts) {
    const r = B.cols;
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < r; p++) {
        const f = weight * B.data[i * r + p];
        for (let j = 0; j < n; j++) acc[i * n + j] += f * A.data[p * n + j];
      }
    }
  }
  return { rows: m, cols: n, data: Float32Array.from(acc) };
}

describe('productSvd', () => {
  it('equals the dense SVD of B·A', async () => {
    const B = gaussianMatrix(120, 8, 1);
    const A = gaussianMatrix(8, 90, 2);
    const dense = denseSum([{ B, A, weight: 1 }]);
    const { U, S, V } = await productSvd(backend, B, A);
    assert.deepEqual([U.rows, U.cols, V.rows, V.cols, S.length], [120, 8, 90, 8, 8]);
    const truth = svdSmall(dense);
    assert.ok(maxRelativeDiff(S, truth.S.slice(0, 8)) < 1e-5);
    assert.ok(orthonormalityError(U) < 1e-5 && orthonormalityError(V) < 1e-5);
    assert.ok(reconstructionError(dense, U, S, V) < 1e-5 * S[0]);
    // same sign convention as svdSmall: the vectors themselves agree
    let worst = 0;
    for (let i = 0; i < 90; i++) worst = Math.max(worst, Math.abs(V.data[i * 8] - truth.V.data[i * 90]));
    assert.ok(worst < 1e-4, `V0 differs by ${worst}`);
  });

  it('finds the true rank of a product whose factors are redundant', async () => {
    // B·A of inner size 6 but rank 3: B's last three columns repeat the first three
    const { a: low } = plantedMatrix(50, 3, [3, 2, 1], 4);
    const B = { rows: 50, cols: 6, data: new Float32Array(300) };
    for (let i = 0; i < 50; i++) for (let c = 0; c < 6; c++) B.data[i * 6 + c] = low.data[i * 3 + (c % 3)];
    const A = gaussianMatrix(6, 40, 5);
    const { U, S, V } = await productSvd(backend, B, A);
    assert.ok(S[3] < 1e-5 * S[0] && S[2] > 1e-2 * S[0], `${[...S]}`);
    assert.ok(U.data.every(Number.isFinite) && V.data.every(Number.isFinite));
    assert.ok(orthonormalityError(U) < 1e-5 && orthonormalityError(V) < 1e-5);
  });

  it('forms the product when the inner size exceeds a side', async () => {
    const B = gaussianMatrix(4, 10, 6);
    const A = gaussianMatrix(10, 30, 7);
    const { S, U, V } = await productSvd(backend, B, A);
    assert.equal(S.length, 4);
    const dense = denseSum([{ B, A, weight: 1 }]);
    assert.ok(reconstructionError(dense, U, S, V) < 1e-5 * S[0]);
  });

  it('rejects factors that do not chain', async () => {
    await assert.rejects(productSvd(backend, gaussianMatrix(5, 3, 1), gaussianMatrix(4, 5, 2)), /B's columns must equal A's rows/);
  });
});

describe('stackedProductSvd', () => {
  it('equals the dense SVD of a weighted sum of products, negative weights included', async () => {
    const parts = [
      { B: gaussianMatrix(80, 4, 1), A: gaussianMatrix(4, 60, 2), weight: 0.7 },
      { B: gaussianMatrix(80, 8, 3), A: gaussianMatrix(8, 60, 4), weight: -0.3 },
      { B: gaussianMatrix(80, 2, 5), A: gaussianMatrix(2, 60, 6), weight: 1.5 },
    ];
    const dense = denseSum(parts);
    const { U, S, V } = await stackedProductSvd(backend, parts);
    assert.equal(S.length, 14);
    assert.ok(maxRelativeDiff(S, svdSmall(dense).S.slice(0, 14)) < 1e-5);
    assert.ok(reconstructionError(dense, U, S, V) < 1e-5 * S[0]);
  });

  it('two copies of one adapter at weights ½ and ½ give that adapter', async () => {
    const B = gaussianMatrix(30, 3, 7);
    const A = gaussianMatrix(3, 20, 8);
    const one = await productSvd(backend, B, A);
    const two = await stackedProductSvd(backend, [
      { B, A, weight: 0.5 },
      { B, A, weight: 0.5 },
    ]);
    assert.ok(maxRelativeDiff(two.S.slice(0, 3), one.S) < 1e-5);
    assert.ok(two.S[3] < 1e-5 * one.S[0]);
  });

  it('rejects parts of different shapes and empty input', async () => {
    await assert.rejects(
      stackedProductSvd(backend, [
        { B: gaussianMatrix(5, 2, 1), A: gaussianMatrix(2, 4, 2), weight: 1 },
        { B: gaussianMatrix(6, 2, 1), A: gaussianMatrix(2, 4, 2), weight: 1 },
      ]),
      /part 1/,
    );
    await assert.rejects(stackedProductSvd(backend, []), /at least one/);
  });
});
