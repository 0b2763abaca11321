/**
 * mergeModels as a whole: clear errors for models that do not fit together, sharded output,
 * seeded DARE determinism, notes, and the output-folder rules.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mergeModels } from '../../src/merge/index.js';
import { readModel, tinyTensors, writeTinyModel } from '../helpers/merge.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

let dir: string;
let n = 0;
const out = () => join(dir, `out-${n++}`);

before(async () => {
  dir = await makeTempDir('loraforge-merge-');
  await writeTinyModel(join(dir, 'base'), { seed: 1 });
  await writeTinyModel(join(dir, 'a'), { seed: 2 });
  await writeTinyModel(join(dir, 'wide'), { seed: 3, hidden: 16 });
  await writeTinyModel(join(dir, 'deep'), { seed: 4, layers: 4 });
  await writeTinyModel(join(dir, 'mistral'), { seed: 5, config: { architectures: ['MistralForCausalLM'] } });
  const headless = tinyTensors({ seed: 6 });
  delete headless['lm_head.weight'];
  await writeModelFolder(join(dir, 'headless'), headless);
  const extra = tinyTensors({ seed: 7 });
  extra['model.rotary_emb.inv_freq'] = { shape: [4], data: new Float32Array(4) };
  await writeModelFolder(join(dir, 'extra'), extra);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const ties = (...models: string[]) => ({
  merge_method: 'ties',
  base_model: './base',
  models: models.map((model) => ({ model, parameters: { weight: 0.5, density: 0.5 } })),
});

describe('models that do not fit together', () => {
  it('names the tensor and both shapes when sizes differ', async () => {
    await assert.rejects(mergeModels(ties('./a', './wide'), { out: out(), cwd: dir }), /tensor "model\.embed_tokens\.weight" has shape \[12, 8\] in .*\/a but \[12, 16\] in .*\/wide: the models are not the same architecture and size/);
  });

  it('refuses different architectures from config.json', async () => {
    await assert.rejects(mergeModels(ties('./a', './mistral'), { out: out(), cwd: dir }), /models have different architectures: .*base is LlamaForCausalLM but .*mistral is MistralForCausalLM/);
  });

  it('names missing tensors', async () => {
    await assert.rejects(mergeModels(ties('./a', './headless'), { out: out(), cwd: dir }), /headless: missing tensor "lm_head\.weight" \(needed for output tensor "lm_head\.weight"\)/);
  });

  it('refuses different layer counts in a models: merge', async () => {
    await assert.rejects(mergeModels(ties('./a', './deep'), { out: out(), cwd: dir }), /different numbers of layers \(\.\/a: 3, \.\/deep: 4\); use slices/);
  });

  it('reports a missing required parameter with the model it is missing for', async () => {
    await assert.rejects(
      mergeModels({ merge_method: 'ties', base_model: './base', models: [{ model: './a' }] }, { out: out(), cwd: dir }),
      /models\[0\]: ties needs the parameter "weight" for model "\.\/a" \(tensor "model\.embed_tokens\.weight"\)/,
    );
    await assert.rejects(mergeModels({ merge_method: 'slerp', base_model: './base', models: [{ model: './a' }] }, { out: out(), cwd: dir }), /slerp needs the parameter "t"/);
  });

  it('refuses TIES densities that keep nothing, and normalize over zero weights', async () => {
    await assert.rejects(
      mergeModels({ merge_method: 'ties', base_model: './base', models: [{ model: './a', parameters: { weight: 1, density: 0.1 } }] }, { out: out(), cwd: dir }),
      /density 0\.1 of "\.\/a" keeps none of the 8 entries of tensor "model\.layers\.0\.input_layernorm\.weight"/,
    );
    await assert.rejects(
      mergeModels({ merge_method: 'linear', models: [{ model: './a', parameters: { weight: 1 } }, { model: './base', parameters: { weight: -1 } }] }, { out: out(), cwd: dir }),
      /weights of tensor ".*" sum to 0, so normalize would divide by 0/,
    );
  });

  it('checks base_model and input counts per method', async () => {
    await assert.rejects(mergeModels({ merge_method: 'ties', models: [{ model: './a', parameters: { weight: 1 } }] }, { out: out(), cwd: dir }), /ties needs base_model/);
    await assert.rejects(
      mergeModels({ merge_method: 'linear', base_model: './base', models: [{ model: './a', parameters: { weight: 1 } }] }, { out: out(), cwd: dir }),
      /linear merges the listed models only, and base_model "\.\/base" is not among them/,
    );
    await assert.rejects(
      mergeModels({ merge_method: 'slerp', base_model: './base', parameters: { t: 0.5 }, models: [{ model: './a' }, { model: './extra' }] }, { out: out(), cwd: dir }),
      /slerp merges exactly 2 models, one of them base_model, but 3 are given/,
    );
  });
});

describe('worker threads', () => {
  it('give the same bytes as merging on the main thread (large tensors go to workers)', async () => {
    // 512×512 = 2^18 entries: the smallest tensor handed to a worker
    const big = (seed: number) => ({ ...tinyTensors({ seed }), 'model.layers.0.mlp.big.weight': { shape: [512, 512], data: tinyTensors({ seed, hidden: 512, intermediate: 512, layers: 1 })['model.layers.0.self_attn.q_proj.weight'].data } });
    await writeModelFolder(join(dir, 'big-base'), big(11));
    await writeModelFolder(join(dir, 'big-a'), big(12));
    await writeModelFolder(join(dir, 'big-b'), big(13));
    for (const method of ['ties', 'dare_ties', 'linear']) {
      const config = {
        merge_method: method,
        ...(method === 'linear' ? {} : { base_model: './big-base' }),
        models: [
          { model: './big-a', parameters: method === 'linear' ? { weight: 0.7 } : { weight: 0.7, density: 0.4 } },
          { model: './big-b', parameters: method === 'linear' ? { weight: 0.5 } : { weight: 0.5, density: 0.6 } },
        ],
      };
      const [inWorker, inline] = [out(), out()];
      await mergeModels(config, { out: inWorker, cwd: dir, seed: 3 });
      await mergeModels(config, { out: inline, cwd: dir, seed: 3, worker: false });
      assert.deepEqual(await readFile(join(inWorker, 'model.safetensors')), await readFile(join(inline, 'model.safetensors')), method);
    }
  });
});

describe('output', () => {
  it('shards by --shard-size with an index, holding the same tensors as one file', async () => {
    const one = out();
    const many = out();
    const config = ties('./a', './extra');
    await mergeModels(config, { out: one, cwd: dir });
    const report = await mergeModels(config, { out: many, cwd: dir, maxShardBytes: 1500 });
    assert.ok(report.shards > 1, `${report.shards} shards`);
    const files = await readdir(many);
    assert.ok(files.includes('model.safetensors.index.json'));
    assert.equal(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length, report.shards);
    assert.deepEqual(await readModel(many), await readModel(one));
    const index = JSON.parse(await readFile(join(many, 'model.safetensors.index.json'), 'utf8'));
    assert.equal(index.metadata.total_size, report.bytes);
  });

  it('is deterministic for a seed and changes with it (DARE)', async () => {
    const config = { merge_method: 'dare_ties', base_model: './base', models: [{ model: './a', parameters: { weight: 1, density: 0.5 } }] };
    const [x, y, z] = [out(), out(), out()];
    await mergeModels(config, { out: x, cwd: dir, seed: 7 });
    await mergeModels(config, { out: y, cwd: dir, seed: 7 });
    await mergeModels(config, { out: z, cwd: dir, seed: 8 });
    const bytes = (d: string) => readFile(join(d, 'model.safetensors'));
    assert.deepEqual(await bytes(x), await bytes(y));
    assert.notDeepEqual(await bytes(x), await bytes(z));
  });

  it('notes input tensors outside the layers that the output leaves out', async () => {
    const report = await mergeModels(ties('./a', './extra'), { out: out(), cwd: dir });
    assert.equal(report.notes.length, 1);
    assert.match(report.notes[0], /^\.\/extra: 1 tensor\(s\) outside the layers are not in the output \(model\.rotary_emb\.inv_freq\)$/);
    assert.equal(report.tensors, 3 * 9 + 3);
  });

  it('never writes into an input, refuses a non-empty output unless overwrite, and leaves nothing on failure', async () => {
    await assert.rejects(mergeModels(ties('./a'), { out: join(dir, 'a', 'merged'), cwd: dir }), /inside the input/);
    const target = out();
    await mergeModels(ties('./a'), { out: target, cwd: dir });
    await assert.rejects(mergeModels(ties('./a'), { out: target, cwd: dir }), /already exists and is not empty/);
    await mergeModels(ties('./a'), { out: target, cwd: dir, overwrite: true });
    const failed = out();
    await assert.rejects(mergeModels(ties('./a', './wide'), { out: failed, cwd: dir }));
    await assert.rejects(stat(failed), { code: 'ENOENT' });
    assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('.')), [], 'no temporary folders left behind');
  });
});
