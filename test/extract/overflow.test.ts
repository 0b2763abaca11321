/**
 * Differences at the f32 limit (issue 13, "exit 0 with wrong numbers" 1): finite inputs whose
 * difference overflows f32, or whose decomposition does, must stop extract, spectrum and edit with
 * an error naming the tensor, never write NaN factors or report NaN% with exit 0.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { TINY_LLAMA, llamaBase, llamaConfig, writePair, type Tensors } from '../helpers/extract.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { subtractInPlace } from '../../src/delta/delta.js';
import { extractLora } from '../../src/extract/index.js';
import { getBackend } from '../../src/linalg/index.js';
import { deltaSpectrum } from '../../src/spectrum/spectrum.js';
import { editDelta } from '../../src/edit/edit.js';

const NAME = 'model.layers.0.self_attn.q_proj.weight';
const OVERFLOW = /tensor "model\.layers\.0\.self_attn\.q_proj\.weight": the difference of the two models overflows f32 at element 5/;

/** A and B equal but for q_proj's elements 0..count-1 of row 0, set to `a` in A and `b` in B. */
function pairWith(a: number, b: number, count = 1): { a: Tensors; b: Tensors } {
  const base = llamaBase(TINY_LLAMA, 1);
  const edited = (v: number): Tensors => {
    const data = base[NAME].data.slice();
    data.fill(v, 5, 5 + count);
    return { ...base, [NAME]: { shape: base[NAME].shape, data } };
  };
  return { a: edited(a), b: edited(b) };
}

let root: string;
let overflow: { a: string; b: string };
let huge: { a: string; b: string };
before(async () => {
  root = await makeTempDir('loraforge-overflow-');
  const o = pairWith(3e38, -3e38);
  overflow = await writePair(join(root, 'overflow'), o.a, o.b, { config: llamaConfig(TINY_LLAMA) });
  // each difference is finite, but a row of them sums past the f32 limit in Δ·Ω
  const h = pairWith(1.6e38, -1.6e38, 8);
  huge = await writePair(join(root, 'huge'), h.a, h.b, { config: llamaConfig(TINY_LLAMA) });
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('a difference at the f32 limit', () => {
  it('subtractInPlace refuses a difference that overflows f32 though both inputs are finite', () => {
    assert.throws(
      () => subtractInPlace(Float32Array.from([3e38, 1]), Float32Array.from([-3e38, 1]), { a: 'fa', b: 'fb: tensor "t"' }),
      /fb: tensor "t": the difference of the two models overflows f32 at element 0/,
    );
  });

  it('extract exits 1 naming the tensor when W_B − W_A overflows f32 (was: NaN% and targetMet: true)', async () => {
    const r = await runCli(['extract', '--model-a', overflow.a, '--model-b', overflow.b, '--out', join(root, 'x1'), '--rank', '2']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, OVERFLOW);
  });

  it('spectrum and edit refuse it too (was: σ null, NaN factors)', async () => {
    const backend = await getBackend();
    await assert.rejects(deltaSpectrum({ backend, modelA: overflow.a, modelB: overflow.b }), OVERFLOW);
    await assert.rejects(editDelta({ backend, modelA: overflow.a, modelB: overflow.b, out: join(root, 'e1'), rank: 2, edit: { zero: [0] } }), OVERFLOW);
  });

  it('extract refuses a finite difference that overflows inside the decomposition', async () => {
    await assert.rejects(
      extractLora({ modelA: huge.a, modelB: huge.b, out: join(root, 'x2'), policy: { mode: 'rank', rank: 2 } }),
      /tensor "model\.layers\.0\.self_attn\.q_proj\.weight": its difference is too large to decompose in f32/,
    );
  });
});
