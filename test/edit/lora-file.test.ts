import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openSafetensors } from '../../src/io/safetensors.js';
import { editLoraFile } from '../../src/edit/edit-lora-file.js';
import { runCli } from '../helpers/cli.js';
import { tempFolders } from '../helpers/synthetic.js';
import { deltaOf, diffusersModules, sdxlModules, singularValuesOf, writeLoraFile, type PlantedModule } from '../helpers/lora-file.js';

const folder = tempFolders('lora-file-edit-');

async function readAll(path: string): Promise<{ tensors: Map<string, { shape: number[]; data: Float32Array }>; metadata: Record<string, string> }> {
  const file = await openSafetensors(path);
  try {
    const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const t of file.list()) tensors.set(t.name, { shape: t.shape, data: await file.read(t.name) });
    return { tensors, metadata: file.metadata };
  } finally {
    await file.close();
  }
}

/** A module's (alpha/r)·up·down as written in a kohya file. */
function kohyaDelta(all: Awaited<ReturnType<typeof readAll>>, m: PlantedModule): Float64Array {
  const down = all.tensors.get(`${m.stem}.lora_down.weight`)!;
  const up = all.tensors.get(`${m.stem}.lora_up.weight`)!;
  const r = down.shape[0];
  const alpha = all.tensors.get(`${m.stem}.alpha`)?.data[0] ?? r; // no alpha tensor: alpha = r, as kohya reads it
  return deltaOf({ ...m, rank: r }, { down: down.data, up: up.data }, alpha / r);
}

test('CLI: the identity edit (--scale 0:1) of a kohya SDXL file writes every tensor as read; alpha, conv shapes and header kept, input hashes dropped', async () => {
  const dir = await folder('identity');
  const input = join(dir, 'in.safetensors');
  await writeLoraFile(input, 'kohya', sdxlModules(), 3, { metadata: { ss_base_model_version: 'sdxl_base_v1-0', ss_network_dim: '4', sshs_model_hash: 'abc' } });
  const out = join(dir, 'out.safetensors');
  const res = await runCli(['edit', '--adapter', input, '--out', out, '--scale', '0:1', '--quiet']);
  assert.equal(res.code, 0, res.stderr);
  const [a, b] = [await readAll(input), await readAll(out)];
  // a module saved without alpha (te2's) gets its implied alpha = r written: the same scale
  const added = [...b.tensors.keys()].filter((k) => !a.tensors.has(k));
  assert.deepEqual(added, ['lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha']);
  assert.deepEqual(b.tensors.get(added[0])!.data, Float32Array.of(4));
  for (const [name, t] of a.tensors) {
    assert.deepEqual(b.tensors.get(name)!.shape, t.shape, name);
    assert.deepEqual(b.tensors.get(name)!.data, t.data, name);
  }
  assert.equal(b.metadata.ss_base_model_version, 'sdxl_base_v1-0');
  assert.equal(b.metadata.ss_network_dim, '4');
  assert.equal(b.metadata.sshs_model_hash, undefined);
});

test('library: --zero 0 on a kohya SDXL file removes exactly the top component of every module (conv included), ranks and ss_network_dim follow', async () => {
  const dir = await folder('zero');
  const input = join(dir, 'in.safetensors');
  const modules = sdxlModules();
  await writeLoraFile(input, 'kohya', modules, 4);
  const out = join(dir, 'out.safetensors');
  const summary = await editLoraFile({ adapter: input, out, edit: { zero: [0] } });
  assert.equal(summary.format, 'kohya');
  assert.equal(summary.edited, modules.length);
  const [a, b] = [await readAll(input), await readAll(out)];
  for (const m of modules) {
    const cols = m.in * (m.kernel ? m.kernel[0] * m.kernel[1] : 1);
    const before = kohyaDelta(a, m);
    const after = kohyaDelta(b, m);
    const sigma = singularValuesOf(before, m.out, cols);
    // D' = D − σ₀u₀v₀ᵀ: its σ are D's without σ₀, and D − D' has norm σ₀
    const left = singularValuesOf(after, m.out, cols);
    for (let i = 1; i < m.rank; i++) assert.ok(Math.abs(left[i - 1] - sigma[i]) <= 1e-5 * sigma[0], `${m.stem} σ${i}`);
    const removed = Math.sqrt(before.reduce((s, x, i) => s + (x - after[i]) ** 2, 0));
    assert.ok(Math.abs(removed - sigma[0]) <= 1e-5 * sigma[0], m.stem);
    assert.deepEqual(b.tensors.get(`${m.stem}.lora_down.weight`)!.shape, m.kernel ? [m.rank - 1, m.in, ...m.kernel] : [m.rank - 1, m.in], m.stem);
    assert.equal(b.tensors.get(`${m.stem}.alpha`)!.data[0], m.alpha ?? m.rank, m.stem);
  }
  assert.equal(b.metadata.ss_network_dim, '3');
  assert.equal(JSON.parse(b.metadata.ss_network_args).conv_dim, '2');
});

