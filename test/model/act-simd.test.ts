/**
 * The WebAssembly SIMD gated activation and causal softmax (model/act-simd.ts) against the JS loops
 * they replace (model/kernels.ts with `simd: false`, exps in f64): on ragged lengths, values past
 * exp's range, chunks and rows wider than the kernels' memory held before, sliding windows and
 * soft-capping. The SIMD exp is f32 (~1 ulp), so results agree within a few f32 ulps.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { actKernels } from '../../src/model/act-simd.js';
import { causalSoftmax, gatedActivation, type SoftmaxMask } from '../../src/model/kernels.js';
import { uniformNoise } from '../helpers/noise.js';

/** Largest |a − b| / (|b| + floor) over the elements; NaN must meet NaN. */
function worst(a: Float32Array, b: Float32Array, floor: number): number {
  assert.equal(a.length, b.length);
  let w = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(b[i]!)) assert.ok(Number.isNaN(a[i]!), `element ${i}: ${a[i]} where JS has NaN`);
    else w = Math.max(w, Math.abs(a[i]! - b[i]!) / (Math.abs(b[i]!) + floor));
  }
  return w;
}

describe('model kernels: WebAssembly SIMD against the JS loops', () => {
  it('WebAssembly SIMD is available (else the engine falls back to the JS loops)', () => {
    assert.ok(actKernels());
  });

  for (const act of ['silu', 'gelu_tanh'] as const) {
    it(`${act}(g)·u: ragged lengths, a length past one chunk, values past exp's range`, () => {
      const cases = [uniformNoise(3, 1, 4), uniformNoise(1001, 2, 12), uniformNoise((1 << 16) + 7, 3, 6), Float32Array.from([0, -0, 1e-30, -1e-30, 87, -87, 89, -89, 200, -200, 1e5, -1e5, 3e38, -3e38, NaN])];
      for (const g of cases) {
        const u = uniformNoise(g.length, 9, 2);
        const simd = gatedActivation(g.slice(), u, act);
        const js = gatedActivation(g.slice(), u, act, false);
        // SiLU: a few ulps everywhere (exp, 1 +, ÷, ·u). GELU: the same for x > -1; below, its exp argument −2y (y = √(2/π)·(x + 0.044715·x³))
        // is an f32 of 5-15 whose rounding (~1 ulp, 1e-6) is that relative error in exp, so relative down to outputs of
        // 1e-4 and absolute below (where the JS loop's 1 + tanh(y) cancels too, to 0 past x ≈ -6)
        const w = worst(simd, js, act === 'gelu_tanh' ? 1e-4 : 1e-30);
        assert.ok(w < (act === 'gelu_tanh' ? 1.5e-6 : 5e-7), `${g.length} elements: relative difference ${w}`);
      }
    });
  }

  const masks: Array<[string, SoftmaxMask]> = [
    ['plain', { scale: 0.125 }],
    ['soft-capped', { scale: 0.25, softcap: 50 }],
    ['soft-capped hard (scores near the cap)', { scale: 4, softcap: 2 }],
    ['sliding window of 5', { scale: 0.125, window: 5 }],
    ['window and cap', { scale: 0.5, softcap: 30, window: 64 }],
  ];
  const shapes: Array<[string, number, number, number]> = [
    // [what, rows, len, first row's last position]
    ['a fresh window (rows = len, ragged)', 37, 37, 0],
    ['new rows over a cache', 3, 70, 67],
    ['one row', 1, 9, 8],
    ['more rows than one chunk', 300, 301, 1],
    ['a row wider than one chunk', 2, (1 << 16) + 3, (1 << 16) + 1],
  ];
  for (const [what, m] of masks) {
    it(`causal softmax, ${what}: every shape`, () => {
      for (const [shape, rows, len, last] of shapes) {
        const s = uniformNoise(rows * len, rows + len, 40);
        const simd = s.slice();
        const js = s.slice();
        causalSoftmax(simd, rows, len, last, m);
        causalSoftmax(js, rows, len, last, m, false);
        // relative, as probabilities; soft-capped scores are rounded to f32 after f32 steps here, after f64 ones in JS: an ulp
        // of a score of 20 (1.9e-6) is that relative difference in its exp
        const w = worst(simd, js, 1e-30);
        assert.ok(w < (m.softcap ? 1e-5 : 1e-6), `${shape}: relative difference ${w}`);
        for (let i = 0; i < rows; i++) {
          const lo = m.window ? Math.max(0, last + i - m.window + 1) : 0;
          for (const t of [lo - 1, last + i + 1]) if (t >= 0 && t < len) assert.equal(simd[i * len + t], 0, `${shape}: row ${i} position ${t} is masked`);
          let sum = 0;
          for (let t = 0; t < len; t++) sum += simd[i * len + t]!;
          assert.ok(Math.abs(sum - 1) < 1e-5, `${shape}: row ${i} sums to ${sum}`);
        }
      }
    });
  }
});
