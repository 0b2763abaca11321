import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getBackend } from '../../src/linalg/index.js';
import { incrementalSvd, randomizedSvd } from '../../src/linalg/rsvd.js';
import type { Matrix } from '../../src/tensor/matrix.js';
import { maxRelativeDiff, orthonormalityError, plantedMatrix, reconstructionError, tailNorm } from './planted.js';

const backend = await getBackend({ threads: 2 });
const ref = await getBackend({ prefer: 'ref' });

const slowDecay = Array.from({ length: 200 }, (_, i) => 1 / (i + 1));
const totalNorm = (s: number[]) => Math.sqrt(s.reduce((a, x) => a + x * x, 0));

function assertNoNaN(...ms: Matrix[]): void {
  for (const m of ms) assert.ok(m.data.every(Number.isFinite), 'finite entries');
}

describe('randomizedSvd', () => {
  it('recovers an exactly low-rank plant to f32 accuracy (S within 1e-4, U and V orthonormal)', async () => {
    const plant = [50, 20, 7, 3, 1, 0.4, 0.1, 0.02];
    const { a, U: pu } = plantedMatrix(400, 300, plant, 1);
    const { U, S, V } = await randomizedSvd(backend, a, { rank: 8 });
    assert.deepEqual([U.rows, U.cols, V.rows, V.cols, S.length], [400, 8, 300, 8, 8]);
    assert.ok(maxRelativeDiff(S, plant) < 1e-4, `S ${[...S]}`);
    assert.ok(orthonormalityError(U) < 1e-5 && orthonormalityError(V) < 1e-5);
    assert.ok(reconstructionError(a, U, S, V) < 1e-5 * plant[0]);
    // the leading left vector is the planted one up to sign
    let dot = 0;
    for (let i = 0; i < 400; i++) dot += U.data[i * 8] * pu.data[i * 8];
    assert.ok(Math.abs(Math.abs(dot) - 1) < 1e-5);
  });

  it('with 2 power iterations on a slowly decaying spectrum, error is within 1% of the optimum', async () => {
    const { a } = plantedMatrix(400, 300, slowDecay, 2);
    for (const rank of [5, 16, 32]) {
      const { U, S, V } = await randomizedSvd(backend, a, { rank, powerIters: 2 });
      const ratio = reconstructionError(a, U, S, V) / tailNorm(slowDecay, rank);
      assert.ok(ratio >= 0.999 && ratio <= 1.01, `rank ${rank}: ratio ${ratio}`);
    }
    // without power iterations the same problem is visibly worse: the iterations are doing the work
    const plain = await randomizedSvd(backend, a, { rank: 16, powerIters: 0 });
    assert.ok(reconstructionError(a, plain.U, plain.S, plain.V) / tailNorm(slowDecay, 16) > 1.05);
  });

  it('handles repeated singular values', async () => {
    const plant = [4, 4, 4, 4, 2, 2, 1];
    const { a } = plantedMatrix(200, 150, plant, 3);
    const { U, S, V } = await randomizedSvd(backend, a, { rank: 6 });
    assert.ok(maxRelativeDiff(S, plant.slice(0, 6)) < 1e-4);
    assert.ok(reconstructionError(a, U, S, V) / tailNorm(plant, 6) < 1.01);
  });

  it('zero matrix, rank one, 1×n and n×1 give exact answers without NaN', async () => {
    const zero = await randomizedSvd(backend, { rows: 120, cols: 90, data: new Float32Array(120 * 90) }, { rank: 4 });
    assert.ok(zero.S.every((x) => x === 0));
    assertNoNaN(zero.U, zero.V);
    assert.ok(orthonormalityError(zero.U) < 1e-5 && orthonormalityError(zero.V) < 1e-5);

    const { a: one } = plantedMatrix(150, 100, [3], 4);
    const r1 = await randomizedSvd(backend, one, { rank: 3 });
    assert.ok(Math.abs(r1.S[0] - 3) < 3e-5 && r1.S[1] < 1e-5, `${[...r1.S]}`);
    assertNoNaN(r1.U, r1.V);

    for (const [rows, cols] of [[1, 50], [50, 1]]) {
      const { a } = plantedMatrix(rows, cols, [2.5], 5);
      const r = await randomizedSvd(backend, a, { rank: 3 });
      assert.equal(r.S.length, 1);
      assert.ok(Math.abs(r.S[0] - 2.5) < 1e-5);
      assert.ok(reconstructionError(a, r.U, r.S, r.V) < 1e-5);
    }
  });

  it('rank at or near full takes the exact dense path', async () => {
    const plant = Array.from({ length: 20 }, (_, i) => 2 ** -i);
    const { a } = plantedMatrix(60, 20, plant, 6);
    const { U, S, V } = await randomizedSvd(backend, a, { rank: 20 });
    assert.ok(maxRelativeDiff(S.slice(0, 10), plant.slice(0, 10)) < 1e-5);
    assert.ok(reconstructionError(a, U, S, V) < 1e-6);
    const capped = await randomizedSvd(backend, a, { rank: 100 });
    assert.equal(capped.S.length, 20);
  });

  it('same seed gives bit-identical output; another seed differs only in rounding', async () => {
    const { a } = plantedMatrix(300, 200, slowDecay, 7);
    const x = await randomizedSvd(backend, a, { rank: 10, seed: 42 });
    const y = await randomizedSvd(backend, a, { rank: 10, seed: 42 });
    assert.deepEqual(x.U.data, y.U.data);
    assert.deepEqual(x.V.data, y.V.data);
    assert.deepEqual(x.S, y.S);
    const z = await randomizedSvd(backend, a, { rank: 10, seed: 43 });
    assert.notDeepEqual(x.S, z.S);
    assert.ok(maxRelativeDiff(z.S, x.S) < 1e-2);
  });

  it('gives the same answer on the TypeScript backend', async () => {
    const plant = [9, 6, 3, 1];
    const { a } = plantedMatrix(90, 70, plant, 8);
    const r = await randomizedSvd(ref, a, { rank: 4 });
    assert.ok(maxRelativeDiff(r.S, plant) < 1e-5);
  });

  it('rejects a negative or fractional rank', async () => {
    const { a } = plantedMatrix(10, 10, [1], 1);
    await assert.rejects(randomizedSvd(backend, a, { rank: -1 }), /rank must be an integer/);
    await assert.rejects(randomizedSvd(backend, a, { rank: 2.5 }), /rank must be an integer/);
  });
});

