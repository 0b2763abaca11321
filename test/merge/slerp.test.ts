import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRng } from '../../src/linalg/random.js';
import { slerpCoefficients, slerpInto } from '../../src/merge/slerp.js';

function gaussian(n: number, seed: number): Float32Array {
  const x = new Float32Array(n);
  createRng(seed).fillNormal(x);
  return x;
}

/** Slerp from its geometric definition: rotate within the plane of v0, v1 by the angle t·θ. */
function referenceSlerp(t: number, v0: Float32Array, v1: Float32Array): number[] {
  const norm = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));
  const n0 = norm(v0);
  const n1 = norm(v1);
  const u0 = Array.from(v0, (x) => x / n0);
  const u1 = Array.from(v1, (x) => x / n1);
  const theta = Math.acos(u0.reduce((s, x, i) => s + x * u1[i], 0));
  return Array.from(v0, (x, i) => (Math.sin((1 - t) * theta) * x + Math.sin(t * theta) * v1[i]) / Math.sin(theta));
}

describe('slerp', () => {
  it('matches the geometric formula for vectors at a generic angle', () => {
    const v0 = gaussian(257, 1);
    const v1 = gaussian(257, 2);
    for (const t of [0.1, 0.5, 0.8]) {
      const expected = referenceSlerp(t, v0, v1);
      const out = slerpInto(t, v0, v1, new Float32Array(v0.length));
      for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - expected[i]) < 1e-5, `t = ${t}, entry ${i}`);
    }
  });

  it('keeps the norm on the arc between unit vectors', () => {
    const v0 = new Float32Array([1, 0]);
    const v1 = new Float32Array([0, 1]);
    const out = slerpInto(0.5, v0, v1, new Float32Array(2));
    assert.ok(Math.abs(out[0] - Math.SQRT1_2) < 1e-7 && Math.abs(out[1] - Math.SQRT1_2) < 1e-7);
  });

  it('falls back to lerp for parallel and antiparallel tensors', () => {
    const v0 = gaussian(64, 3);
    const parallel = v0.map((x) => 3 * x);
    const anti = v0.map((x) => -2 * x);
    for (const v1 of [parallel, anti]) {
      const c = slerpCoefficients(0.3, v0, v1);
      assert.equal(c.lerp, true);
      const out = slerpInto(0.3, v0, v1, new Float32Array(64));
      for (let i = 0; i < 64; i++) assert.ok(Math.abs(out[i] - (0.7 * v0[i] + 0.3 * v1[i])) < 1e-6);
    }
    // antiparallel with equal norms at t = 0.5 cancels exactly
    const mid = slerpInto(0.5, v0, v0.map((x) => -x), new Float32Array(64));
    assert.ok(mid.every((x) => x === 0));
  });

  it('returns exactly v0 at t = 0 and exactly v1 at t = 1', () => {
    const v0 = gaussian(100, 4);
    const v1 = gaussian(100, 5);
    assert.deepEqual(slerpInto(0, v0, v1, new Float32Array(100)), v0);
    assert.deepEqual(slerpInto(1, v0, v1, new Float32Array(100)), v1);
  });

  it('leaves a zero tensor unnormalised (θ = 90°) instead of dividing by zero', () => {
    const v0 = new Float32Array(4);
    const v1 = new Float32Array([1, 2, 3, 4]);
    const out = slerpInto(0.5, v0, v1, new Float32Array(4));
    for (let i = 0; i < 4; i++) assert.ok(Math.abs(out[i] - Math.sin(Math.PI / 4) * v1[i]) < 1e-6);
  });
});
