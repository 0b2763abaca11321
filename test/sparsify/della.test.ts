import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRng } from '../../src/linalg/random.js';
import { dellaKeepProbabilities, sparsifyDella } from '../../src/sparsify/della.js';

/** della's ranking as first written: positions along dim 1 sorted by |x| bits, then position (a comparator sort). */
function referenceProbabilities(x: Float32Array, shape: number[], density: number, epsilon: number): Float32Array {
  const [outer, n, inner] = shape.length < 2 ? [1, x.length, 1] : [shape[0], shape[1], shape.slice(2).reduce((a, b) => a * b, 1)];
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Float32Array(x.length);
  for (let i = 0; i < outer; i++) {
    for (let k = 0; k < inner; k++) {
      const at = (j: number) => (i * n + j) * inner + k;
      const order = Array.from({ length: n }, (_, j) => j).sort((p, q) => (bits[at(p)] & 0x7fffffff) - (bits[at(q)] & 0x7fffffff) || p - q);
      order.forEach((j, r) => (out[at(j)] = n > 1 ? density - epsilon + (r / (n - 1)) * 2 * epsilon : density));
    }
  }
  return out;
}

/** Values spread over many exponents (every radix digit varies), with negatives. */
function spread(size: number, seed: number): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: size }, () => (rng.next() - 0.5) * 2 ** Math.floor(rng.next() * 40 - 30));
}

/** Few distinct magnitudes of both signs (ties everywhere, most radix digits shared: passes skipped). */
function quantized(size: number, seed: number): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: size }, () => (Math.floor(rng.next() * 7) - 3) / 64);
}

describe('della keep probabilities (radix ranking)', () => {
  it('rank exactly as a (magnitude, position) sort: 1-D, 2-D, 3-D, ties, ±0, one-entry lanes', () => {
    const cases: [number[], Float32Array][] = [
      [[1000], spread(1000, 1)],
      [[7, 300], spread(2100, 2)],
      [[5, 257], quantized(1285, 3)],
      [[3, 40, 6], spread(720, 4)],
      [[2, 33, 5], quantized(330, 5)],
      [[9, 1], spread(9, 6)],
      [[4, 64], Float32Array.from({ length: 256 }, (_, i) => (i % 3 === 0 ? -0 : i % 3 === 1 ? 0 : 2 ** (i % 50)))],
    ];
    for (const [shape, x] of cases) {
      const got = new Float32Array(x.length);
      dellaKeepProbabilities(x, shape, 0.4, 0.15, got);
      assert.deepEqual(got, referenceProbabilities(x, shape, 0.4, 0.15), `shape [${shape}]`);
    }
  });

  it('sparsifyDella keeps entry i exactly when the i-th next() is below its probability, across draw chunks', () => {
    for (const shape of [[3, 2731], [4096], [2, 4097]]) {
      const size = shape.reduce((a, b) => a * b, 1);
      const x = spread(size, size);
      const want = x.slice();
      const probs = referenceProbabilities(x, shape, 0.5, 0.2);
      const rng = createRng(8);
      for (let i = 0; i < size; i++) if (!(rng.next() < probs[i])) want[i] = 0;
      sparsifyDella(x, shape, 0.5, 0.2, false, createRng(8), new Float32Array(size));
      assert.deepEqual(new Uint32Array(x.buffer), new Uint32Array(want.buffer), `shape [${shape}]`);
    }
  });
});
