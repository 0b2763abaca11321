import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/synthetic.js';
import { extractLora } from '../../src/extract/index.js';
import { baseOf, kohyaStem as stem, plantAll, worstRecovery, writeDiffusersFolder } from '../helpers/diffusion.js';

/** An SD 1.x diffusers U-Net subset: kohya's linear targets inside the transformer blocks, and a conv. */
const SD_UNET: Record<string, number[]> = {
  'conv_in.weight': [16, 4, 3, 3],
  'down_blocks.0.attentions.0.proj_in.weight': [16, 16],
  'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight': [16, 16],
  'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight': [16, 12],
  'mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight': [16, 32],
  'up_blocks.1.attentions.0.proj_out.weight': [16, 16],
};

let root: string;
before(async () => {
  root = await makeTempDir('loraforge-extract-sharded-');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('extract: sharded diffusers U-Net folders', () => {
  it('reads A and B through diffusion_pytorch_model.safetensors.index.json (different shard counts) and recovers the plant', async () => {
    const a = baseOf(SD_UNET, 3);
    const targets = Object.keys(SD_UNET).filter((n) => n.includes('attentions'));
    const planted = plantAll(a, targets);
    const dirA = await writeDiffusersFolder(join(root, 'a', 'unet'), a, 2);
    const dirB = await writeDiffusersFolder(join(root, 'b', 'unet'), planted.b, 3, 'BF16');
    const out = join(root, 'sd.safetensors');
    const report = await extractLora({ modelA: dirA, modelB: dirB, out, policy: { mode: 'rank', rank: 2 } });
    assert.equal(report.tensors.length, targets.length);
    const byStem = Object.fromEntries(targets.map((n) => [stem('lora_unet', n.slice(0, -'.weight'.length)), n]));
    // B is bf16: the recovered delta is the rounded one
    assert.ok((await worstRecovery(out, byStem, planted.deltas)) < 0.05);
  });
});
