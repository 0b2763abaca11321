import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/synthetic.js';
import { extractLora } from '../../src/extract/index.js';
import { openSafetensors } from '../../src/io/safetensors.js';
import { SDXL_SHAPES, baseOf, kohyaStem as stem, plantAll, worstRecovery, writeDiffusionPair } from '../helpers/diffusion.js';
import type { ExtractReport } from '../../src/extract/index.js';

const LDM = 'model.diffusion_model.';

// Written by hand from kohya's rules (networks/lora.py), not from loraforge's classifier: the
// Transformer2DModel linears (proj_in/out: Linear in SDXL) at --rank; with conv_dim also the
// ResBlock (its 3×3 convs, time-embedding linear, 1×1 skip), Downsample (op) and Upsample (conv).
const SDXL_LINEAR = [
  'input_blocks.4.1.proj_in',
  'input_blocks.4.1.transformer_blocks.0.attn1.to_q',
  'input_blocks.4.1.transformer_blocks.0.attn1.to_out.0',
  'input_blocks.4.1.transformer_blocks.0.attn2.to_k',
  'input_blocks.4.1.transformer_blocks.0.ff.net.0.proj',
  'input_blocks.4.1.transformer_blocks.0.ff.net.2',
  'input_blocks.4.1.proj_out',
  'middle_block.1.transformer_blocks.0.attn1.to_v',
];
const SDXL_CONV_BLOCKS = ['input_blocks.1.0.emb_layers.1', 'input_blocks.4.0.skip_connection'];
const SDXL_CONV_KXK = ['input_blocks.1.0.in_layers.2', 'input_blocks.1.0.out_layers.3', 'input_blocks.3.0.op', 'output_blocks.2.2.conv'];
const SDXL_TE1 = ['text_model.encoder.layers.0.self_attn.q_proj', 'text_model.encoder.layers.0.mlp.fc1'];
// te2 (OpenCLIP): kohya's HF names for the three row blocks of in_proj, q then k then v (width 16)
const TE2_IN_PROJ = 'conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight';
const SDXL_TE2 = ['q_proj', 'k_proj', 'v_proj'].map((p, i) => ({ stem: `lora_te2_text_model_encoder_layers_0_self_attn_${p}`, rows: [16 * i, 16 * (i + 1)] }));

