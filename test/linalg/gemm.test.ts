import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { LinalgBackend } from '../../src/linalg/backend.js';
import { getBackend, withFallback } from '../../src/linalg/index.js';
import { buildGemmModel, createOrtBackend } from '../../src/linalg/ort.js';
import { createRefBackend } from '../../src/linalg/ref.js';
import type { Matrix } from '../../src/tensor/matrix.js';
import { gaussianMatrix, relativeFrobeniusDiff } from './planted.js';

/** op(A)·op(B) by the textbook triple loop in f64: the independent truth for both backends. */
function naiveGemm(a: Matrix, b: Matrix, transA: boolean, transB: boolean): Float32Array {
  const m = transA ? a.cols : a.rows;
  const k = transA ? a.rows : a.cols;
  const n = transB ? b.rows : b.cols;
  const at = (i: number, p: number) => (transA ? a.data[p * a.cols + i] : a.data[i * a.cols + p]);
  const bt = (p: number, j: number) => (transB ? b.data[j * b.cols + p] : b.data[p * b.cols + j]);
  const c = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += at(i, p) * bt(p, j);
      c[i * n + j] = s;
    }
  }
  return c;
}

/** Operands whose op() shapes are m×k and k×n. */
function operands(m: number, k: number, n: number, transA: boolean, transB: boolean, seed: number): [Matrix, Matrix] {
  const a = transA ? gaussianMatrix(k, m, seed) : gaussianMatrix(m, k, seed);
  const b = transB ? gaussianMatrix(n, k, seed + 1) : gaussianMatrix(k, n, seed + 1);
  return [a, b];
}

const SHAPES: Array<[number, number, number]> = [
  [1, 1, 1],
  [37, 53, 1],
  [1, 53, 37],
  [1, 1, 29],
  [257, 129, 63],
  [31, 7, 97],
  [64, 300, 5],
];
const TRANS: Array<[boolean, boolean]> = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
];

