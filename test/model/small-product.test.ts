/**
 * The engine's products: small ones computed in TypeScript (a native call costs more than they
 * do), equal to the backend's GEMM; large ones and mismatched shapes left to the backend.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LinalgBackend } from '../../src/linalg/backend.js';
import { getBackend } from '../../src/linalg/index.js';
import { createRng } from '../../src/linalg/random.js';
import { Engine } from '../../src/model/engine.js';
import { generateGreedy } from '../../src/model/generate.js';
import { product, SMALL_WORK } from '../../src/model/small-product.js';
import { matrix } from '../../src/tensor/matrix.js';
import { tinyLlamaConfig, tinyLlamaWeights, writeTinyLlama } from '../helpers/llamacpp.js';
import { tempFolders } from '../helpers/synthetic.js';

const folder = tempFolders('loraforge-small-product-');

function counting(inner: LinalgBackend): LinalgBackend & { calls: number } {
  const b = { name: inner.name, calls: 0, gemm: (...args: Parameters<LinalgBackend['gemm']>) => (b.calls++, inner.gemm(...args)) };
  return b;
}

const random = (rows: number, cols: number, seed: number) => {
  const rng = createRng(seed);
  return matrix(rows, cols, Float32Array.from({ length: rows * cols }, () => 2 * rng.next() - 1));
};

describe('engine products', () => {
  it('computes small products itself, equal to the backend (A·Bᵀ and A·B)', async () => {
    const backend = counting(await getBackend({ prefer: 'ref' }));
    const a = random(3, 40, 1);
    for (const [b, transB] of [[random(7, 40, 2), true], [random(40, 7, 3), false]] as const) {
      const got = await product(backend, a, b, { transB });
      const want = await getBackend({ prefer: 'ref' }).then((r) => r.gemm(a, b, { transB }));
      assert.deepEqual([got.rows, got.cols], [3, 7]);
      got.data.forEach((v, i) => assert.ok(Math.abs(v - want.data[i]!) < 1e-5, `entry ${i}: ${v} vs ${want.data[i]}`));
    }
    assert.equal(backend.calls, 0);
  });

  it('leaves large products and mismatched shapes to the backend', async () => {
    const backend = counting(await getBackend({ prefer: 'ref' }));
    const k = 64;
    const n = Math.ceil(SMALL_WORK / k);
    await product(backend, random(1, k, 4), random(n, k, 5), { transB: true });
    assert.equal(backend.calls, 1);
    await assert.rejects(product(backend, random(2, 3, 6), random(2, 4, 7), { transB: true }), /inner dimensions differ/);
  });

  it('decodes a small model without a native call per token', async () => {
    const shape = { vocab: 64, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48 };
    const dir = await folder('tiny');
    await writeTinyLlama(dir, tinyLlamaWeights(shape, 11), tinyLlamaConfig(shape));
    const backend = counting(await getBackend({ prefer: 'ref' }));
    const engine = await Engine.open(dir, [], backend);
    try {
      engine.resident();
      const r = await generateGreedy(engine, [1, 5, 9, 13], { maxNewTokens: 6 });
      assert.equal(r.newIds.length, 6);
      // before: 7 projections + 2 attention products per KV head per layer, + the head: 23 calls a token
      assert.equal(backend.calls, 0);
    } finally {
      await engine.close();
    }
  });
});