let root: string;
let sdxl: { a: string; b: string };
let deltas: Record<string, Float32Array>;
before(async () => {
  root = await makeTempDir('loraforge-extract-diffusion-');
  const a = baseOf(SDXL_SHAPES, 1);
  const changed = [
    ...[...SDXL_LINEAR, ...SDXL_CONV_BLOCKS, ...SDXL_CONV_KXK].map((p) => `${LDM}${p}.weight`),
    ...SDXL_TE1.map((p) => `conditioner.embedders.0.transformer.${p}.weight`),
    `${LDM}time_embed.0.weight`,
    'conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight',
  ];
  const planted = plantAll(a, changed);
  deltas = planted.deltas;
  sdxl = await writeDiffusionPair(root, a, planted.b);
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('extract: SDXL single file → kohya LoRA', () => {
  it('with --conv-rank: kohya names and shapes, ss_* metadata, every plant (3×3 convs too) recovered', async () => {
    const out = join(root, 'sdxl-conv.safetensors');
    const report = await extractLora({ modelA: sdxl.a, modelB: sdxl.b, out, policy: { mode: 'rank', rank: 2 }, convPolicy: { mode: 'rank', rank: 2 }, textEncoders: true });
    const expected = [...SDXL_LINEAR, ...SDXL_CONV_BLOCKS, ...SDXL_CONV_KXK]
      .map((p) => stem('lora_unet', p))
      .concat(SDXL_TE1.map((p) => stem('lora_te1', p)))
      .concat(SDXL_TE2.map((t) => t.stem));
    const file = await openSafetensors(out);
    try {
      const keys = file.list().map((t) => t.name).sort();
      assert.deepEqual(keys, expected.flatMap((s) => [`${s}.alpha`, `${s}.lora_down.weight`, `${s}.lora_up.weight`]).sort());
      const shape = (k: string) => file.info(k).shape;
      assert.deepEqual(shape(`${stem('lora_unet', 'input_blocks.1.0.in_layers.2')}.lora_down.weight`), [2, 16, 3, 3]);
      assert.deepEqual(shape(`${stem('lora_unet', 'input_blocks.1.0.in_layers.2')}.lora_up.weight`), [16, 2, 1, 1]);
      assert.deepEqual(shape(`${stem('lora_unet', 'input_blocks.4.0.skip_connection')}.lora_down.weight`), [2, 16, 1, 1]);
      assert.deepEqual(shape(`${stem('lora_unet', 'input_blocks.4.1.proj_in')}.lora_down.weight`), [2, 32]);
      assert.deepEqual(shape(`${stem('lora_unet', 'input_blocks.4.1.proj_in')}.alpha`), []);
      assert.equal(file.metadata.ss_network_module, 'networks.lora');
      assert.equal(file.metadata.ss_base_model_version, 'sdxl_base_v1-0');
      assert.equal(file.metadata.ss_v2, 'False');
      assert.equal(file.metadata.ss_network_dim, '2');
      assert.equal(file.metadata.ss_network_alpha, '2.0');
      assert.deepEqual(JSON.parse(file.metadata.ss_network_args), { conv_dim: '2', conv_alpha: '2.0' });
    } finally {
      await file.close();
    }
    const byStem = Object.fromEntries([
      ...[...SDXL_LINEAR, ...SDXL_CONV_BLOCKS, ...SDXL_CONV_KXK].map((p) => [stem('lora_unet', p), `${LDM}${p}.weight`]),
      ...SDXL_TE1.map((p) => [stem('lora_te1', p), `conditioner.embedders.0.transformer.${p}.weight`]),
      ...SDXL_TE2.map((t) => [t.stem, t.stem]),
    ]);
    // each te2 module recovers its own rows of the in_proj delta (16 columns)
    const parts = Object.fromEntries(SDXL_TE2.map((t) => [t.stem, deltas[TE2_IN_PROJ].slice(t.rows[0] * 16, t.rows[1] * 16)]));
    assert.ok((await worstRecovery(out, byStem, { ...deltas, ...parts })) < 1e-5);
    // the report: per-module errors (te2's parts by their rows), the non-targets that changed
    assert.equal(report.format, 'kohya');
    assert.equal(report.tensors.length, expected.length);
    assert.ok(report.tensors.every((t) => t.relError < 1e-3));
    assert.deepEqual(
      report.tensors.filter((t) => t.module.startsWith('lora_te2_')).map((t) => [t.name, t.module, t.shape]),
      SDXL_TE2.map((t) => [`${TE2_IN_PROJ}[${t.rows[0]}:${t.rows[1]}]`, t.stem, [16, 16]]),
    );
    assert.deepEqual(report.nonTargetDiffering.map((d) => d.name), [`${LDM}time_embed.0.weight`]);
    assert.equal(report.warnings.length, 0);
    const saved = JSON.parse(await readFile(join(root, 'sdxl-conv.report.json'), 'utf8')) as ExtractReport;
    assert.equal(saved.diffusion?.layout, 'sdxl');
  });

  it('without --conv-rank: no conv targets (nor the ResBlock linears), the skipped convs reported', async () => {
    const out = join(root, 'sdxl.safetensors');
    const report = await extractLora({ modelA: sdxl.a, modelB: sdxl.b, out, policy: { mode: 'rank', rank: 2 } });
    const file = await openSafetensors(out);
    try {
      const stems = [...new Set(file.list().map((t) => t.name.slice(0, t.name.indexOf('.'))))].sort();
      assert.deepEqual(stems, SDXL_LINEAR.map((p) => stem('lora_unet', p)).sort());
      assert.equal(file.metadata.ss_network_args, undefined);
    } finally {
      await file.close();
    }
    // conv_in / conv_out are outside kohya's blocks: never targets, so not "skipped" either
    assert.deepEqual(report.diffusion?.convSkipped.sort(), SDXL_CONV_KXK.map((p) => `${LDM}${p}.weight`).sort());
    assert.ok(report.notes.some((n) => /--conv-rank/.test(n)));
    const reasons = report.nonTargetDiffering.filter((d) => d.reason?.includes('--conv-rank')).map((d) => d.name);
    assert.equal(reasons.length, SDXL_CONV_KXK.length);
  });

  it('refuses an existing --out without overwrite', async () => {
    await assert.rejects(extractLora({ modelA: sdxl.a, modelB: sdxl.b, out: sdxl.a }), /exists/);
  });
});

