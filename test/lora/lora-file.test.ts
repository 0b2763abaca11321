import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { join } from 'node:path';
import { openSafetensors, writeSafetensorsFile } from '../../src/io/safetensors.js';
import { openLoraFile } from '../../src/lora/lora-file.js';
import { createLoraFileWriter } from '../../src/lora/lora-file-writer.js';
import { detectLoraFileFormat, kohyaStemFromDiffusers } from '../../src/lora/lora-file-format.js';
import { InputError, UsageError } from '../../src/errors.js';
import { tempFolders } from '../helpers/synthetic.js';
import { diffusersModules, fluxModules, kohyaName, sdxlModules, writeLoraFile, type PlantedModule } from '../helpers/lora-file.js';

const folder = tempFolders('lora-file-');

/** Reads a file back and writes it again through the writer: the modules as loaded, in the same layout and dtype. */
async function rewrite(src: string, dst: string, dtype: 'F32' | 'BF16' = 'F32'): Promise<void> {
  const file = await openLoraFile(src);
  try {
    const writer = createLoraFileWriter(dst, { format: file.format, dtype, metadata: file.metadata });
    for (const m of file.modules) await writer.addModule(await file.load(m.name));
    await writer.finish();
  } finally {
    await file.close();
  }
}

async function rawTensors(path: string): Promise<Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>> {
  const f = await openSafetensors(path);
  try {
    const out = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
    for (const t of f.list()) out.set(t.name, { dtype: t.dtype, shape: t.shape, bytes: await f.readRaw(t.name) });
    return out;
  } finally {
    await f.close();
  }
}

for (const [label, modules, dtype] of [
  ['SDXL', sdxlModules(), 'F32'],
  ['Flux', fluxModules(), 'BF16'],
] as const) {
  test(`kohya ${label} file (${dtype}): read → write round trip is bit-exact (keys, shapes, alpha, metadata)`, async () => {
    const dir = await folder(`rt-${label}`);
    const src = join(dir, 'in.safetensors');
    const dst = join(dir, 'out.safetensors');
    const withConv = modules.some((m) => m.kernel);
    // the metadata kohya's training would write for these modules (rank 4 / alpha 2 is the most common linear pair)
    const lin = modules.filter((m) => !m.kernel);
    const metadata: Record<string, string> = {
      ss_network_module: 'networks.lora',
      ss_network_dim: String(lin[0].rank),
      ss_network_alpha: `${lin[0].alpha}.0`,
      ss_base_model_version: 'sdxl_base_v1-0',
      ...(withConv ? { ss_network_args: JSON.stringify({ conv_dim: '3', conv_alpha: '1.5' }) } : {}),
    };
    // a module without alpha is written back with alpha = r, as kohya reads it: give every module one here
    const all = modules.map((m) => ({ ...m, alpha: m.alpha ?? m.rank }));
    await writeLoraFile(src, 'kohya', all, 7, { dtype, metadata });
    await rewrite(src, dst, dtype);
    const [a, b] = await Promise.all([rawTensors(src), rawTensors(dst)]);
    assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
    for (const [name, t] of a) assert.deepEqual(b.get(name), t, name);
    const meta = (await openLoraFile(dst).then(async (f) => (await f.close(), f.metadata)));
    assert.deepEqual(meta, { format: 'pt', ...metadata });
  });
}

test('kohya file: modules, conv facts, alpha default (no alpha → r) and scaling alpha/r', async () => {
  const dir = await folder('info');
  const path = join(dir, 'a.safetensors');
  await writeLoraFile(path, 'kohya', sdxlModules(), 1);
  const file = await openLoraFile(path);
  try {
    assert.equal(file.format, 'kohya');
    const conv = file.module('lora_unet_input_blocks_1_0_in_layers_2');
    assert.deepEqual(conv.conv, { kernel: [3, 3] });
    assert.equal(conv.inFeatures, 5 * 9);
    assert.equal(conv.scaling, 1.5 / 3);
    const te2 = file.module('lora_te2_text_model_encoder_layers_0_mlp_fc1');
    assert.equal(te2.alpha, 4);
    assert.equal(te2.scaling, 1);
    const loaded = await file.load(conv.name);
    assert.equal(loaded.A.rows, 3);
    assert.equal(loaded.A.cols, 45);
    assert.deepEqual(loaded.conv, { kernel: [3, 3] });
  } finally {
    await file.close();
  }
});

