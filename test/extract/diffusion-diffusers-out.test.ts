import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/synthetic.js';
import { runCli } from '../helpers/cli.js';
import { extractLora } from '../../src/extract/index.js';
import { extractOptionsFromFlags } from '../../src/cli/extract.js';
import { UsageError } from '../../src/cli/errors.js';
import { openSafetensors } from '../../src/io/safetensors.js';
import { openLoraFile } from '../../src/lora/lora-file.js';
import { FLUX_SHAPES, SDXL_SHAPES, baseOf, plantAll, worstRecovery, writeDiffusersFolder, writeDiffusionPair } from '../helpers/diffusion.js';

const C = 8; // first-level channels (SDXL: 320)
const T = 12; // time embedding (1280)
const CTX = 10; // cross-attention context (2048)
const H = 16; // Flux hidden (3072)

/** A scaled-down SDXL diffusers U-Net (add_embedding marks SDXL): targets by kind, and non-targets. */
const SDXL_LINEAR: Record<string, number[]> = {
  'down_blocks.1.attentions.0.proj_in': [2 * C, 2 * C],
  'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q': [2 * C, 2 * C],
  'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0': [2 * C, 2 * C],
  'down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k': [2 * C, CTX],
  'down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj': [16 * C, 2 * C],
  'down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2': [2 * C, 8 * C],
  'down_blocks.1.attentions.0.proj_out': [2 * C, 2 * C],
  'mid_block.attentions.0.transformer_blocks.0.attn1.to_v': [4 * C, 4 * C],
};
/** With --conv-rank: ResnetBlock2D (3×3 convs, the time-embedding linear, the 1×1 shortcut), down/upsamplers. */
const SDXL_CONV: Record<string, number[]> = {
  'down_blocks.0.resnets.0.conv1': [C, C, 3, 3],
  'down_blocks.0.resnets.0.time_emb_proj': [C, T],
  'down_blocks.0.downsamplers.0.conv': [C, C, 3, 3],
  'up_blocks.0.resnets.0.conv_shortcut': [4 * C, 8 * C, 1, 1],
  'up_blocks.0.upsamplers.0.conv': [4 * C, 4 * C, 3, 3],
};
const SDXL_OTHER: Record<string, number[]> = {
  'conv_in.weight': [C, 4, 3, 3],
  'time_embedding.linear_1.weight': [T, C],
  'add_embedding.linear_1.weight': [T, 24],
  'down_blocks.1.attentions.0.norm.weight': [2 * C],
  'down_blocks.1.attentions.0.transformer_blocks.0.norm1.weight': [2 * C],
  'down_blocks.1.attentions.0.proj_in.bias': [2 * C],
};

/** A scaled-down diffusers Flux transformer: the linears of a double and a single block, and others. */
const FLUX_TARGETS: Record<string, number[]> = {
  ...Object.fromEntries(['to_q', 'to_k', 'to_v', 'to_out.0', 'add_q_proj', 'add_k_proj', 'add_v_proj', 'to_add_out'].map((m) => [`transformer_blocks.0.attn.${m}`, [H, H]])),
  'transformer_blocks.0.ff.net.0.proj': [4 * H, H],
  'transformer_blocks.0.ff.net.2': [H, 4 * H],
  'transformer_blocks.0.ff_context.net.0.proj': [4 * H, H],
  'transformer_blocks.0.ff_context.net.2': [H, 4 * H],
  'transformer_blocks.0.norm1.linear': [6 * H, H],
  'transformer_blocks.0.norm1_context.linear': [6 * H, H],
  'single_transformer_blocks.0.attn.to_q': [H, H],
  'single_transformer_blocks.0.attn.to_k': [H, H],
  'single_transformer_blocks.0.attn.to_v': [H, H],
  'single_transformer_blocks.0.proj_mlp': [4 * H, H],
  'single_transformer_blocks.0.proj_out': [H, 5 * H],
  'single_transformer_blocks.0.norm.linear': [3 * H, H],
};
const FLUX_OTHER: Record<string, number[]> = {
  'x_embedder.weight': [H, 8],
  'context_embedder.weight': [H, 12],
  'transformer_blocks.0.attn.norm_q.weight': [4],
  'transformer_blocks.0.attn.to_q.bias': [H],
  'norm_out.linear.weight': [2 * H, H],
  'proj_out.weight': [8, H],
};

const weights = (m: Record<string, number[]>) => Object.fromEntries(Object.entries(m).map(([p, s]) => [`${p}.weight`, s]));
/** diffusers' LoRA-file stem, restated apart from the code: the component, ".", the module path unchanged. */
const stem = (component: string, path: string) => `${component}.${path}`;

