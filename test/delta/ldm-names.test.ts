import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ldmUnetToDiffusers, openClipToHf } from '../../src/delta/ldm-names.js';
import { classifyDiffusionTensor, detectDiffusionModel } from '../../src/delta/diffusion-targets.js';

type Kind = 'linear' | 'conv1' | 'conv3' | 'norm';
interface Module {
  ldm: string;
  diffusers: string;
  kind: Kind;
}

/**
 * Every weight-bearing module of the SD 1.5 U-Net, built forward from the diffusers architecture
 * (UNet2DConditionModel: block_out_channels 320/640/1280/1280, 2 layers per block, cross-attention
 * on the first three levels) with the original name of each written beside it as the LDM
 * checkpoint orders its blocks. It walks the architecture, not the names, so it is independent
 * of the mapping under test (which parses names).
 */
function sd15Unet(): Module[] {
  const out: Module[] = [];
  const add = (ldm: string, diffusers: string, kind: Kind) => out.push({ ldm, diffusers, kind });
  const resnet = (ldm: string, d: string, shortcut: boolean) => {
    add(`${ldm}.in_layers.0`, `${d}.norm1`, 'norm');
    add(`${ldm}.in_layers.2`, `${d}.conv1`, 'conv3');
    add(`${ldm}.emb_layers.1`, `${d}.time_emb_proj`, 'linear');
    add(`${ldm}.out_layers.0`, `${d}.norm2`, 'norm');
    add(`${ldm}.out_layers.3`, `${d}.conv2`, 'conv3');
    if (shortcut) add(`${ldm}.skip_connection`, `${d}.conv_shortcut`, 'conv1');
  };
  const transformer = (ldm: string, d: string) => {
    add(`${ldm}.norm`, `${d}.norm`, 'norm');
    add(`${ldm}.proj_in`, `${d}.proj_in`, 'conv1'); // SD 1.x: 1×1 conv projections
    for (const x of ['attn1.to_q', 'attn1.to_k', 'attn1.to_v', 'attn1.to_out.0', 'attn2.to_q', 'attn2.to_k', 'attn2.to_v', 'attn2.to_out.0', 'ff.net.0.proj', 'ff.net.2']) {
      add(`${ldm}.transformer_blocks.0.${x}`, `${d}.transformer_blocks.0.${x}`, 'linear');
    }
    for (const n of ['norm1', 'norm2', 'norm3']) add(`${ldm}.transformer_blocks.0.${n}`, `${d}.transformer_blocks.0.${n}`, 'norm');
    add(`${ldm}.proj_out`, `${d}.proj_out`, 'conv1');
  };
  add('time_embed.0', 'time_embedding.linear_1', 'linear');
  add('time_embed.2', 'time_embedding.linear_2', 'linear');
  add('input_blocks.0.0', 'conv_in', 'conv3');
  let ldmIn = 1;
  for (let level = 0; level < 4; level++) {
    for (let j = 0; j < 2; j++, ldmIn++) {
      // a 1×1 shortcut where the channels change: entering levels 1 and 2 (320→640→1280; level 3 stays 1280)
      resnet(`input_blocks.${ldmIn}.0`, `down_blocks.${level}.resnets.${j}`, (level === 1 || level === 2) && j === 0);
      if (level < 3) transformer(`input_blocks.${ldmIn}.1`, `down_blocks.${level}.attentions.${j}`);
    }
    if (level < 3) add(`input_blocks.${ldmIn++}.0.op`, `down_blocks.${level}.downsamplers.0.conv`, 'conv3');
  }
  resnet('middle_block.0', 'mid_block.resnets.0', false);
  transformer('middle_block.1', 'mid_block.attentions.0');
  resnet('middle_block.2', 'mid_block.resnets.1', false);
  let ldmOut = 0;
  for (let level = 0; level < 4; level++) {
    const attention = level > 0;
    for (let j = 0; j < 3; j++, ldmOut++) {
      resnet(`output_blocks.${ldmOut}.0`, `up_blocks.${level}.resnets.${j}`, true);
      if (attention) transformer(`output_blocks.${ldmOut}.1`, `up_blocks.${level}.attentions.${j}`);
      if (level < 3 && j === 2) add(`output_blocks.${ldmOut}.${attention ? 2 : 1}.conv`, `up_blocks.${level}.upsamplers.0.conv`, 'conv3');
    }
  }
  add('out.0', 'conv_norm_out', 'norm');
  add('out.2', 'conv_out', 'conv3');
  return out;
}

const SHAPE: Record<Kind, number[]> = { linear: [8, 8], conv1: [8, 8, 1, 1], conv3: [8, 8, 3, 3], norm: [8] };