test('kohya names written for diffusers modules follow kohya\'s rule, derived here from the module paths', async () => {
  const dir = await folder('names');
  const src = join(dir, 'd.safetensors');
  const dst = join(dir, 'k.safetensors');
  const paths = diffusersModules().map((m) => m.stem);
  await writeLoraFile(src, 'diffusers', diffusersModules(), 2);
  const file = await openLoraFile(src);
  assert.equal(file.format, 'diffusers');
  const writer = createLoraFileWriter(dst, { format: 'kohya', moduleNames: file.modules.map((m) => m.name) });
  for (const m of file.modules) await writer.addModule(await file.load(m.name));
  await file.close();
  await writer.finish();
  const expected = paths.flatMap((p) => {
    const component = p.slice(0, p.indexOf('.'));
    const prefix = component === 'unet' ? 'lora_unet' : 'lora_te';
    const stem = kohyaName(prefix, p.slice(component.length + 1));
    return [`${stem}.alpha`, `${stem}.lora_down.weight`, `${stem}.lora_up.weight`];
  });
  const written = await rawTensors(dst);
  assert.deepEqual([...written.keys()].sort(), expected.sort());
  assert.deepEqual(written.get('lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight')!.shape, [2, 4, 3, 3]);
  assert.deepEqual(written.get('lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight')!.shape, [6, 2, 1, 1]);
  assert.deepEqual(written.get('lora_unet_down_blocks_0_resnets_0_conv1.alpha')!.shape, []);
  const meta = (await openSafetensors(dst)).metadata;
  assert.equal(meta.ss_network_module, 'networks.lora');
  assert.equal(meta.ss_network_dim, '3');
  assert.equal(meta.ss_network_alpha, '3.0');
  assert.deepEqual(JSON.parse(meta.ss_network_args), { conv_dim: '2', conv_alpha: '2.0' });
  // with SDXL's second text encoder, the first one is lora_te1
  assert.equal(kohyaStemFromDiffusers('text_encoder.text_model.encoder.layers.0.mlp.fc1', true), 'lora_te1_text_model_encoder_layers_0_mlp_fc1');
  assert.equal(kohyaStemFromDiffusers('text_encoder_2.text_model.encoder.layers.0.mlp.fc1', true), 'lora_te2_text_model_encoder_layers_0_mlp_fc1');
  assert.throws(() => kohyaStemFromDiffusers('transformer.transformer_blocks.0.attn.to_q', false), UsageError);
});

test('diffusers file: round trip without alpha is bit-exact; an alpha ≠ r is folded into lora_B', async () => {
  const dir = await folder('diffusers');
  const src = join(dir, 'in.safetensors');
  const dst = join(dir, 'out.safetensors');
  await writeLoraFile(src, 'diffusers', diffusersModules(), 3);
  await rewrite(src, dst);
  const [a, b] = await Promise.all([rawTensors(src), rawTensors(dst)]);
  assert.deepEqual(b, a);

  const withAlpha: PlantedModule[] = [{ stem: 'unet.mid_block.attentions.0.proj_out', out: 4, in: 4, rank: 2, alpha: 1 }];
  const src2 = join(dir, 'alpha.safetensors');
  const factors = await writeLoraFile(src2, 'diffusers', withAlpha, 4);
  const dst2 = join(dir, 'alpha-out.safetensors');
  await rewrite(src2, dst2);
  const out = await rawTensors(dst2);
  assert.equal(out.has('unet.mid_block.attentions.0.proj_out.alpha'), false);
  const B = new Float32Array(out.get('unet.mid_block.attentions.0.proj_out.lora_B.weight')!.bytes.slice().buffer);
  assert.deepEqual(B, factors.get(withAlpha[0].stem)!.up.map((x) => x * 0.5));
});

test("diffusers file: alpha from the header's lora_adapter_metadata (per component)", async () => {
  const dir = await folder('header');
  const path = join(dir, 'a.safetensors');
  await writeLoraFile(path, 'diffusers', diffusersModules(), 5, {
    metadata: { lora_adapter_metadata: JSON.stringify({ 'unet.r': 3, 'unet.lora_alpha': 6, 'unet.alpha_pattern': { 'down_blocks.0.resnets.0.conv1': 1 } }) },
  });
  const file = await openLoraFile(path);
  try {
    assert.equal(file.module('unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q').scaling, 2);
    assert.equal(file.module('unet.down_blocks.0.resnets.0.conv1').scaling, 0.5);
    assert.equal(file.module('text_encoder.text_model.encoder.layers.0.self_attn.q_proj').scaling, 1);
  } finally {
    await file.close();
  }
});

test('LyCORIS, unknown and incomplete files are refused naming the file', async () => {
  assert.throws(() => detectLoraFileFormat('x.safetensors', ['lora_unet_a.hada_w1_a', 'lora_unet_a.hada_w1_b']), (e: Error) => e instanceof InputError && /LyCORIS/.test(e.message) && /not LoRA/.test(e.message));
  assert.throws(() => detectLoraFileFormat('x.safetensors', ['model.layers.0.q_proj.lora_A.weight']), (e: Error) => e instanceof InputError && /x\.safetensors/.test(e.message));
  assert.throws(() => detectLoraFileFormat('x.safetensors', ['lora_unet_a.lora_down.weight', 'unet.a.lora_B.weight']), InputError);
  const dir = await folder('bad');
  const path = join(dir, 'half.safetensors');
  await writeSafetensorsFile(path, [{ name: 'lora_unet_a.lora_down.weight', shape: [2, 3], data: new Float32Array(6), dtype: 'F32' }]);
  await assert.rejects(openLoraFile(path), (e: Error) => e instanceof InputError && /no up factor/.test(e.message) && e.message.includes(path));
});
