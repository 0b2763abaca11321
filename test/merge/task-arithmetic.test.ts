/**
 * The summing passes of task arithmetic and TIES run chunk by chunk in small working arrays
 * (task-arithmetic.ts CHUNK_ENTRIES): over tensors of several chunks and a partial last one, the
 * result must be bit for bit what one pass over whole-tensor arrays gives (written out here, with
 * the same TIES trim rule, as the method read before it was chunked).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mergeTaskVectors, type TaskArithmeticOptions } from '../../src/merge/task-arithmetic.js';
import { keptBy, magnitudeKeepCount, selectTopK } from '../../src/sparsify/sparsify.js';

/** 3.5 chunks of 2^14 entries. */
const N = (1 << 14) * 3 + 8191;

/** Values on a coarse grid, so that many magnitudes tie at the TIES threshold (and some deltas are 0). */
function tensor(seed: number, scale: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: N }, () => {
    s = (s * 1103515245 + 12345) >>> 0;
    return (Math.round(((s >>> 8) / 2 ** 24 - 0.5) * 16) / 16) * scale;
  });
}

/** One pass over whole arrays: δ = x − base, kept by the trim, then the sign election or the weighted sum. */
function onePass(base: Float32Array, xs: Float32Array[], w: number[], density: number, opts: TaskArithmeticOptions): Float32Array {
  const out = base.slice();
  const deltas = xs.map((x) => Float32Array.from(x, (v, i) => v - base[i]));
  const keep = xs.map((x) => (density < 1 ? selectTopK(x.slice(), magnitudeKeepCount(density, N), base) : { threshold: 0, lastTie: N }));
  const kept = (j: number, i: number) => keptBy(new Int32Array(deltas[j].buffer)[i] & 0x7fffffff, i, keep[j].threshold, keep[j].lastTie);
  const sum = new Float32Array(N);
  deltas.forEach((d, j) => d.forEach((v, i) => (sum[i] = (j === 0 ? 0 : sum[i]) + kept(j, i) * v * w[j])));
  if (!opts.consensus) {
    const total = w.reduce((a, b) => a + b, 0);
    const scale = (opts.normalize ? 1 / total : 1) * opts.lambda;
    for (let i = 0; i < N; i++) out[i] += sum[i] * scale;
    return out;
  }
  const mixed = new Float32Array(N);
  const divisor = new Float32Array(N);
  deltas.forEach((d, j) =>
    d.forEach((v, i) => {
      const agree = kept(j, i) && v !== 0 && Math.sign(v * w[j]) === (Object.is(sum[i], -0) || sum[i] < 0 ? -1 : 1) ? 1 : 0;
      mixed[i] += agree * w[j] * v;
      divisor[i] += agree * w[j];
    }),
  );
  for (let i = 0; i < N; i++) out[i] += opts.normalize ? (mixed[i] / (divisor[i] === 0 ? 1 : divisor[i])) * opts.lambda : mixed[i] * opts.lambda;
  return out;
}

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

describe('task arithmetic over several chunks', () => {
  const cases: Array<[string, number, TaskArithmeticOptions]> = [
    ['ties', 0.5, { sparsification: 'magnitude', shape: [N], consensus: true, normalize: true, lambda: 0.9, rescale: false }],
    ['task_arithmetic', 1, { sparsification: undefined, shape: [N], consensus: false, normalize: false, lambda: 1.1, rescale: false }],
  ];
  for (const [name, density, opts] of cases) {
    it(`${name}: bit for bit the one-pass result`, () => {
      const base = tensor(1, 1);
      const xs = [2, 3, 4].map((seed) => tensor(seed, 1));
      const w = [0.5, 0.3, -0.2];
      const expected = onePass(base, xs, w, density, opts);
      const got = mergeTaskVectors(base.slice(), xs.map((x, j) => ({ data: x.slice(), weight: w[j], density })), opts);
      assert.deepEqual(bits(got), bits(expected));
    });
  }
});