let root: string;
before(async () => {
  root = await makeTempDir('loraforge-extract-diffusers-out-');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function keysAndMetadata(file: string): Promise<{ keys: string[]; metadata: Record<string, string>; shape: (k: string) => number[] }> {
  const f = await openSafetensors(file);
  try {
    const infos = new Map(f.list().map((t) => [t.name, t.shape]));
    return { keys: [...infos.keys()].sort(), metadata: { ...f.metadata }, shape: (k) => infos.get(k)! };
  } finally {
    await f.close();
  }
}

const loraKeys = (stems: string[]) => stems.flatMap((s) => [`${s}.lora_A.weight`, `${s}.lora_B.weight`]).sort();

describe('extract: SDXL diffusers U-Net → diffusers LoRA file (unet.<path>.lora_A/B)', () => {
  let dirs: { a: string; b: string };
  let deltas: Record<string, Float32Array>;
  before(async () => {
    const a = baseOf({ ...weights(SDXL_LINEAR), ...weights(SDXL_CONV), ...SDXL_OTHER }, 5);
    const planted = plantAll(a, [...Object.keys(weights(SDXL_LINEAR)), ...Object.keys(weights(SDXL_CONV)), 'time_embedding.linear_1.weight']);
    deltas = planted.deltas;
    dirs = { a: await writeDiffusersFolder(join(root, 'sdxl-a', 'unet'), a), b: await writeDiffusersFolder(join(root, 'sdxl-b', 'unet'), planted.b, 2) };
  });

  it('by default: every plant (3×3 convs too) recovered, keys derived from the paths, alpha folded into lora_B, read back by openLoraFile', async () => {
    const out = join(root, 'sdxl.safetensors');
    const report = await extractLora({ modelA: dirs.a, modelB: dirs.b, out, policy: { mode: 'rank', rank: 2 }, convPolicy: { mode: 'rank', rank: 2 }, alpha: 1 });
    const modules = [...Object.keys(SDXL_LINEAR), ...Object.keys(SDXL_CONV)];
    const stems = modules.map((p) => stem('unet', p));
    const { keys, metadata, shape } = await keysAndMetadata(out);
    assert.deepEqual(keys, loraKeys(stems));
    assert.deepEqual(shape('unet.down_blocks.0.resnets.0.conv1.lora_A.weight'), [2, C, 3, 3]);
    assert.deepEqual(shape('unet.down_blocks.0.resnets.0.conv1.lora_B.weight'), [C, 2, 1, 1]);
    assert.deepEqual(shape('unet.down_blocks.1.attentions.0.proj_in.lora_A.weight'), [2, 2 * C]);
    // no kohya metadata, and no PEFT config that would scale B a second time
    assert.deepEqual(Object.keys(metadata).filter((k) => k.startsWith('ss_') || k === 'lora_adapter_metadata'), []);
    const lora = await openLoraFile(out);
    try {
      assert.equal(lora.format, 'diffusers');
      assert.deepEqual(lora.modules.map((m) => m.name).sort(), [...stems].sort());
      assert.ok(lora.modules.every((m) => m.alpha === m.rank));
    } finally {
      await lora.close();
    }
    // --alpha 1 at rank 2: the file has no alpha, so lora_B carries the 1/2 and B·A is the delta itself
    const byStem = Object.fromEntries(modules.map((p) => [stem('unet', p), `${p}.weight`]));
    assert.ok((await worstRecovery(out, byStem, deltas)) < 1e-5);
    assert.equal(report.format, 'diffusers');
    assert.equal(report.diffusion?.layout, 'sdxl-diffusers');
    assert.deepEqual(report.nonTargetDiffering.map((d) => d.name), ['time_embedding.linear_1.weight']);
  });

  it('--out-format kohya is refused with the reason and the way out', async () => {
    await assert.rejects(
      extractLora({ modelA: dirs.a, modelB: dirs.b, out: join(root, 'sdxl-kohya.safetensors'), outFormat: 'kohya' }),
      (err: Error) => err instanceof UsageError && /input_blocks/.test(err.message) && /--out-format diffusers/.test(err.message),
    );
  });
});

describe('extract: diffusers Flux transformer → diffusers LoRA file (transformer.<path>.lora_A/B)', () => {
  it("recovers every block linear (kohya's lora_flux set in diffusers names), nothing outside the blocks", async () => {
    const a = baseOf({ ...weights(FLUX_TARGETS), ...FLUX_OTHER }, 6);
    const planted = plantAll(a, [...Object.keys(weights(FLUX_TARGETS)), 'x_embedder.weight', 'norm_out.linear.weight']);
    const dirA = await writeDiffusersFolder(join(root, 'flux-a', 'transformer'), a, 2);
    const dirB = await writeDiffusersFolder(join(root, 'flux-b', 'transformer'), planted.b);
    const out = join(root, 'flux.safetensors');
    const report = await extractLora({ modelA: dirA, modelB: dirB, out, policy: { mode: 'rank', rank: 2 } });
    const stems = Object.keys(FLUX_TARGETS).map((p) => stem('transformer', p));
    assert.deepEqual((await keysAndMetadata(out)).keys, loraKeys(stems));
    const byStem = Object.fromEntries(Object.keys(FLUX_TARGETS).map((p) => [stem('transformer', p), `${p}.weight`]));
    assert.ok((await worstRecovery(out, byStem, planted.deltas)) < 1e-5);
    assert.equal(report.format, 'diffusers');
    assert.deepEqual(report.nonTargetDiffering.map((d) => d.name).sort(), ['norm_out.linear.weight', 'x_embedder.weight']);
    await assert.rejects(extractLora({ modelA: dirA, modelB: dirB, out: join(root, 'flux-kohya.safetensors'), outFormat: 'kohya' }), /BFL.*--out-format diffusers/);
  });
});

describe('extract: --out-format for the other layouts', () => {
  it('SD 1.x single file → diffusers names (the diffusers paths kohya names it by): unet. and text_encoder.', async () => {
    const LDM = 'model.diffusion_model.';
    const shapes = {
      [`${LDM}input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight`]: [C, C],
      [`${LDM}output_blocks.11.1.proj_out.weight`]: [C, C, 1, 1],
      'cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight': [12, 12],
    };
    const a = baseOf(shapes, 7);
    const planted = plantAll(a, Object.keys(shapes));
    const p = await writeDiffusionPair(root, a, planted.b);
    const out = join(root, 'sd1-diffusers.safetensors');
    await extractLora({ modelA: p.a, modelB: p.b, out, policy: { mode: 'rank', rank: 2 }, textEncoders: true, outFormat: 'diffusers' });
    const byStem = {
      'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q': `${LDM}input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight`,
      'unet.up_blocks.3.attentions.2.proj_out': `${LDM}output_blocks.11.1.proj_out.weight`,
      'text_encoder.text_model.encoder.layers.0.self_attn.q_proj': 'cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight',
    };
    assert.deepEqual((await keysAndMetadata(out)).keys, loraKeys(Object.keys(byStem)));
    assert.ok((await worstRecovery(out, byStem, planted.deltas)) < 1e-5);
  });

  it('SDXL and Flux single files are refused as diffusers (their paths are not diffusers\')', async () => {
    const sdxl = baseOf(SDXL_SHAPES, 1);
    const ps = await writeDiffusionPair(root, sdxl, plantAll(sdxl, ['model.diffusion_model.input_blocks.4.1.proj_in.weight']).b);
    await assert.rejects(extractLora({ modelA: ps.a, modelB: ps.b, out: join(root, 'x1.safetensors'), outFormat: 'diffusers' }), /input_blocks.*--out-format kohya/);
    const flux = baseOf(FLUX_SHAPES, 2);
    const pf = await writeDiffusionPair(root, flux, plantAll(flux, ['double_blocks.0.img_attn.proj.weight']).b);
    await assert.rejects(extractLora({ modelA: pf.a, modelB: pf.b, out: join(root, 'x2.safetensors'), outFormat: 'diffusers' }), /BFL.*--out-format kohya/);
  });

  it('CLI: --out-format diffusers|kohya for a .safetensors --out only; writes the diffusers file (exit 0)', async () => {
    const flags = { modelA: 'a', modelB: 'b', out: 'lora.safetensors', seed: '0' };
    assert.equal(extractOptionsFromFlags({ ...flags, outFormat: 'diffusers' }).outFormat, 'diffusers');
    assert.throws(() => extractOptionsFromFlags({ ...flags, outFormat: 'peft' }), UsageError);
    assert.throws(() => extractOptionsFromFlags({ ...flags, out: 'adapter', outFormat: 'kohya' }), /--out-format.*\.safetensors/);
    const a = baseOf(weights(FLUX_TARGETS), 8);
    const planted = plantAll(a, ['single_transformer_blocks.0.proj_mlp.weight']);
    const dirA = await writeDiffusersFolder(join(root, 'cli-a'), a);
    const dirB = await writeDiffusersFolder(join(root, 'cli-b'), planted.b);
    const out = join(root, 'cli.safetensors');
    const r = await runCli(['extract', '--model-a', dirA, '--model-b', dirB, '--out', out, '--rank', '2', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Extracted 1 LoRA module\(s\).*\(diffusers, F32\)/);
    assert.match(r.stdout, /cli\.report\.json/);
  });
});
