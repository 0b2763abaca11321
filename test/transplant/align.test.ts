/** Planted alignments: a donor that is an exact rotation + scale + shift of the base, of another width, is recovered to round-off. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRefBackend } from '../../src/linalg/ref.js';
import { createRng } from '../../src/linalg/random.js';
import { polarFactor } from '../../src/linalg/polar.js';
import { orthonormalize } from '../../src/linalg/qr.js';
import { matrix, type Matrix } from '../../src/tensor/matrix.js';
import { fitAlignment, mapRows } from '../../src/transplant/align.js';
import { blendRows, pairCosines, planStage } from '../../src/transplant/blend.js';

const backend = createRefBackend();

function random(rows: number, cols: number, seed: number, scale = 1): Matrix {
  const rng = createRng(seed);
  return matrix(rows, cols, Float32Array.from({ length: rows * cols }, () => scale * rng.normal()));
}

/** rows·Qᵀ·s + shift, with Q (out × in) having orthonormal columns or rows. */
async function transform(rows: Matrix, Q: Matrix, s: number, shift: number[]): Promise<Matrix> {
  const out = await backend.gemm(rows, Q, { transB: true });
  for (let i = 0; i < out.rows; i++) for (let j = 0; j < out.cols; j++) out.data[i * out.cols + j] = s * out.data[i * out.cols + j]! + shift[j]!;
  return out;
}

function maxAbs(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('transplant alignment', () => {
  for (const [baseWidth, donorWidth] of [
    [16, 24],
    [24, 16],
  ] as const) {
    it(`recovers a planted rotation + scale + shift, base width ${baseWidth}, donor width ${donorWidth}`, async () => {
      const n = 200;
      const narrow = Math.min(baseWidth, donorWidth);
      const wide = Math.max(baseWidth, donorWidth);
      const Q = orthonormalize(random(wide, narrow, 1)); // wide × narrow, orthonormal columns
      const small = random(n, narrow, 2, 0.3);
      const big = await transform(small, Q, 2.5, Array.from({ length: wide }, (_, j) => 0.01 * j));
      // the wider side is the narrow one rotated into it, scaled and shifted
      const [base, donor] = baseWidth === narrow ? [small, big] : [big, small];
      const a = await fitAlignment(backend, base, donor);
      assert.ok(a.residualAfter < 1e-5, `residual after ${a.residualAfter}`);
      assert.ok(a.residualBefore > 0.5, `residual before ${a.residualBefore}`);
      assert.equal(a.rank, narrow);
      const expectedScale = baseWidth === narrow ? 1 / 2.5 : 2.5;
      assert.ok(Math.abs(a.scale / expectedScale - 1) < 1e-5, `scale ${a.scale}`);
      const mapped = await mapRows(backend, a, donor);
      assert.ok(maxAbs(mapped.data, base.data) < 1e-4, `mapped rows off by ${maxAbs(mapped.data, base.data)}`);
    });
  }

  it('the Newton–Schulz polar factor agrees with the eigen one', async () => {
    const M = random(40, 30, 5);
    const eig = await polarFactor(backend, M);
    const ns = await polarFactor(backend, M, { eigLimit: 0 });
    assert.ok(maxAbs(eig.Q.data, ns.Q.data) < 1e-4, `${maxAbs(eig.Q.data, ns.Q.data)}`);
    assert.ok(Math.abs(eig.traceSigma / ns.traceSigma - 1) < 1e-5);
    const wide = await polarFactor(backend, random(20, 35, 6));
    const gram = await backend.gemm(wide.Q, wide.Q, { transB: true });
    for (let i = 0; i < 20; i++) for (let j = 0; j < 20; j++) assert.ok(Math.abs(gram.data[i * 20 + j]! - (i === j ? 1 : 0)) < 1e-5);
  });

  it('a stage blends only rows at or above tau; every other row stays bit for bit', async () => {
    const width = 8;
    const table = random(50, width, 7).data;
    const mu = new Float64Array(width);
    const ids = Array.from({ length: 20 }, (_, i) => 2 * i);
    // mapped rows: the base row itself for even pairs (cos 1), noise for odd ones
    const noise = random(20, width, 8);
    const mapped = matrix(20, width, Float32Array.from({ length: 20 * width }, (_, k) => {
      const i = Math.floor(k / width);
      return i % 2 === 0 ? 3 * table[ids[i]! * width + (k % width)]! : noise.data[k]!;
    }));
    const cos = pairCosines(table, width, ids, mapped, mu);
    const plan = planStage(cos, new Uint8Array(20), { targetFrac: 1, alphaCap: 0.9, alphaFloor: 0.05, minTau: 0.99 }, 'skip');
    assert.deepEqual(plan.rows.map((r) => r.pair), [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
    const out = blendRows({ table, width, baseIds: ids, mapped, plan, untrainedNorm: (x) => x });
    const chosen = new Set(plan.rows.map((r) => ids[r.pair]!));
    for (let row = 0; row < 50; row++) {
      const same = out.subarray(row * width, (row + 1) * width).every((v, j) => Object.is(v, table[row * width + j]));
      // blending a row with its own direction at its own norm changes it by rounding at most
      if (!chosen.has(row)) assert.ok(same, `row ${row} changed`);
      else assert.ok(maxAbs(out.subarray(row * width, (row + 1) * width), table.subarray(row * width, (row + 1) * width)) < 1e-5);
    }
  });
});