describe('SD 1.x/2.x single-file names → the diffusers paths kohya names LoRA modules by', () => {
  const unet = sd15Unet();

  it('maps every module of the SD 1.5 U-Net to its diffusers path', () => {
    // the real file's 686 U-Net tensors: each module's weight and bias, but no bias on the 16 transformers' attention q/k/v
    assert.equal(2 * unet.length - 16 * 6, 686);
    for (const m of unet) assert.equal(ldmUnetToDiffusers(m.ldm), m.diffusers, m.ldm);
  });

  it('agrees with names read off the real SD 1.5 files', () => {
    const real: Array<[string, string]> = [
      ['input_blocks.1.1.transformer_blocks.0.attn1.to_q', 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q'],
      ['input_blocks.3.0.op', 'down_blocks.0.downsamplers.0.conv'],
      ['input_blocks.4.0.skip_connection', 'down_blocks.1.resnets.0.conv_shortcut'],
      ['input_blocks.8.1.proj_out', 'down_blocks.2.attentions.1.proj_out'],
      ['input_blocks.11.0.out_layers.3', 'down_blocks.3.resnets.1.conv2'],
      ['middle_block.0.emb_layers.1', 'mid_block.resnets.0.time_emb_proj'],
      ['middle_block.1.transformer_blocks.0.ff.net.0.proj', 'mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj'],
      ['middle_block.2.in_layers.2', 'mid_block.resnets.1.conv1'],
      ['output_blocks.2.1.conv', 'up_blocks.0.upsamplers.0.conv'],
      ['output_blocks.3.1.proj_in', 'up_blocks.1.attentions.0.proj_in'],
      ['output_blocks.5.2.conv', 'up_blocks.1.upsamplers.0.conv'],
      ['output_blocks.8.2.conv', 'up_blocks.2.upsamplers.0.conv'],
      ['output_blocks.11.1.transformer_blocks.0.attn2.to_out.0', 'up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0'],
    ];
    for (const [ldm, diffusers] of real) assert.equal(ldmUnetToDiffusers(ldm), diffusers, ldm);
    for (const outside of ['input_blocks.0.1.proj_in', 'input_blocks.3.1.proj_in', 'output_blocks.1.1.conv', 'output_blocks.4.0.op', 'middle_block.3.conv', 'label_emb.0.0']) {
      assert.equal(ldmUnetToDiffusers(outside), undefined, outside);
    }
  });

  it("targets what kohya's networks/lora.py creates for SD 1.5: 192 U-Net modules, 278 with conv_dim", () => {
    const list = unet.map((m) => ({ name: `model.diffusion_model.${m.ldm}.weight`, shape: SHAPE[m.kind] }));
    const model = detectDiffusionModel(list, 'sd15.safetensors');
    assert.equal(model?.layout, 'sd-ldm');
    assert.equal(model?.baseModelVersion, 'sd_v1');
    for (const conv of [false, true]) {
      const stems = list.flatMap((t) => {
        const role = classifyDiffusionTensor(model!, t.name, t.shape, { conv, textEncoders: false, format: 'kohya' });
        return role.kind === 'lora' ? [role.stem] : [];
      });
      assert.equal(stems.length, conv ? 278 : 192);
      // the stem is kohya's rule over the diffusers path, restated: prefix, then "." → "_"
      const expected = unet
        .filter((m) => m.kind !== 'norm' && !m.diffusers.startsWith('conv_') && !m.diffusers.startsWith('time_embedding'))
        .filter((m) => conv || m.diffusers.includes('.attentions.'))
        .map((m) => `lora_unet_${m.diffusers.split('.').join('_')}`);
      assert.deepEqual(stems, expected);
    }
  });
});

describe('OpenCLIP text-encoder names → kohya’s HF CLIP names', () => {
  it('splits in_proj into q, k, v and renames out_proj, c_fc, c_proj; leaves the rest out', () => {
    assert.deepEqual(openClipToHf('resblocks.7.attn.in_proj'), [
      'text_model.encoder.layers.7.self_attn.q_proj',
      'text_model.encoder.layers.7.self_attn.k_proj',
      'text_model.encoder.layers.7.self_attn.v_proj',
    ]);
    assert.deepEqual(openClipToHf('resblocks.0.attn.out_proj'), ['text_model.encoder.layers.0.self_attn.out_proj']);
    assert.deepEqual(openClipToHf('resblocks.31.mlp.c_fc'), ['text_model.encoder.layers.31.mlp.fc1']);
    assert.deepEqual(openClipToHf('resblocks.31.mlp.c_proj'), ['text_model.encoder.layers.31.mlp.fc2']);
    for (const other of ['resblocks.0.ln_1', 'token_embedding', 'ln_final', 'text_projection']) assert.equal(openClipToHf(other), undefined);
  });
});
