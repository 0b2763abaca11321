import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { baseOf, writeDiffusersFolder, writeSingleFile } from '../helpers/diffusion.js';

const SHAPES: Record<string, number[]> = {
  'conv_in.weight': [8, 4, 3, 3],
  'down_blocks.0.attentions.0.proj_in.weight': [8, 8],
  'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight': [8, 8],
  'mid_block.resnets.0.conv1.weight': [8, 8, 3, 3],
  'up_blocks.0.resnets.0.time_emb_proj.weight': [8, 12],
};

let root: string;
before(async () => {
  root = await makeTempDir('loraforge-ckpt-diffusers-');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('openCheckpoint: diffusers model folders', () => {
  it('reads a sharded folder through diffusion_pytorch_model.safetensors.index.json, each tensor from its shard', async () => {
    const t = baseOf(SHAPES, 1);
    const dir = await writeDiffusersFolder(join(root, 'sharded', 'unet'), t, 2);
    const ckpt = await openCheckpoint(dir);
    try {
      assert.deepEqual(ckpt.files, [1, 2].map((i) => join(dir, `diffusion_pytorch_model-0000${i}-of-00002.safetensors`)));
      assert.deepEqual(ckpt.list().map((x) => x.name), Object.keys(SHAPES));
      assert.deepEqual(ckpt.config, { _class_name: 'UNet2DConditionModel' });
      for (const [name, { data }] of Object.entries(t)) assert.deepEqual(await ckpt.read(name), data, name);
      assert.equal(ckpt.locate('up_blocks.0.resnets.0.time_emb_proj.weight').path, ckpt.files[1]);
    } finally {
      await ckpt.close();
    }
    // the index's shard checks hold for diffusers' index too
    await unlink(ckpt.files[1]);
    await assert.rejects(openCheckpoint(dir), /diffusion_pytorch_model\.safetensors\.index\.json names shard diffusion_pytorch_model-00002-of-00002\.safetensors, which is missing/);
  });

  it('reads diffusion_pytorch_model.safetensors, before a variant beside it (fp16), as diffusers does without --variant', async () => {
    const t = baseOf(SHAPES, 2);
    const dir = await writeDiffusersFolder(join(root, 'single'), t);
    await writeSingleFile(join(dir, 'diffusion_pytorch_model.fp16.safetensors'), t, 'F16');
    const ckpt = await openCheckpoint(dir);
    try {
      assert.deepEqual(ckpt.files, [join(dir, 'diffusion_pytorch_model.safetensors')]);
      assert.equal(ckpt.info('conv_in.weight').dtype, 'F32');
    } finally {
      await ckpt.close();
    }
  });

  it('refuses both the single file and the index, saying diffusers would load the shards', async () => {
    const dir = await writeDiffusersFolder(join(root, 'stale'), baseOf(SHAPES, 3), 2);
    await writeSingleFile(join(dir, 'diffusion_pytorch_model.safetensors'), baseOf(SHAPES, 4));
    await assert.rejects(openCheckpoint(dir), (e: Error) => {
      assert.match(e.message, /has both diffusion_pytorch_model\.safetensors and diffusion_pytorch_model\.safetensors\.index\.json: diffusers would load the shards and ignore diffusion_pytorch_model\.safetensors/);
      assert.ok(e.message.includes(`pass ${join(dir, 'diffusion_pytorch_model.safetensors')} itself`), e.message);
      return true;
    });
    const single = await openCheckpoint(join(dir, 'diffusion_pytorch_model.safetensors'));
    await single.close();
  });

  it('refuses a whole pipeline folder, naming the exact paths to pass', async () => {
    const pipe = join(root, 'pipe');
    await writeDiffusersFolder(join(pipe, 'unet'), baseOf(SHAPES, 5), 2);
    await mkdir(join(pipe, 'text_encoder'), { recursive: true });
    await writeFile(join(pipe, 'model_index.json'), '{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}');
    await assert.rejects(openCheckpoint(pipe), (e: Error) => {
      assert.equal(e.message, `${pipe} is a whole diffusers pipeline (model_index.json), not one model: pass its denoiser folder or a single-file checkpoint: ${join(pipe, 'unet')}`);
      return true;
    });
    // a repo that also carries the original single file (SDXL base): both choices are named
    await writeSingleFile(join(pipe, 'sd_xl_base_1.0.safetensors'), baseOf({ 'model.diffusion_model.out.2.weight': [4, 8, 3, 3] }, 6));
    await assert.rejects(openCheckpoint(pipe), new RegExp(`${join(pipe, 'unet')}, ${join(pipe, 'sd_xl_base_1.0.safetensors')}$`.replaceAll('.', '\\.')));
    const empty = join(root, 'pipe-empty');
    await mkdir(empty, { recursive: true });
    await writeFile(join(empty, 'model_index.json'), '{}');
    await assert.rejects(openCheckpoint(empty), /pipeline \(model_index\.json\), not one model: it has no unet\/ or transformer\/ folder/);
    const unet = await openCheckpoint(join(pipe, 'unet'));
    assert.equal(unet.list().length, Object.keys(SHAPES).length);
    await unet.close();
  });
});