test('--modules/--layers pick image-model modules by the name rule; unselected modules are copied', async () => {
  const dir = await folder('select');
  const input = join(dir, 'in.safetensors');
  await writeLoraFile(input, 'kohya', sdxlModules(), 6);
  const summary = await editLoraFile({ adapter: input, out: join(dir, 'out.safetensors'), edit: { keep: [0] }, select: { modules: new Set(['attn1_to_q', 'in_layers_2']), layers: new Set([4]) } });
  assert.deepEqual(summary.modules.filter((m) => m.edited).map((m) => m.name), ['lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q']);
});

test('--out-format: diffusers → kohya renames by the mechanical rule with the products kept; kohya → diffusers is a usage error', async () => {
  const dir = await folder('formats');
  const input = join(dir, 'sd15.safetensors');
  const modules = diffusersModules();
  const factors = await writeLoraFile(input, 'diffusers', modules, 8);
  const out = join(dir, 'kohya.safetensors');
  await editLoraFile({ adapter: input, out, edit: { scale: new Map([[0, 1]]) }, outFormat: 'kohya' });
  const b = await readAll(out);
  // kohya's names from the module paths, independently of the writer: prefix + path with "." → "_"
  const expected = modules.map((m) => ({ ...m, stem: (m.stem.startsWith('unet.') ? 'lora_unet_' : 'lora_te_') + m.stem.slice(m.stem.indexOf('.') + 1).replaceAll('.', '_') }));
  assert.deepEqual([...b.tensors.keys()].sort(), expected.flatMap((m) => [`${m.stem}.alpha`, `${m.stem}.lora_down.weight`, `${m.stem}.lora_up.weight`]).sort());
  for (const [i, m] of expected.entries()) {
    const want = deltaOf(modules[i], factors.get(modules[i].stem)!, 1);
    const got = kohyaDelta(b, m);
    got.forEach((x, j) => assert.ok(Math.abs(x - want[j]) <= 1e-6 * (1 + Math.abs(want[j])), m.stem));
  }
  const kohyaIn = join(dir, 'sdxl.safetensors');
  await writeLoraFile(kohyaIn, 'kohya', sdxlModules(), 1);
  const refused = await runCli(['edit', '--adapter', kohyaIn, '--out', join(dir, 'd.safetensors'), '--zero', '0', '--out-format', 'diffusers']);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /no exact diffusers spelling/);
});

test('--out-format peft: one component of a diffusers file becomes a PEFT folder (module paths, conv 4-D, full target_modules, task_type null)', async () => {
  const dir = await folder('peft');
  const input = join(dir, 'unet.safetensors');
  const modules = diffusersModules().filter((m) => m.stem.startsWith('unet.'));
  await writeLoraFile(input, 'diffusers', modules, 2);
  const out = join(dir, 'peft');
  const summary = await editLoraFile({ adapter: input, out, edit: { zero: [1] }, outFormat: 'peft' });
  assert.equal(summary.format, 'peft');
  const b = await readAll(join(out, 'adapter_model.safetensors'));
  const paths = modules.map((m) => m.stem.slice('unet.'.length));
  assert.deepEqual([...b.tensors.keys()].sort(), paths.flatMap((p) => [`base_model.model.${p}.lora_A.weight`, `base_model.model.${p}.lora_B.weight`]).sort());
  const conv = modules.find((m) => m.kernel)!;
  assert.deepEqual(b.tensors.get(`base_model.model.${conv.stem.slice(5)}.lora_A.weight`)!.shape, [conv.rank - 1, conv.in, ...conv.kernel!]);
  assert.deepEqual(b.tensors.get(`base_model.model.${conv.stem.slice(5)}.lora_B.weight`)!.shape, [conv.out, conv.rank - 1, 1, 1]);
  const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
  assert.deepEqual(config.target_modules, [...paths].sort());
  assert.equal(config.task_type, null);

  const both = join(dir, 'both.safetensors');
  await writeLoraFile(both, 'diffusers', diffusersModules(), 2);
  await assert.rejects(editLoraFile({ adapter: both, out: join(dir, 'peft2'), edit: { zero: [0] }, outFormat: 'peft' }), /span text_encoder, unet/);
});
