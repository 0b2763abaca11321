/**
 * Passthrough with slices: layers stacked and renumbered, every tensor byte-identical to its
 * source (f32 arithmetic is never applied, and bf16/f16 → f32 → bf16/f16 is exact), config.json
 * updated to the new layer count.
 */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openSafetensors } from '../../src/io/safetensors.js';
import { mergeModels, parseMergeConfig, executeMerge } from '../../src/merge/index.js';
import { layerSuffixes, readModel, writeTinyModel, type TensorMap } from '../helpers/merge.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

let dir: string;
let b: TensorMap;

before(async () => {
  dir = await makeTempDir('loraforge-merge-passthrough-');
  await writeTinyModel(join(dir, 'a'), { seed: 21, layers: 4, dtype: 'BF16', config: { layer_types: ['a0', 'a1', 'a2', 'a3'] } });
  b = await writeTinyModel(join(dir, 'b'), { seed: 22, layers: 4, dtype: 'BF16', config: { layer_types: ['b0', 'b1', 'b2', 'b3'] } });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function rawTensors(file: string): Promise<Map<string, { dtype: string; bytes: Uint8Array }>> {
  const f = await openSafetensors(file);
  try {
    const out = new Map<string, { dtype: string; bytes: Uint8Array }>();
    for (const t of f.list()) out.set(t.name, { dtype: t.dtype, bytes: await f.readRaw(t.name) });
    return out;
  } finally {
    await f.close();
  }
}

const STACK = `merge_method: passthrough
slices:
  - sources:
      - model: ./a
        layer_range: [0, 3]
  - sources:
      - model: ./b
        layer_range: [1, 4]
`;

describe('passthrough', () => {
  it('stacks slices with renumbered layers, byte-identical to the sources', async () => {
    const out = join(dir, 'stacked');
    const report = await executeMerge({ config: parseMergeConfig(STACK, 'stack.yaml'), out, cwd: dir });
    assert.equal(report.layers, 6);
    const got = await rawTensors(join(out, 'model.safetensors'));
    const fromA = await rawTensors(join(dir, 'a', 'model.safetensors'));
    const fromB = await rawTensors(join(dir, 'b', 'model.safetensors'));
    const expected = new Map<string, { dtype: string; bytes: Uint8Array }>();
    // embeddings from the first slice's model, final norm and lm_head from the last slice's
    expected.set('model.embed_tokens.weight', fromA.get('model.embed_tokens.weight')!);
    expected.set('model.norm.weight', fromB.get('model.norm.weight')!);
    expected.set('lm_head.weight', fromB.get('lm_head.weight')!);
    const origin = [['a', 0], ['a', 1], ['a', 2], ['b', 1], ['b', 2], ['b', 3]] as const;
    origin.forEach(([model, layer], i) => {
      for (const [suffix] of layerSuffixes(8, 16)) {
        expected.set(`model.layers.${i}.${suffix}`, (model === 'a' ? fromA : fromB).get(`model.layers.${layer}.${suffix}`)!);
      }
    });
    assert.deepEqual([...got.keys()].sort(), [...expected.keys()].sort());
    for (const [name, t] of got) {
      assert.equal(t.dtype, 'BF16', name);
      assert.deepEqual(t.bytes, expected.get(name)!.bytes, name);
    }
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    assert.equal(config.num_hidden_layers, 6);
    assert.deepEqual(config.layer_types, ['a0', 'a1', 'a2', 'b1', 'b2', 'b3']);
  });

  it('round-trips f16 specials (subnormals, −0, max) bit for bit', async () => {
    const special = Float32Array.from([0, -0, 2 ** -24, -(2 ** -24), 3 * 2 ** -20, 65504, -65504, 1 / 3, -1e-3]);
    await writeModelFolder(join(dir, 'f16'), { 'model.layers.0.mlp.w': { shape: [9], data: special }, 'model.norm.weight': { shape: [9], data: special } }, { dtype: 'F16' });
    const out = join(dir, 'f16-out');
    await mergeModels({ config: { merge_method: 'passthrough', slices: [{ sources: [{ model: './f16', layer_range: [0, 1] }] }, { sources: [{ model: './f16', layer_range: [0, 1] }] }] }, out, cwd: dir });
    const src = await rawTensors(join(dir, 'f16', 'model.safetensors'));
    const got = await rawTensors(join(out, 'model.safetensors'));
    assert.deepEqual(got.get('model.layers.0.mlp.w')!.bytes, src.get('model.layers.0.mlp.w')!.bytes);
    assert.deepEqual(got.get('model.layers.1.mlp.w')!.bytes, src.get('model.layers.0.mlp.w')!.bytes);
    assert.equal(got.get('model.layers.1.mlp.w')!.dtype, 'F16');
  });

  it('multiplies by a per-model scale', async () => {
    const out = join(dir, 'scaled');
    await mergeModels({ config: { merge_method: 'passthrough', slices: [{ sources: [{ model: './b', layer_range: [2, 4], parameters: { scale: 2 } }] }] }, out, cwd: dir });
    const got = await readModel(out);
    assert.deepEqual(got['model.layers.1.mlp.up_proj.weight'].data, b['model.layers.3.mlp.up_proj.weight'].data.map((v) => 2 * v));
    assert.deepEqual(got['model.norm.weight'].data, b['model.norm.weight'].data.map((v) => 2 * v));
    assert.equal(Object.keys(got).filter((n) => n.startsWith('model.layers.')).length, 2 * 9);
  });

  it('refuses out-of-bounds layer ranges and slices with several sources', async () => {
    const oob = parseMergeConfig('merge_method: passthrough\nslices:\n  - sources:\n      - model: ./a\n        layer_range: [2, 5]\n', 'oob.yaml');
    await assert.rejects(executeMerge({ config: oob, out: join(dir, 'x'), cwd: dir }), /^Error: oob\.yaml:4:9: slices\[0\]\.sources\[0\]: layer_range \[2, 5\] is out of bounds: \.\/a has 4 layers/);
    await assert.rejects(
      mergeModels({ config: { merge_method: 'passthrough', slices: [{ sources: [{ model: './a', layer_range: [0, 2] }, { model: './b', layer_range: [0, 2] }] }] }, out: join(dir, 'x'), cwd: dir }),
      /passthrough copies one model per slice .* but 2 are given \(\.\/a, \.\/b\)/,
    );
  });
});
