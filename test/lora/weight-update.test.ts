import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { getBackend } from '../../src/linalg/index.js';
import { applyUpdateInPlace, updateDifference, weightNorms, weightUpdate } from '../../src/lora/weight-update.js';
import type { LoraModule } from '../../src/lora/adapter.js';
import { matrix } from '../../src/tensor/matrix.js';
import { flat, maxAbsDiff, naiveMerge, randomMat, rowNormsAfterLora, transposeMat, unflat, type Mat, type PeftModuleFixture } from '../helpers/dora.js';

/** The fixture in loraforge's in-memory orientation (embedding factors swapped and transposed, as adapter.ts reads them). */
function toModule(fx: PeftModuleFixture): LoraModule {
  const r = fx.A.length;
  const A = fx.kind === 'embedding' ? transposeMat(fx.B) : fx.A;
  const B = fx.kind === 'embedding' ? transposeMat(fx.A) : fx.B;
  return {
    name: fx.name,
    kind: fx.kind,
    A: matrix(A.length, A[0].length, flat(A)),
    B: matrix(B.length, B[0].length, flat(B)),
    alpha: r,
    ...(fx.magnitude ? { magnitude: Float32Array.from(fx.magnitude) } : {}),
    ...(fx.latent ? { latent: matrix(r, r, flat(fx.latent)) } : {}),
  };
}

async function merged(W: Mat, fx: PeftModuleFixture, scaling: number, weight = 1, blockElements?: number): Promise<Mat> {
  const backend = await getBackend();
  const Wm = matrix(W.length, W[0].length, flat(W));
  await applyUpdateInPlace(backend, Wm, await weightUpdate(backend, toModule(fx), scaling, weight), { blockElements });
  return unflat(Wm.data, W.length, W[0].length);
}

const W = randomMat(9, 7, 1);
const linear = (extra: Partial<PeftModuleFixture> = {}): PeftModuleFixture => ({
  name: 'q',
  kind: 'linear',
  A: randomMat(3, 7, 2, 0.5),
  B: randomMat(9, 3, 3, 0.5),
  ...extra,
});

describe('DoRA / EDoRA merge formula', () => {
  it('plain LoRA: W + s·B·A', async () => {
    const fx = linear();
    assert.ok(maxAbsDiff(await merged(W, fx, 0.75), naiveMerge(W, fx, 0.75)) < 1e-5);
  });

  it('DoRA (linear, per-row norm) matches the naive loop, whole and in one-row blocks', async () => {
    const fx = linear({ magnitude: Array.from({ length: 9 }, (_, i) => 1 + 0.3 * i) });
    const want = naiveMerge(W, fx, 2);
    assert.ok(maxAbsDiff(await merged(W, fx, 2), want) < 1e-5);
    assert.ok(maxAbsDiff(await merged(W, fx, 2, 1, 1), want) < 1e-5);
    // the result's rows have exactly the magnitudes as norms
    want.forEach((row, i) => assert.ok(Math.abs(Math.hypot(...row) - fx.magnitude![i]) < 1e-9));
  });

  it('EDoRA (latent R between A and B) matches the naive loop', async () => {
    const fx = linear({ magnitude: Array.from({ length: 9 }, (_, i) => 2 - 0.1 * i), latent: randomMat(3, 3, 4) });
    assert.ok(maxAbsDiff(await merged(W, fx, 0.5), naiveMerge(W, fx, 0.5)) < 1e-5);
    assert.ok(maxAbsDiff(await merged(W, fx, 0.5, 1, 10), naiveMerge(W, fx, 0.5)) < 1e-5);
  });

  it('embedding DoRA normalises columns (one magnitude per embedding dim), also across row blocks', async () => {
    // PEFT orientation: A is r × vocab(9), B is hidden(7) × r, magnitude has 7 entries
    const fx: PeftModuleFixture = { name: 'e', kind: 'embedding', A: randomMat(2, 9, 5), B: randomMat(7, 2, 6), magnitude: Array.from({ length: 7 }, (_, j) => 3 + j) };
    const want = naiveMerge(W, fx, 1.5);
    assert.ok(maxAbsDiff(await merged(W, fx, 1.5), want) < 1e-5);
    assert.ok(maxAbsDiff(await merged(W, fx, 1.5, 1, 7), want) < 1e-5);
  });

  it('a weight interpolates between the base (0) and the merged weight (1)', async () => {
    const fx = linear({ magnitude: Array.from({ length: 9 }, () => 1) });
    assert.ok(maxAbsDiff(await merged(W, fx, 1, 0), W) < 1e-6);
    assert.ok(maxAbsDiff(await merged(W, fx, 1, 0.3), naiveMerge(W, fx, 1, 0.3)) < 1e-5);
  });

  it('a DoRA whose magnitude is ‖W + s·B·A‖ per row is the plain LoRA', async () => {
    const fx = linear();
    const dora = { ...fx, magnitude: rowNormsAfterLora(W, fx, 1.25) };
    assert.ok(maxAbsDiff(await merged(W, dora, 1.25), await merged(W, fx, 1.25)) < 1e-5);
  });

  it('updateDifference is W′ − W without cancellation and leaves W alone', async () => {
    const backend = await getBackend();
    // magnitudes within 1e-6 of the norms: W′ − W is tiny, and must still be right to f32 precision
    const fx = linear({ A: randomMat(3, 7, 2, 1e-3) });
    const dora = { ...fx, magnitude: rowNormsAfterLora(W, fx, 1).map((n) => Math.fround(n * (1 + 1e-6))) };
    const Wm = matrix(9, 7, flat(W));
    const D = await updateDifference(backend, Wm, await weightUpdate(backend, toModule(dora), 1));
    assert.deepEqual(Wm.data, flat(W));
    const want = naiveMerge(W, dora, 1).map((row, i) => row.map((v, j) => v - W[i][j]));
    const got = unflat(D.data, 9, 7);
    const scale = Math.max(...want.flat().map(Math.abs));
    assert.ok(maxAbsDiff(got, want) < 1e-5 * scale, `relative error ${maxAbsDiff(got, want) / scale}`);
  });

  it('refuses a magnitude of the wrong length and reports row norms', async () => {
    const backend = await getBackend();
    const fx = linear({ magnitude: [1, 2, 3] });
    await assert.rejects(applyUpdateInPlace(backend, matrix(9, 7, flat(W)), await weightUpdate(backend, toModule(fx), 1)), /magnitude vector has 3 entries/);
    const n = weightNorms(matrix(2, 2, new Float32Array([3, 4, 0, 2])), 'rows');
    assert.deepEqual(Array.from(n), [5, 2]);
    assert.deepEqual(Array.from(weightNorms(matrix(2, 2, new Float32Array([3, 4, 0, 3])), 'cols')), [3, 5]);
  });
});
