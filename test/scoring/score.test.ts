/**
 * The WebAssembly SIMD log-sum-exp and KL (scoring/softmax-simd.ts) against the f64 JS loops they
 * replace, on rows shaped like logits and on the edge cases: one huge logit, large negative values
 * (no -Inf), lengths that are not a multiple of the kernels' group, a row wider than any before.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { klDivergence, logSumExp } from '../../src/scoring/score.js';
import { softmaxKernels } from '../../src/scoring/softmax-simd.js';
import { uniformNoise } from '../helpers/noise.js';

/** Pseudo-random logits in [-scale, scale]. */
function logits(n: number, seed: number, scale = 8): Float32Array {
  return uniformNoise(n, seed, scale);
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(1e-300, Math.abs(b));

describe('eval scoring: SIMD log-sum-exp and KL', () => {
  it('WebAssembly SIMD is available (else eval falls back to the JS loops)', () => {
    assert.ok(softmaxKernels());
  });

  const rows: Array<[string, Float32Array]> = [
    ['random 32000', logits(32000, 1)],
    ['random 1001 (ragged)', logits(1001, 2, 30)],
    ['3 values', Float32Array.from([0.5, -1, 2])],
    ['one value', Float32Array.from([-3.25])],
    ['one huge logit', Object.assign(logits(5003, 3), { 17: 1e4 })],
    ['large negative values, no -Inf', Float32Array.from(logits(4099, 4), (v) => v - 1e30 * (v < 0 ? 1 : 0) - 800)],
    ['gaps past exp underflow', Float32Array.from([0, -700, -707.9, -708.5, -745, -1e4, -3.4e38])],
    ['wider than any before', logits(151937, 5)],
  ];
  for (const [name, row] of rows) {
    it(`logSumExp: ${name} within 1e-13 of the JS loop`, () => {
      const simd = logSumExp(row);
      const js = logSumExp(row, { simd: false });
      assert.ok(Number.isFinite(simd));
      assert.ok(rel(simd, js) < 1e-13, `${simd} vs ${js}`);
    });
  }

  it('logSumExp: the huge logit dominates exactly; NaN and +Inf give NaN as in JS', () => {
    assert.equal(logSumExp(Object.assign(logits(5003, 3), { 17: 1e4 })), 1e4);
    assert.ok(Number.isNaN(logSumExp(Float32Array.from([0, NaN, 1]))));
    assert.ok(Number.isNaN(logSumExp(Float32Array.from([0, Infinity, 1]))));
  });

  it('KL over the whole row within 1e-12 of the JS loop, both ways, and 0 for equal rows', () => {
    for (const [n, seed] of [[32000, 6], [1003, 7], [151936, 8]] as const) {
      const p = logits(n, seed);
      const q = Float32Array.from(p, (v, i) => v + (logits(1, seed * 1000 + i)[0]! / 8));
      const lp = logSumExp(p);
      const lq = logSumExp(q);
      for (const [a, la, b, lb] of [[p, lp, q, lq], [q, lq, p, lp]] as const) {
        const simd = klDivergence(a, la, b, lb);
        const js = klDivergence(a, la, b, lb, undefined, { simd: false });
        assert.ok(simd > 0 && rel(simd, js) < 1e-12, `n=${n}: ${simd} vs ${js}`);
      }
      assert.ok(klDivergence(p, lp, p, lp) < 1e-15);
    }
  });

  it('KL with one huge logit in P: its token alone carries P', () => {
    const p = Object.assign(logits(2000, 9), { 5: 1e4 });
    const q = logits(2000, 10);
    const lp = logSumExp(p);
    const lq = logSumExp(q);
    const simd = klDivergence(p, lp, q, lq);
    assert.ok(rel(simd, klDivergence(p, lp, q, lq, undefined, { simd: false })) < 1e-12);
    assert.ok(rel(simd, -(q[5]! - lq)) < 1e-12);
  });
});
