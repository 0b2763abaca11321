import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { adapterSpectrum } from '../../src/spectrum/spectrum.js';
import { loraFileLayerIndex, loraFileModuleType } from '../../src/lora/lora-file-format.js';
import { runCli } from '../helpers/cli.js';
import { tempFolders } from '../helpers/synthetic.js';
import { deltaOf, diffusersModules, fluxModules, sdxlModules, singularValuesOf, writeLoraFile, type PlantedModule } from '../helpers/lora-file.js';

const folder = tempFolders('lora-file-spectrum-');

/** Every module's σ against an independent f64 SVD of the rebuilt (alpha/r)·up·down (conv flattened). */
async function checkSpectra(path: string, format: 'kohya' | 'diffusers', modules: PlantedModule[]): Promise<void> {
  const factors = await writeLoraFile(path, format, modules, 5);
  const result = await adapterSpectrum({ adapter: path });
  assert.equal(result.tensors.length, modules.length);
  for (const m of modules) {
    const t = result.tensors.find((x) => x.name === m.stem)!;
    const cols = m.in * (m.kernel ? m.kernel[0] * m.kernel[1] : 1);
    assert.deepEqual(t.shape, [m.out, cols], m.stem);
    assert.equal(t.rank, m.rank);
    const expected = singularValuesOf(deltaOf(m, factors.get(m.stem)!, (m.alpha ?? m.rank) / m.rank), m.out, cols).slice(0, m.rank);
    assert.equal(t.sigma.length, expected.length, m.stem);
    t.sigma.forEach((s, i) => assert.ok(Math.abs(s - expected[i]) <= 1e-5 * expected[0], `${m.stem} σ${i}: ${s} vs ${expected[i]}`));
  }
}

test('spectrum of a kohya SDXL file (3×3 conv included) and a diffusers SD1.5 file equals an independent SVD of each (alpha/r)·up·down', async () => {
  const dir = await folder('values');
  await checkSpectra(join(dir, 'sdxl.safetensors'), 'kohya', sdxlModules());
  await checkSpectra(join(dir, 'sd15.safetensors'), 'diffusers', diffusersModules());
});

test('layers and module types of image-model names: index after blocks/layers, type after the last index, one spelling for both layouts', () => {
  const cases: Array<[string, number | null, string]> = [
    ['lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q', 4, 'attn1_to_q'],
    ['lora_unet_input_blocks_1_0_in_layers_2', 1, 'in_layers_2'],
    ['lora_unet_double_blocks_7_img_attn_qkv', 7, 'img_attn_qkv'],
    ['lora_unet_single_blocks_12_linear1', 12, 'linear1'],
    ['lora_te1_text_model_encoder_layers_3_self_attn_q_proj', 3, 'self_attn_q_proj'],
    ['lora_unet_conv_in', null, 'conv_in'],
    ['unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q', 1, 'attn1_to_q'],
    ['unet.mid_block.resnets.0.conv1', null, 'conv1'],
    ['text_encoder.text_model.encoder.layers.11.mlp.fc2', 11, 'mlp_fc2'],
  ];
  for (const [stem, layer, type] of cases) {
    assert.equal(loraFileLayerIndex(stem), layer, stem);
    assert.equal(loraFileModuleType(stem), type, stem);
  }
});

test('CLI: spectrum --adapter flux.safetensors writes spectrum.json and the report, grouped by the name rule', async () => {
  const dir = await folder('cli');
  const file = join(dir, 'flux.safetensors');
  await writeLoraFile(file, 'kohya', fluxModules(), 9);
  const out = join(dir, 'spec');
  const res = await runCli(['spectrum', '--adapter', file, '--out', out, '--no-png', '--quiet']);
  assert.equal(res.code, 0, res.stderr);
  const json = JSON.parse(await readFile(join(out, 'spectrum.json'), 'utf8'));
  const qkv = json.tensors.find((t: { name: string }) => t.name === 'lora_unet_double_blocks_0_img_attn_qkv');
  assert.equal(qkv.layer, 0);
  assert.equal(qkv.moduleType, 'img_attn_qkv');
  assert.match(await readFile(join(out, 'report.html'), 'utf8'), /img_attn_qkv/);
  assert.match(res.stdout, /img_attn_qkv/);
});