describe('GEMM backends', async () => {
  const ort = await createOrtBackend({ threads: 2 });
  const ref = createRefBackend();
  after(async () => {
    await ort.dispose?.();
  });

  it('ref matches the naive triple loop on every variant and odd shape', async () => {
    for (const [m, k, n] of SHAPES) {
      for (const [transA, transB] of TRANS) {
        const [a, b] = operands(m, k, n, transA, transB, m * 7 + n);
        const c = await ref.gemm(a, b, { transA, transB });
        assert.equal(c.rows, m);
        assert.equal(c.cols, n);
        const err = relativeFrobeniusDiff(c.data, naiveGemm(a, b, transA, transB));
        assert.ok(err <= 1e-6, `ref ${m}×${k}×${n} transA=${transA} transB=${transB}: rel err ${err}`);
      }
    }
  });

  it('ort matches ref within 1e-5 on every variant and odd shape', async () => {
    for (const [m, k, n] of SHAPES) {
      for (const [transA, transB] of TRANS) {
        const [a, b] = operands(m, k, n, transA, transB, m * 11 + k);
        const c = await ort.gemm(a, b, { transA, transB });
        const expect = await ref.gemm(a, b, { transA, transB });
        assert.deepEqual([c.rows, c.cols], [m, n]);
        const err = relativeFrobeniusDiff(c.data, expect.data);
        assert.ok(err <= 1e-5, `ort ${m}×${k}×${n} transA=${transA} transB=${transB}: rel err ${err}`);
      }
    }
  });

  it('ort leaves its inputs untouched and returns a fresh buffer', async () => {
    const [a, b] = operands(40, 30, 20, false, false, 5);
    const aCopy = a.data.slice();
    const c1 = await ort.gemm(a, b);
    const c2 = await ort.gemm(a, b);
    assert.deepEqual(a.data, aCopy);
    assert.notEqual(c1.data.buffer, c2.data.buffer);
    assert.deepEqual(c1.data, c2.data);
  });

  it('accepts operands that are views into a larger buffer (non-zero byteOffset)', async () => {
    const [a, b] = operands(23, 17, 11, false, true, 9);
    const backing = new Float32Array(5 + a.data.length);
    backing.set(a.data, 5);
    const view = { rows: a.rows, cols: a.cols, data: backing.subarray(5) };
    const c = await ort.gemm(view, b, { transB: true });
    const expect = await ref.gemm(a, b, { transB: true });
    assert.ok(relativeFrobeniusDiff(c.data, expect.data) <= 1e-5);
  });

  it('empty dimensions give empty or all-zero products on both backends', async () => {
    for (const backend of [ort, ref] as LinalgBackend[]) {
      const zeroInner = await backend.gemm(gaussianMatrix(5, 0, 1), gaussianMatrix(0, 3, 2));
      assert.deepEqual([zeroInner.rows, zeroInner.cols], [5, 3]);
      assert.ok(zeroInner.data.every((x) => x === 0), backend.name);
      const zeroRows = await backend.gemm(gaussianMatrix(4, 0, 1), gaussianMatrix(4, 6, 2), { transA: true });
      assert.deepEqual([zeroRows.rows, zeroRows.cols, zeroRows.data.length], [0, 6, 0]);
    }
  });

  it('rejects mismatched inner dimensions with both shapes in the message', async () => {
    for (const backend of [ort, ref] as LinalgBackend[]) {
      await assert.rejects(backend.gemm(gaussianMatrix(3, 4, 1), gaussianMatrix(5, 2, 2)), /op\(A\) is 3×4.*op\(B\) is 5×2/);
      await assert.rejects(backend.gemm(gaussianMatrix(3, 4, 1), gaussianMatrix(3, 2, 2), { transB: true }), /inner dimensions/);
    }
  });

  it('builds one small, well-formed ONNX model holding all four variants', () => {
    const model = Buffer.from(buildGemmModel());
    assert.ok(model.length < 800, `${model.length} bytes`);
    assert.ok(model.includes('MatMul') && model.includes('Gemm') && model.includes('transA') && model.includes('transB'));
    for (const v of [0, 1, 2, 3]) assert.ok(model.includes(`C${v}`), `output C${v}`);
  });

  it('gives every variant in turn through the one session (outputs never mixed up)', async () => {
    const cases = [
      [false, false, gaussianMatrix(5, 3, 11), gaussianMatrix(3, 4, 12)],
      [false, true, gaussianMatrix(5, 3, 13), gaussianMatrix(4, 3, 14)],
      [true, false, gaussianMatrix(3, 5, 15), gaussianMatrix(3, 4, 16)],
      [true, true, gaussianMatrix(3, 5, 17), gaussianMatrix(4, 3, 18)],
    ] as const;
    for (const [transA, transB, x, y] of [...cases, ...cases.slice().reverse()]) {
      const got = await ort.gemm(x, y, { transA, transB });
      const want = await ref.gemm(x, y, { transA, transB });
      assert.deepEqual([got.rows, got.cols], [want.rows, want.cols]);
      for (let i = 0; i < want.data.length; i++) assert.ok(Math.abs(got.data[i] - want.data[i]) < 1e-5);
    }
  });
});

describe('getBackend', () => {
  it('returns onnxruntime by default and the same instance for the same options', async () => {
    const a = await getBackend({ threads: 1 });
    const b = await getBackend({ threads: 1 });
    assert.equal(a, b);
    assert.match(a.name, /^ort/);
  });

  it('returns the TypeScript backend when asked', async () => {
    const ref = await getBackend({ prefer: 'ref' });
    assert.equal(ref.name, 'ref');
  });

  it('falls back to the TypeScript backend, warning once, when the native one fails to load', async () => {
    const written: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string) => {
      written.push(String(chunk));
      return true;
    }) as typeof process.stderr.write;
    try {
      const failing = () => Promise.reject(new Error('no binding for this platform'));
      const first = await withFallback(failing);
      const second = await withFallback(failing);
      assert.equal(first.name, 'ref');
      assert.equal(second.name, 'ref');
    } finally {
      process.stderr.write = write;
    }
    assert.equal(written.length, 1);
    assert.match(written[0], /falling back to the pure-TypeScript backend, ~25x slower: no binding for this platform/);
  });

  it('rejects a thread count that is not a positive integer', async () => {
    await assert.rejects(getBackend({ threads: 0 }), /threads must be a positive integer/);
  });
});
