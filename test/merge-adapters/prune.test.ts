import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRng } from '../../src/linalg/random.js';
import {
  combineTaskTensors,
  dareInPlace,
  disjointMerge,
  electSign,
  magnitudePruneInPlace,
  seededMaskSource,
  topKMask,
  weightedSum,
} from '../../src/merge-adapters/prune.js';

function randomTensor(n: number, seed: number): Float32Array {
  const t = new Float32Array(n);
  createRng(seed).fillNormal(t);
  return t;
}

/** The k largest |x| by a full sort (index order on ties): the obvious, slow reference. */
function topKBySort(t: Float32Array, k: number): Uint8Array {
  const idx = Array.from(t.keys()).sort((a, b) => Math.abs(t[b]) - Math.abs(t[a]) || a - b);
  const mask = new Uint8Array(t.length);
  for (const i of idx.slice(0, k)) mask[i] = 1;
  return mask;
}

describe('topKMask', () => {
  it('keeps exactly the k largest magnitudes, like a full sort', () => {
    for (const [n, k, seed] of [[1000, 500, 1], [4097, 1, 2], [333, 332, 3], [50_000, 12_345, 4]]) {
      const t = randomTensor(n, seed);
      assert.deepEqual(topKMask(t, k), topKBySort(t, k), `n=${n} k=${k}`);
    }
  });

  it('breaks ties at the cut by index and handles k = 0, k = n, zeros and negative values', () => {
    const t = Float32Array.from([0.5, -2, 0.5, 0, -0.5, 3, 0.5]);
    assert.deepEqual([...topKMask(t, 3)], [1, 1, 0, 0, 0, 1, 0]);
    assert.deepEqual([...topKMask(t, 4)], [1, 1, 1, 0, 0, 1, 0]);
    assert.deepEqual([...topKMask(t, 0)], [0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual([...topKMask(t, 7)], [1, 1, 1, 1, 1, 1, 1]);
    // values that differ only in their low 16 bits land in the same first-pass bucket
    const close = Float32Array.from([1, 1 + 2 ** -20, 1 + 2 ** -21, -(1 + 2 ** -19)]);
    assert.deepEqual([...topKMask(close, 2)], [0, 1, 0, 1]);
  });
});

describe('magnitude pruning and DARE', () => {
  it('keeps floor(density·n) entries and leaves density ≥ 1 untouched', () => {
    const t = randomTensor(101, 5);
    const kept = magnitudePruneInPlace(t.slice(), 0.3).filter((x) => x !== 0).length;
    assert.equal(kept, Math.floor(0.3 * 101));
    assert.deepEqual(magnitudePruneInPlace(t.slice(), 1), t);
  });

  it('DARE zeroes dropped entries and divides the survivors by density', () => {
    const t = Float32Array.from([1, 2, 3, 4]);
    assert.deepEqual([...dareInPlace(t, Uint8Array.from([1, 0, 1, 0]), 0.25)], [4, 0, 12, 0]);
  });

  it('seeded masks keep about density of the entries, reproducibly, and each mask has its own stream', () => {
    const size = 200_000;
    for (const density of [0.1, 0.5, 0.9]) {
      const masks = seededMaskSource(7, density);
      const m = masks({ module: 'layers.0.q_proj', target: 'A', adapter: 0, size });
      const kept = m.reduce((s, x) => s + x, 0) / size;
      // binomial standard deviation √(p(1−p)/n) ≤ 0.0012: 5σ
      assert.ok(Math.abs(kept - density) < 0.006, `density ${density}: kept ${kept}`);
    }
    const a = seededMaskSource(7, 0.5)({ module: 'x', target: 'delta', adapter: 1, size: 1000 });
    const again = seededMaskSource(7, 0.5)({ module: 'x', target: 'delta', adapter: 1, size: 1000 });
    assert.deepEqual(a, again);
    const otherSeed = seededMaskSource(8, 0.5)({ module: 'x', target: 'delta', adapter: 1, size: 1000 });
    const otherAdapter = seededMaskSource(7, 0.5)({ module: 'x', target: 'delta', adapter: 2, size: 1000 });
    const otherTarget = seededMaskSource(7, 0.5)({ module: 'x', target: 'B', adapter: 1, size: 1000 });
    for (const b of [otherSeed, otherAdapter, otherTarget]) {
      const same = a.reduce((s, x, i) => s + (x === b[i] ? 1 : 0), 0);
      assert.ok(same > 400 && same < 600, `masks should be independent, ${same}/1000 agree`);
    }
  });

  it('DARE keeps the expected value: the mean of many rescaled draws approaches the tensor', () => {
    const t = randomTensor(64, 9);
    const sum = new Float64Array(64);
    const draws = 4000;
    const masks = seededMaskSource(3, 0.3);
    for (let d = 0; d < draws; d++) {
      const dropped = dareInPlace(t.slice(), masks({ module: `m${d}`, target: 'A', adapter: 0, size: 64 }), 0.3);
      dropped.forEach((x, i) => (sum[i] += x));
    }
    // per entry: sd of one draw is |t|·√((1−p)/p) ≈ 1.53|t|; of the mean, /√4000
    sum.forEach((s, i) => assert.ok(Math.abs(s / draws - t[i]) < 5 * 1.53 * Math.abs(t[i]) / Math.sqrt(draws) + 1e-6, `entry ${i}`));
  });
});

describe('TIES', () => {
  // three task tensors of four entries, worked out by hand
  const t1 = Float32Array.from([1, -2, 0, 3]);
  const t2 = Float32Array.from([2, 1, 0, -1]);
  const t3 = Float32Array.from([-4, 1, 0, -1]);

  it('elects the sign of the sum (total) or of the sign count (frequency); ties go to +', () => {
    assert.deepEqual([...electSign([t1, t2, t3], 'total')], [-1, 1, 1, 1]);
    assert.deepEqual([...electSign([t1, t2, t3], 'frequency')], [1, 1, 1, -1]);
  });

  it('disjoint merge averages the weighted entries that agree with the elected sign', () => {
    const sign = Int8Array.from([-1, 1, 1, -1]);
    // entry 0: only t3 (−4·0.5); entry 1: t2, t3 → (1·2 + 1·0.5)/2; entry 2: none; entry 3: t2, t3 → (−2 − 0.5)/2
    assert.deepEqual([...disjointMerge([t1, t2, t3], [1, 2, 0.5], sign)], [-2, 1.25, 0, -1.25]);
  });

  it('elects the sign on unweighted tensors, so a negative weight does not flip the vote (PEFT)', () => {
    const a = Float32Array.from([1]);
    const b = Float32Array.from([1]);
    const c = Float32Array.from([-1]);
    // weights flip c's contribution to +0.5 but its raw −1 still votes; majority is +, c is left out
    const out = combineTaskTensors('ties', [a, b, c], [1, 1, -0.5], { density: 1, majoritySign: 'total', mask: () => new Uint8Array(1) });
    assert.deepEqual([...out], [1]);
  });

  it('weightedSum rounds to f32 like torch', () => {
    const out = weightedSum([Float32Array.from([0.1]), Float32Array.from([0.2])], [0.7, 0.3]);
    const expected = Math.fround(Math.fround(0.1) * Math.fround(0.7)) + Math.fround(Math.fround(0.2) * Math.fround(0.3));
    assert.equal(out[0], Math.fround(expected));
  });
});
