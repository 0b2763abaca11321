import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRng } from '../../src/linalg/random.js';
import { kthLargestMagnitude, sparsifyMagnitude, sparsifyRandom } from '../../src/merge/sparsify.js';

function gaussian(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  createRng(seed).fillNormal(x);
  return x;
}

/** The reference: indices of a stable descending sort by |x|, first k kept. */
function topKBySort(x: Float32Array, k: number): Float32Array {
  const order = Array.from(x, (_, i) => i).sort((a, b) => Math.abs(x[b]) - Math.abs(x[a]) || a - b);
  const out = new Float32Array(x.length);
  for (const i of order.slice(0, k)) out[i] = x[i];
  return out;
}

describe('kthLargestMagnitude', () => {
  it('finds the k-th largest |x| and the count above it, as a sort does', () => {
    const x = gaussian(5000, 1);
    const sorted = Array.from(x, Math.abs).sort((a, b) => b - a);
    const bits = new Uint32Array(x.buffer);
    for (const k of [1, 2, 17, 2500, 4999, 5000]) {
      const { threshold, above } = kthLargestMagnitude(bits, k);
      const value = new Float32Array(new Uint32Array([threshold]).buffer)[0];
      assert.equal(value, sorted[k - 1], `k = ${k}`);
      assert.equal(above, sorted.filter((v) => v > value).length, `k = ${k}`);
    }
  });
});

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
    assert.deepEqual(Array.from(x), [0, -2, 2, 0, 0, 0, 3]);
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
});
