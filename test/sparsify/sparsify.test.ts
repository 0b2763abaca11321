import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRng } from '../../src/linalg/random.js';
import { applyTopK, selectTopK, sparsifyMagnitude, sparsifyRandom } from '../../src/sparsify/sparsify.js';

function gaussian(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  createRng(seed).fillNormal(x);
  return x;
}

/** The reference: indices of a stable descending sort by |x|, first k kept; the rest times 0, as mergekit's mask (−0 for negatives). */
function topKBySort(x: Float32Array, k: number): Float32Array {
  const order = Array.from(x, (_, i) => i).sort((a, b) => Math.abs(x[b]) - Math.abs(x[a]) || a - b);
  const out = x.map((v) => v * 0);
  for (const i of order.slice(0, k)) out[i] = x[i];
  return out;
}

describe('sparsifyMagnitude (TIES trim)', () => {
  it('keeps exactly the ⌊density·n⌋ largest entries', () => {
    for (const density of [0.1, 0.5, 0.9, 0.999]) {
      const x = gaussian(3001, 2);
      const expected = topKBySort(x, Math.trunc(density * x.length));
      sparsifyMagnitude(x, density, false);
      assert.deepEqual(x, expected, `density ${density}`);
    }
  });

  it('breaks ties at the threshold by index, as a stable sort, keeping k entries', () => {
    const x = new Float32Array([1, -2, 2, 0.5, -2, 2, 3]);
    // k = trunc(0.5·7) = 3: 3 and the first two of the four ±2 entries
    sparsifyMagnitude(x, 0.5, false);
    assert.deepEqual(Array.from(x), [0, -2, 2, 0, -0, 0, 3]);
  });

  it('rescales the kept entries to the original L1 norm when asked', () => {
    const x = gaussian(1000, 3);
    const l1 = x.reduce((s, v) => s + Math.abs(v), 0);
    const kept = topKBySort(x, 300);
    const keptL1 = kept.reduce((s, v) => s + Math.abs(v), 0);
    sparsifyMagnitude(x, 0.3, true);
    for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - kept[i] * (l1 / keptL1)) <= 1e-6 * Math.abs(x[i]) + 1e-12);
  });

  it('leaves the tensor untouched at density ≥ 1 and refuses a density that keeps nothing', () => {
    const x = gaussian(10, 4);
    const copy = x.slice();
    sparsifyMagnitude(x, 1, true);
    assert.deepEqual(x, copy);
    assert.throws(() => sparsifyMagnitude(x, 0.05, false), /keeps no entry/);
  });
});

/** The top-k rule on large inputs, checked with a native sort: |x| > T kept, ties at T kept in index order up to k. */
function expectedTopK(x: Float32Array, k: number): Float32Array {
  const sorted = Float32Array.from(x, Math.abs).sort();
  const t = sorted[x.length - k];
  let ties = k - sorted.filter((v) => v > t).length;
  return x.map((v) => (Math.abs(v) > t ? v : Math.abs(v) === t && ties-- > 0 ? v : v * 0));
}

describe('selectTopK on large tensors (sampled bracket)', () => {
  it('keeps exactly the top k of continuous values (bracket of many magnitudes)', () => {
    const x = gaussian(1_100_000, 8);
    for (const density of [0.02, 0.3]) {
      const k = Math.trunc(density * x.length);
      const y = x.slice();
      applyTopK(y, selectTopK(y, k));
      assert.deepEqual(y, expectedTopK(x, k), `density ${density}`);
    }
  });

  it('subtracts the base and keeps exactly the top k, ties at the threshold in index order', () => {
    const n = 1_200_000;
    // coarse values: thousands of entries share the threshold magnitude
    const base = gaussian(n, 6).map((v) => Math.round(v * 16) / 16);
    const tuned = gaussian(n, 7).map((v, i) => base[i] + Math.round(v * 16) / 16);
    const delta = tuned.map((v, i) => v - base[i]);
    for (const density of [0.05, 0.5, 0.9]) {
      const k = Math.trunc(density * n);
      const x = tuned.slice();
      applyTopK(x, selectTopK(x, k, base));
      assert.deepEqual(x, expectedTopK(delta, k), `density ${density}`);
    }
  });

  it('keeps the quota of a threshold magnitude shared by most entries, in index order', () => {
    const n = 1_100_000;
    const x = new Float32Array(n).fill(-1);
    for (let i = 0; i < n; i += 1000) x[i] = 2;
    const k = n / 2;
    const expected = expectedTopK(x, k);
    applyTopK(x, selectTopK(x, k));
    assert.deepEqual(x, expected);
  });
});

describe('sparsifyRandom (DARE)', () => {
  it('keeps entry i exactly when the seeded draw is below density, and rescales by L1', () => {
    const x = gaussian(20000, 5);
    const orig = x.slice();
    sparsifyRandom(x, 0.3, false, createRng(9));
    const rng = createRng(9);
    let kept = 0;
    for (let i = 0; i < x.length; i++) {
      const keep = rng.next() < 0.3;
      assert.equal(x[i], keep ? orig[i] : 0);
      kept += keep ? 1 : 0;
    }
    assert.ok(Math.abs(kept / x.length - 0.3) < 0.02, `kept fraction ${kept / x.length}`);

    const y = orig.slice();
    sparsifyRandom(y, 0.3, true, createRng(9));
    const scale = orig.reduce((s, v) => s + Math.abs(v), 0) / x.reduce((s, v) => s + Math.abs(v), 0);
    for (let i = 0; i < y.length; i++) assert.ok(Math.abs(y[i] - x[i] * scale) <= 1e-6 * Math.abs(y[i]) + 1e-12);
  });

  it('gives the bits of one next() per entry across draw chunks (odd lengths, any density; dropped entries +0)', () => {
    for (const n of [1, 4095, 4096, 4097, 3 * 4096 + 5]) {
      for (const density of [0.1, 0.5, 0.9, 1e-9, 0]) {
        const x = gaussian(n, n);
        const want = x.slice();
        const rng = createRng(11);
        for (let i = 0; i < want.length; i++) if (!(rng.next() < density)) want[i] = 0;
        sparsifyRandom(x, density, false, createRng(11));
        assert.deepEqual(new Uint32Array(x.buffer), new Uint32Array(want.buffer), `n ${n}, density ${density}`);
      }
    }
  });
});
