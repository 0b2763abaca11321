import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRng } from '../../src/linalg/random.js';
import { bitsOf, kthLargestMagnitude } from '../../src/tensor/top-k.js';

function gaussian(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  createRng(seed).fillNormal(x);
  return x;
}

const valueOf = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0];

describe('kthLargestMagnitude', () => {
  it('finds the k-th largest |x| and the count above it, as a sort does', () => {
    const x = gaussian(5000, 1);
    const sorted = Array.from(x, Math.abs).sort((a, b) => b - a);
    const bits = new Uint32Array(x.buffer);
    for (const k of [1, 2, 17, 2500, 4999, 5000]) {
      const { threshold, above } = kthLargestMagnitude(bits, k);
      const value = valueOf(threshold);
      assert.equal(value, sorted[k - 1], `k = ${k}`);
      assert.equal(above, sorted.filter((v) => v > value).length, `k = ${k}`);
    }
  });

  it('ignores signs, counts ties at the cut as not above, and handles zeros and one shared value', () => {
    const x = new Float32Array([-3, 1, 2, -2, 0, -0, 2, 5]);
    assert.deepEqual(mapped(x, 1), { value: 5, above: 0 });
    assert.deepEqual(mapped(x, 2), { value: 3, above: 1 });
    for (const k of [3, 4, 5]) assert.deepEqual(mapped(x, k), { value: 2, above: 2 }, `k = ${k}`);
    assert.deepEqual(mapped(x, 6), { value: 1, above: 5 });
    for (const k of [7, 8]) assert.deepEqual(mapped(x, k), { value: 0, above: 6 }, `k = ${k}`);
    assert.deepEqual(mapped(new Float32Array(9).fill(-0.5), 4), { value: 0.5, above: 0 });
  });

  it('reads a view at an offset without touching the entries outside it', () => {
    const whole = new Float32Array([100, 1, 3, 2, 100]);
    const view = whole.subarray(1, 4);
    assert.deepEqual(mapped(view, 1), { value: 3, above: 0 });
    assert.equal(bitsOf(view).length, 3);
  });
});

function mapped(x: Float32Array, k: number): { value: number; above: number } {
  const { threshold, above } = kthLargestMagnitude(bitsOf(x), k);
  return { value: valueOf(threshold), above };
}
