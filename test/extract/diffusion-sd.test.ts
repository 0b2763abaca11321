import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/synthetic.js';
import { extractLora } from '../../src/extract/index.js';
import { openSafetensors } from '../../src/io/safetensors.js';
import { baseOf, plantAll, worstRecovery, writeDiffusionPair } from '../helpers/diffusion.js';

const LDM = 'model.diffusion_model.';
const C = 8; // first-level channels (SD: 320)
const D = 12; // text-encoder width (SD 1.x CLIP-L: 768, SD 2.x OpenCLIP-H: 1024)

/**
 * A scaled-down SD 1.x single file: original names, a module of each kind kohya targets, and the
 * kohya name of each written by hand from the diffusers path kohya's loader gives it.
 */
const SD1_TARGETS: Record<string, { shape: number[]; stem: string }> = {
  'input_blocks.1.1.proj_in': { shape: [C, C, 1, 1], stem: 'lora_unet_down_blocks_0_attentions_0_proj_in' },
  'input_blocks.1.1.transformer_blocks.0.attn1.to_q': { shape: [C, C], stem: 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q' },
  'input_blocks.2.1.transformer_blocks.0.attn2.to_k': { shape: [C, D], stem: 'lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_k' },
  'input_blocks.4.1.transformer_blocks.0.ff.net.0.proj': { shape: [16 * C, 2 * C], stem: 'lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj' },
  'middle_block.1.transformer_blocks.0.attn1.to_out.0': { shape: [4 * C, 4 * C], stem: 'lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_out_0' },
  'output_blocks.11.1.proj_out': { shape: [C, C, 1, 1], stem: 'lora_unet_up_blocks_3_attentions_2_proj_out' },
};
/** With --conv-rank: ResBlocks, down- and upsamplers. */
const SD1_CONV_TARGETS: Record<string, { shape: number[]; stem: string }> = {
  'input_blocks.1.0.in_layers.2': { shape: [C, C, 3, 3], stem: 'lora_unet_down_blocks_0_resnets_0_conv1' },
  'input_blocks.3.0.op': { shape: [C, C, 3, 3], stem: 'lora_unet_down_blocks_0_downsamplers_0_conv' },
  'input_blocks.4.0.skip_connection': { shape: [2 * C, C, 1, 1], stem: 'lora_unet_down_blocks_1_resnets_0_conv_shortcut' },
  'middle_block.2.emb_layers.1': { shape: [4 * C, 4 * C], stem: 'lora_unet_mid_block_resnets_1_time_emb_proj' },
  'output_blocks.2.1.conv': { shape: [4 * C, 4 * C, 3, 3], stem: 'lora_unet_up_blocks_0_upsamplers_0_conv' },
  'output_blocks.5.2.conv': { shape: [4 * C, 4 * C, 3, 3], stem: 'lora_unet_up_blocks_1_upsamplers_0_conv' },
  'output_blocks.6.0.out_layers.3': { shape: [2 * C, 2 * C, 3, 3], stem: 'lora_unet_up_blocks_2_resnets_0_conv2' },
};
const SD1_OTHER: Record<string, number[]> = {
  'input_blocks.0.0.weight': [C, 4, 3, 3], // conv_in: never a kohya target
  'time_embed.0.weight': [4 * C, C],
  'input_blocks.1.1.norm.weight': [C],
  'input_blocks.1.1.proj_in.bias': [C],
};
const SD1_TE: Record<string, { shape: number[]; stem: string }> = {
  'cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight': { shape: [D, D], stem: 'lora_te_text_model_encoder_layers_0_self_attn_q_proj' },
  'cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight': { shape: [D, 4 * D], stem: 'lora_te_text_model_encoder_layers_11_mlp_fc2' },
};

let root: string;
before(async () => {
  root = await makeTempDir('loraforge-extract-diffusion-sd-');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

const fullName = (module: string) => `${LDM}${module}.weight`;

async function keysOf(file: string): Promise<{ stems: string[]; metadata: Record<string, string> }> {
  const f = await openSafetensors(file);
  try {
    return { stems: [...new Set(f.list().map((t) => t.name.slice(0, t.name.indexOf('.'))))].sort(), metadata: f.metadata };
  } finally {
    await f.close();
  }
}

describe('extract: SD 1.x/2.x single files → kohya LoRA with diffusers-path names', () => {
  it('SD 1.x: U-Net (with --conv-rank) and CLIP-L te; every plant recovered under its kohya name', async () => {
    const shapes: Record<string, number[]> = Object.fromEntries(Object.entries(SD1_OTHER).map(([n, sh]) => [LDM + n, sh]));
    for (const [m, t] of Object.entries({ ...SD1_TARGETS, ...SD1_CONV_TARGETS })) shapes[fullName(m)] = t.shape;
    for (const [n, t] of Object.entries(SD1_TE)) shapes[n] = t.shape;
    const a = baseOf(shapes, 4);
    const changed = [...Object.keys({ ...SD1_TARGETS, ...SD1_CONV_TARGETS }).map(fullName), ...Object.keys(SD1_TE), `${LDM}time_embed.0.weight`];
    const { b, deltas } = plantAll(a, changed);
    await mkdir(join(root, 'sd1'));
    const p = await writeDiffusionPair(join(root, 'sd1'), a, b);
    const out = join(root, 'sd1.safetensors');
    const report = await extractLora({ modelA: p.a, modelB: p.b, out, policy: { mode: 'rank', rank: 2 }, convPolicy: { mode: 'rank', rank: 2 }, textEncoders: true });
    const byStem: Record<string, string> = {};
    for (const [m, t] of Object.entries({ ...SD1_TARGETS, ...SD1_CONV_TARGETS })) byStem[t.stem] = fullName(m);
    for (const [n, t] of Object.entries(SD1_TE)) byStem[t.stem] = n;
    const { stems, metadata } = await keysOf(out);
    assert.deepEqual(stems, Object.keys(byStem).sort());
    assert.equal(metadata.ss_base_model_version, 'sd_v1');
    assert.equal(metadata.ss_v2, 'False');
    assert.ok((await worstRecovery(out, byStem, deltas)) < 1e-5);
    assert.equal(report.diffusion?.layout, 'sd-ldm');
    assert.deepEqual(report.nonTargetDiffering.map((d) => d.name), [`${LDM}time_embed.0.weight`]);
  });

  it('SD 1.x without --conv-rank: only the transformer modules; the k×k convs reported as skipped', async () => {
    const shapes: Record<string, number[]> = {};
    for (const [m, t] of Object.entries({ ...SD1_TARGETS, ...SD1_CONV_TARGETS })) shapes[fullName(m)] = t.shape;
    const a = baseOf(shapes, 5);
    await mkdir(join(root, 'sd1-noconv'));
    const p = await writeDiffusionPair(join(root, 'sd1-noconv'), a, plantAll(a, Object.keys(shapes)).b);
    const report = await extractLora({ modelA: p.a, modelB: p.b, out: join(root, 'sd1-noconv.safetensors'), policy: { mode: 'rank', rank: 2 } });
    assert.deepEqual((await keysOf(join(root, 'sd1-noconv.safetensors'))).stems, Object.values(SD1_TARGETS).map((t) => t.stem).sort());
    const kxk = Object.entries(SD1_CONV_TARGETS).filter(([, t]) => t.shape.length === 4 && t.shape[2] === 3);
    assert.deepEqual(report.diffusion?.convSkipped.sort(), kxk.map(([m]) => fullName(m)).sort());
  });

  it('SD 2.x: OpenCLIP te converted to HF names, in_proj split into q/k/v rows; the unused resblocks.23 only compared', async () => {
    const te = 'cond_stage_model.model.transformer.resblocks.';
    const shapes: Record<string, number[]> = {
      [fullName('input_blocks.1.1.proj_in')]: [C, C], // SD 2.x: linear projections
      [fullName('input_blocks.1.1.transformer_blocks.0.attn2.to_k')]: [C, D],
      [`${te}0.attn.in_proj_weight`]: [3 * D, D],
      [`${te}0.attn.in_proj_bias`]: [3 * D],
      [`${te}0.attn.out_proj.weight`]: [D, D],
      [`${te}0.mlp.c_fc.weight`]: [4 * D, D],
      [`${te}0.mlp.c_proj.weight`]: [D, 4 * D],
      [`${te}0.ln_1.weight`]: [D],
      [`${te}23.mlp.c_fc.weight`]: [4 * D, D],
      'cond_stage_model.model.token_embedding.weight': [40, D],
    };
    const a = baseOf(shapes, 6);
    const changed = Object.keys(shapes).filter((n) => n.endsWith('weight') && !n.includes('ln_') && !n.includes('token_'));
    const { b, deltas } = plantAll(a, changed);
    await mkdir(join(root, 'sd2'));
    const p = await writeDiffusionPair(join(root, 'sd2'), a, b);
    const out = join(root, 'sd2.safetensors');
    const report = await extractLora({ modelA: p.a, modelB: p.b, out, policy: { mode: 'rank', rank: 2 }, textEncoders: true });
    const layer = 'lora_te_text_model_encoder_layers_0_';
    const qkv = ['q_proj', 'k_proj', 'v_proj'].map((x, i) => ({ stem: `${layer}self_attn_${x}`, rows: [i * D, (i + 1) * D] }));
    const byStem: Record<string, string> = {
      lora_unet_down_blocks_0_attentions_0_proj_in: fullName('input_blocks.1.1.proj_in'),
      lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k: fullName('input_blocks.1.1.transformer_blocks.0.attn2.to_k'),
      [`${layer}self_attn_out_proj`]: `${te}0.attn.out_proj.weight`,
      [`${layer}mlp_fc1`]: `${te}0.mlp.c_fc.weight`,
      [`${layer}mlp_fc2`]: `${te}0.mlp.c_proj.weight`,
    };
    const parts: Record<string, Float32Array> = {};
    for (const { stem, rows } of qkv) {
      byStem[stem] = stem;
      parts[stem] = deltas[`${te}0.attn.in_proj_weight`].slice(rows[0] * D, rows[1] * D);
    }
    const { stems, metadata } = await keysOf(out);
    assert.deepEqual(stems, Object.keys(byStem).sort());
    assert.equal(metadata.ss_base_model_version, 'sd_v2');
    assert.equal(metadata.ss_v2, 'True');
    assert.ok((await worstRecovery(out, byStem, { ...deltas, ...parts })) < 1e-5);
    // each part was read as its own rows: the bytes read count the in_proj once per model
    const whole = Object.values(shapes).reduce((s, sh) => s + 4 * sh.reduce((x, y) => x * y, 1), 0);
    assert.equal(report.totals.bytesRead, 2 * whole);
    assert.deepEqual(report.nonTargetDiffering.map((d) => d.name), [`${te}23.mlp.c_fc.weight`]);
    assert.ok(report.warnings.some((w) => /resblocks\.23/.test(w)));
  });
});
