import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/synthetic.js';
import { extractLora } from '../../src/extract/index.js';
import { openSafetensors } from '../../src/io/safetensors.js';
import { FLUX_SHAPES, baseOf, kohyaStem as stem, plantAll, worstRecovery, writeDiffusionPair, writeSingleFile } from '../helpers/diffusion.js';

const LDM = 'model.diffusion_model.';
let root: string;
before(async () => {
  root = await makeTempDir('loraforge-extract-flux-');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('extract: Flux (BFL names) → kohya LoRA', () => {
  it('recovers every double/single block linear under model.diffusion_model., names as lora_flux; bf16 inputs', async () => {
    const a = baseOf(FLUX_SHAPES, 2, LDM);
    // by hand from kohya's lora_flux.py: every Linear of a double or single stream block
    const targets = Object.keys(FLUX_SHAPES).filter((n) => /^(double|single)_blocks\..*\.weight$/.test(n));
    const planted = plantAll(a, [...targets.map((n) => LDM + n), `${LDM}img_in.weight`]);
    const f32 = await writeDiffusionPair(root, a, planted.b);
    const out = join(root, 'flux.safetensors');
    const report = await extractLora({ modelA: f32.a, modelB: f32.b, out, policy: { mode: 'rank', rank: 2 } });
    const byStem = Object.fromEntries(targets.map((n) => [stem('lora_unet', n.slice(0, -'.weight'.length)), LDM + n]));
    assert.ok((await worstRecovery(out, byStem, planted.deltas)) < 1e-5);
    assert.deepEqual(report.nonTargetDiffering.map((d) => d.name), [`${LDM}img_in.weight`]);
    const file = await openSafetensors(out);
    try {
      assert.deepEqual([...new Set(file.list().map((t) => t.name.slice(0, t.name.indexOf('.'))))].sort(), Object.keys(byStem).sort());
      assert.equal(file.metadata.ss_network_module, 'networks.lora_flux');
      assert.equal(file.metadata.ss_base_model_version, 'flux1');
      assert.equal(file.metadata.ss_network_dim, '2');
    } finally {
      await file.close();
    }
    // bf16 checkpoints: the adapter is bf16 like B, and close to the (bf16-rounded) delta
    const bfA = await writeSingleFile(join(root, 'a16.safetensors'), a, 'BF16');
    const bfB = await writeSingleFile(join(root, 'b16.safetensors'), planted.b, 'BF16');
    const r16 = await extractLora({ modelA: bfA, modelB: bfB, out: join(root, 'flux16.safetensors'), policy: { mode: 'rank', rank: 2 }, verify: true });
    assert.equal(r16.dtype, 'BF16');
    assert.equal(r16.tensors.length, targets.length);
    assert.ok(r16.tensors.every((t) => t.exactRelError! < 0.05), JSON.stringify(r16.tensors.map((t) => t.exactRelError)));
  });

  it('a diffusers transformer without single_transformer_blocks (SD3, …) is refused', async () => {
    const t = baseOf({ 'transformer_blocks.0.attn.to_q.weight': [8, 8] }, 4);
    const p = await writeDiffusionPair(root, t, t);
    await assert.rejects(extractLora({ modelA: p.a, modelB: p.b, out: join(root, 'x.safetensors') }), /not Flux/);
  });
});