describe('incrementalSvd', () => {
  it('reports, for every rank, an error matching the planted tail', async () => {
    const { a } = plantedMatrix(400, 300, slowDecay, 9);
    const total = totalNorm(slowDecay);
    const { errors, rank, S, U, V } = await incrementalSvd(backend, a, { maxRank: 48, blockSize: 16 });
    assert.equal(rank, 48);
    assert.equal(errors.length, 49);
    assert.deepEqual(errors[0], { rank: 0, relError: 1 });
    for (const { rank: r, relError } of errors.slice(1)) {
      const truth = tailNorm(slowDecay, r) / total;
      // an upper bound on the optimum, up to f32 noise, and close to it; the last block's ranks
      // have had the fewest chances to converge, so they get a looser bound
      const slack = r <= rank - 16 ? 1.01 : 1.05;
      assert.ok(relError >= truth * 0.999, `rank ${r}: ${relError} < optimum ${truth}`);
      assert.ok(relError <= truth * slack, `rank ${r}: ${relError} vs optimum ${truth}`);
    }
    // and it is the actual error of the returned truncation
    for (const r of [10, 30]) {
      const actual = reconstructionError(a, U, S, V, r) / total;
      assert.ok(Math.abs(actual - errors[r].relError) < 1e-3 * errors[r].relError, `rank ${r}`);
    }
    assert.ok(orthonormalityError(U) < 1e-5 && orthonormalityError(V) < 1e-5);
  });

  it('an energy stop ends growth early and the errors pick out the true rank', async () => {
    const plant = [6, 5, 4, 3, 2.5, 2, 1.5];
    const { a } = plantedMatrix(300, 250, plant, 10);
    const seen: number[] = [];
    const { rank, errors, S } = await incrementalSvd(backend, a, {
      maxRank: 80,
      blockSize: 4,
      stop: (st) => {
        seen.push(st.rank);
        assert.equal(st.totalFrobSq, frobeniusSq(a));
        return st.errorFrobSq <= 1e-6 * st.totalFrobSq;
      },
    });
    assert.deepEqual(seen, [4, 8]);
    assert.equal(rank, 8);
    assert.ok(maxRelativeDiff(S.slice(0, 7), plant) < 1e-4);
    const target = 1e-3;
    const chosen = errors.find((e) => e.relError <= target)?.rank;
    assert.equal(chosen, 7);
  });

  it('the zero matrix gives rank 0 and error 0; maxRank 0 gives error 1', async () => {
    const zero = await incrementalSvd(backend, { rows: 50, cols: 40, data: new Float32Array(2000) }, { maxRank: 10 });
    assert.equal(zero.rank, 0);
    assert.deepEqual(zero.errors, [{ rank: 0, relError: 0 }]);
    assert.deepEqual([zero.U.rows, zero.U.cols, zero.V.rows, zero.V.cols], [50, 0, 40, 0]);
    const { a } = plantedMatrix(20, 20, [1], 2);
    const none = await incrementalSvd(backend, a, { maxRank: 0 });
    assert.deepEqual(none.errors, [{ rank: 0, relError: 1 }]);
  });

  it('stops at min(m, n) with ~zero error, also for n×1', async () => {
    const { a } = plantedMatrix(40, 1, [3], 3);
    const r = await incrementalSvd(backend, a, { maxRank: 16 });
    assert.equal(r.rank, 1);
    assert.ok(Math.abs(r.S[0] - 3) < 1e-5);
    assert.ok(r.errors[1].relError < 1e-3);
  });

  it('is bit-identical for the same seed', async () => {
    const { a } = plantedMatrix(200, 150, slowDecay.slice(0, 150), 11);
    const x = await incrementalSvd(backend, a, { maxRank: 24, blockSize: 8, seed: 5 });
    const y = await incrementalSvd(backend, a, { maxRank: 24, blockSize: 8, seed: 5 });
    assert.deepEqual(x.U.data, y.U.data);
    assert.deepEqual(x.errors, y.errors);
  });
});

function frobeniusSq(a: Matrix): number {
  let s = 0;
  for (const x of a.data) s += x * x;
  return s;
}
