/**
 * mergeModels as a whole: clear errors for models that do not fit together, sharded output,
 * seeded DARE determinism, notes, and the output-folder rules.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import type { FloatDType } from '../../src/io/types.js';
import { createRng } from '../../src/linalg/random.js';
import { UsageError } from '../../src/errors.js';
import { mergeModels } from '../../src/merge/index.js';
import { roundTo } from '../../src/tensor/dtype.js';
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
const linear = (...models: string[]) => ({ merge_method: 'linear', models: models.map((model) => ({ model, parameters: { weight: 0.5 } })) });

/** Rejects with a failure of the data (exit 1), not a UsageError (exit 2), whose message matches `message`. */
const failsOnData = (p: Promise<unknown>, message: RegExp) => assert.rejects(p, (err: Error) => !(err instanceof UsageError) && message.test(err.message));
/** Rejects with a UsageError (exit 2) whose message matches `message`. */
const failsOnConfig = (p: Promise<unknown>, message: RegExp) => assert.rejects(p, (err: Error) => err instanceof UsageError && message.test(err.message));

describe('models that do not fit together (exit 1) and configs that do not fit the models (exit 2)', () => {
  it('names the tensor and both shapes when sizes differ (exit 1: only embeddings are cut to a common shape)', async () => {
    await failsOnData(
      mergeModels({ config: linear('./a', './wide'), out: out(), cwd: dir }),
      /^tensor "model\.layers\.0\.input_layernorm\.weight" has shape \[8\] in .*\/a but \[16\] in .*\/wide: the models are not the same architecture and size \(only embeddings \(embed_tokens, lm_head\) are cut to a common shape\)$/,
    );
    await failsOnData(
      mergeModels({ config: { merge_method: 'multislerp', models: [{ model: './a' }, { model: './wide' }] }, out: out(), cwd: dir }),
      /tensor "model\.embed_tokens\.weight" has shape \[12, 8\] in .*\/a but \[12, 16\] in .*\/wide: .*\(multislerp needs every input in one shape\)/,
    );
  });

  it('refuses different architectures from config.json', async () => {
    await failsOnData(mergeModels({ config: ties('./a', './mistral'), out: out(), cwd: dir }), /models have different architectures: .*base is LlamaForCausalLM but .*mistral is MistralForCausalLM/);
  });

  it('names missing tensors', async () => {
    await failsOnData(mergeModels({ config: ties('./a', './headless'), out: out(), cwd: dir }), /headless: missing tensor "lm_head\.weight" \(needed for output tensor "lm_head\.weight"\)/);
  });

  it('refuses different layer counts in a models: merge (a config mistake: use slices)', async () => {
    await failsOnConfig(mergeModels({ config: ties('./a', './deep'), out: out(), cwd: dir }), /different numbers of layers \(\.\/a: 3, \.\/deep: 4\); use slices/);
  });

  it('reports a missing required parameter with the model it is missing for', async () => {
    await failsOnConfig(
      mergeModels({ config: { merge_method: 'ties', base_model: './base', models: [{ model: './a' }] }, out: out(), cwd: dir }),
      /models\[0\]: ties needs the parameter "weight" for model "\.\/a" \(tensor "model\.embed_tokens\.weight"\)/,
    );
    await failsOnConfig(mergeModels({ config: { merge_method: 'slerp', base_model: './base', models: [{ model: './a' }] }, out: out(), cwd: dir }), /slerp needs the parameter "t"/);
  });

  it('refuses TIES densities that keep nothing, and normalize over zero weights', async () => {
    await failsOnConfig(
      mergeModels({ config: { merge_method: 'ties', base_model: './base', models: [{ model: './a', parameters: { weight: 1, density: 0.1 } }] }, out: out(), cwd: dir }),
      /density 0\.1 of "\.\/a" keeps none of the 8 entries of tensor "model\.layers\.0\.input_layernorm\.weight"/,
    );
    await failsOnConfig(
      mergeModels({ config: { merge_method: 'linear', models: [{ model: './a', parameters: { weight: 1 } }, { model: './base', parameters: { weight: -1 } }] }, out: out(), cwd: dir }),
      /weights of tensor ".*" sum to 0, so normalize would divide by 0/,
    );
  });

  it('checks base_model and input counts per method', async () => {
    await failsOnConfig(mergeModels({ config: { merge_method: 'ties', models: [{ model: './a', parameters: { weight: 1 } }] }, out: out(), cwd: dir }), /ties needs base_model/);
    await failsOnConfig(
      mergeModels({ config: { merge_method: 'linear', base_model: './base', models: [{ model: './a', parameters: { weight: 1 } }] }, out: out(), cwd: dir }),
      /linear merges the listed models only, and base_model "\.\/base" is not among them/,
    );
    await failsOnConfig(
      mergeModels({ config: { merge_method: 'slerp', base_model: './base', parameters: { t: 0.5 }, models: [{ model: './a' }, { model: './extra' }] }, out: out(), cwd: dir }),
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
      await mergeModels({ config, out: inWorker, cwd: dir, seed: 3 });
      await mergeModels({ config, out: inline, cwd: dir, seed: 3, worker: false });
      assert.deepEqual(await readFile(join(inWorker, 'model.safetensors')), await readFile(join(inline, 'model.safetensors')), method);
    }
  });

  // an odd entry count (≥ 2^18, so it goes to a worker) exercises the decoders' tails
  const ODD: [number, number] = [513, 513];
  const oddTensors = (seed: number, dtype: FloatDType) => {
    const data = new Float32Array(ODD[0] * ODD[1]);
    createRng(seed).fillNormal(data);
    return { ...tinyTensors({ seed, dtype }), 'model.layers.2.mlp.big.weight': { shape: ODD, data: roundTo(data, dtype) } };
  };

  it('read bf16 and f16 inputs in the worker and give the same bytes as the main thread', async () => {
    // bf16 base sharded (the large tensor in a later shard), a bf16 and an f16 fine-tune
    const base = oddTensors(21, 'BF16');
    const a = oddTensors(22, 'BF16');
    const b = oddTensors(23, 'F16');
    await writeModelFolder(join(dir, 'bf-base'), base, { dtype: 'BF16', maxShardBytes: 4096 });
    await writeModelFolder(join(dir, 'bf-a'), a, { dtype: 'BF16' });
    await writeModelFolder(join(dir, 'f16-b'), b, { dtype: 'F16' });
    for (const method of ['ties', 'dare_ties', 'linear']) {
      const config = {
        merge_method: method,
        ...(method === 'linear' ? {} : { base_model: './bf-base' }),
        models: [
          ...(method === 'linear' ? [{ model: './bf-base', parameters: { weight: 0.25 } }] : []),
          { model: './bf-a', parameters: method === 'linear' ? { weight: 0.75 } : { weight: 0.7, density: 0.4 } },
          { model: './f16-b', parameters: method === 'linear' ? { weight: 0.5 } : { weight: 0.5, density: 0.6 } },
        ],
      };
      const [inWorker, inline] = [out(), out()];
      await mergeModels({ config, out: inWorker, cwd: dir, seed: 5 });
      await mergeModels({ config, out: inline, cwd: dir, seed: 5, worker: false });
      const [w, i] = [await readModel(inWorker), await readModel(inline)];
      assert.deepEqual(Object.keys(w), Object.keys(i), method);
      for (const name of Object.keys(i)) {
        assert.equal(w[name].dtype, 'BF16', name);
        assert.deepEqual(new Uint32Array(w[name].data.buffer), new Uint32Array(i[name].data.buffer), `${method}: ${name}`);
      }
      if (method === 'linear') {
        // the worker read the right bytes: the weighted mean, to within bf16 rounding
        const big = 'model.layers.2.mlp.big.weight';
        const expected = base[big].data.map((x, k) => (0.25 * x + 0.75 * a[big].data[k] + 0.5 * b[big].data[k]) / 1.5);
        const worst = w[big].data.reduce((m, x, k) => Math.max(m, Math.abs(x - expected[k]) / (Math.abs(expected[k]) + 1e-6)), 0);
        assert.ok(worst <= 2 ** -8, `relative error ${worst}`);
      }
    }
  });

  it('name the file and tensor when a shard turns out truncated while merging', async () => {
    await writeModelFolder(join(dir, 'cut-base'), oddTensors(31, 'BF16'), { dtype: 'BF16' });
    await writeModelFolder(join(dir, 'cut-a'), oddTensors(32, 'BF16'), { dtype: 'BF16' });
    const file = join(dir, 'cut-a', 'model.safetensors');
    const ckpt = await openCheckpoint(file);
    const big = ckpt.locate('model.layers.2.mlp.big.weight');
    await ckpt.close();
    const intact = await readFile(file);
    const config = { merge_method: 'ties', base_model: './cut-base', models: [{ model: './cut-a', parameters: { weight: 1, density: 0.5 } }] };
    for (const worker of [true, false]) {
      await writeFile(file, intact);
      // cut after the files are opened and checked, as when a file changes under a running merge
      let cut: Promise<void> | undefined;
      const onProgress = () => {
        cut ??= truncate(file, big.offset + 1000);
      };
      await assert.rejects(
        mergeModels({ config, out: out(), cwd: dir, worker, onProgress }),
        (err: Error) => {
          assert.match(err.message, /: tensor "model\.layers\.2\.mlp\.big\.weight": the file ended \d+ bytes early \(truncated, or changed while reading\)/);
          assert.ok(err.message.startsWith(`${file}: `), err.message);
          return true;
        },
        `worker: ${worker}`,
      );
      await cut;
    }
  });
});

describe('output', () => {
  it('shards by --shard-size with an index, holding the same tensors as one file', async () => {
    const one = out();
    const many = out();
    const config = ties('./a', './extra');
    await mergeModels({ config, out: one, cwd: dir });
    const report = await mergeModels({ config, out: many, cwd: dir, maxShardBytes: 1500 });
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
    await mergeModels({ config, out: x, cwd: dir, seed: 7 });
    await mergeModels({ config, out: y, cwd: dir, seed: 7 });
    await mergeModels({ config, out: z, cwd: dir, seed: 8 });
    const bytes = (d: string) => readFile(join(d, 'model.safetensors'));
    assert.deepEqual(await bytes(x), await bytes(y));
    assert.notDeepEqual(await bytes(x), await bytes(z));
  });

  it('notes input tensors outside the layers that the output leaves out', async () => {
    const report = await mergeModels({ config: ties('./a', './extra'), out: out(), cwd: dir });
    assert.equal(report.notes.length, 1);
    assert.match(report.notes[0], /^\.\/extra: 1 tensor\(s\) outside the layers are not in the output \(model\.rotary_emb\.inv_freq\)$/);
    assert.equal(report.tensors, 3 * 9 + 3);
  });

  it('never writes into an input, refuses a non-empty output unless overwrite, and leaves nothing on failure', async () => {
    await assert.rejects(mergeModels({ config: ties('./a'), out: join(dir, 'a', 'merged'), cwd: dir }), /inside the input/);
    const target = out();
    await mergeModels({ config: ties('./a'), out: target, cwd: dir });
    await assert.rejects(mergeModels({ config: ties('./a'), out: target, cwd: dir }), /already exists and is not empty/);
    await mergeModels({ config: ties('./a'), out: target, cwd: dir, overwrite: true });
    const failed = out();
    await assert.rejects(mergeModels({ config: linear('./a', './wide'), out: failed, cwd: dir }));
    await assert.rejects(stat(failed), { code: 'ENOENT' });
    assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('.')), [], 'no temporary folders left behind');
  });
});

describe('vocabularies that differ by a few added tokens (mergekit: embeddings only)', () => {
  const EMBED = 'model.embed_tokens.weight';
  const near = (got: Float32Array, want: ArrayLike<number>, label: string) =>
    assert.ok(
      got.every((x, k) => Math.abs(x - want[k]) <= 1e-6 * (1 + Math.abs(want[k]))),
      label,
    );

  before(async () => {
    await writeTinyModel(join(dir, 'vocab14'), { seed: 8, vocab: 14 });
  });

  it('linear merges the rows every model has, embed_tokens and lm_head, and says so in the report', async () => {
    const target = out();
    const report = await mergeModels({ config: linear('./a', './vocab14'), out: target, cwd: dir });
    const [a, v, got] = [await readModel(join(dir, 'a')), await readModel(join(dir, 'vocab14')), await readModel(target)];
    for (const name of [EMBED, 'lm_head.weight']) {
      assert.deepEqual(got[name].shape, [12, 8], name);
      near(got[name].data, a[name].data.map((x, k) => (x + v[name].data[k]) / 2), name);
    }
    assert.match(report.notes.join('\n'), /model\.embed_tokens\.weight: the models' shapes differ \(\[12, 8\], \[14, 8\]\); merged as \[12, 8\], as mergekit does/);
  });

  it('config.json says the merged vocabulary size when the config comes from the larger model, and the report says why', async () => {
    const target = out();
    const report = await mergeModels({ config: linear('./vocab14', './a'), out: target, cwd: dir });
    const config = JSON.parse(await readFile(join(target, 'config.json'), 'utf8')) as { vocab_size: number };
    assert.equal(config.vocab_size, 12, 'a config that disagrees with its tensors does not load');
    assert.match(report.notes.join('\n'), /config\.json vocab_size set to 12, the merged embedding rows \(.*vocab14 says 14\)/);
  });

  it('task-vector methods cut each model down to base_model rows; a base_model larger than a model is refused (exit 1)', async () => {
    const target = out();
    const config = (base: string, model: string) => ({ merge_method: 'task_arithmetic', base_model: base, models: [{ model, parameters: { weight: 0.5 } }] });
    await mergeModels({ config: config('./base', './vocab14'), out: target, cwd: dir });
    const [base, v, got] = [await readModel(join(dir, 'base')), await readModel(join(dir, 'vocab14')), await readModel(target)];
    assert.deepEqual(got[EMBED].shape, [12, 8]);
    near(got[EMBED].data, base[EMBED].data.map((x, k) => x + 0.5 * (v[EMBED].data[k] - x)), EMBED);
    await failsOnData(
      mergeModels({ config: config('./vocab14', './a'), out: out(), cwd: dir }),
      /^embedding "model\.embed_tokens\.weight" has shape \[12, 8\] in .*\/a, smaller than base_model's \[14, 8\]: task_arithmetic cuts each model down to base_model's vocabulary/,
    );
  });

  it('task-vector methods leave a model out of the other tensors whose shape differs from base_model, with a note', async () => {
    const [withWide, alone] = [out(), out()];
    const report = await mergeModels({ config: ties('./a', './wide'), out: withWide, cwd: dir });
    await mergeModels({ config: ties('./a'), out: alone, cwd: dir });
    const [got, want] = [await readModel(withWide), await readModel(alone)];
    assert.deepEqual(got['model.layers.1.mlp.up_proj.weight'], want['model.layers.1.mlp.up_proj.weight']);
    assert.deepEqual(got['model.norm.weight'], want['model.norm.weight']);
    // the embeddings are cut to base_model's [12, 8], so ./wide counts there
    assert.notDeepEqual(got[EMBED], want[EMBED]);
    assert.match(report.notes.join('\n'), /^\.\/wide: left out of 28 tensor\(s\) whose shape differs from base_model's, as mergekit does \(model\.layers\.0\.input_layernorm\.weight, .*\); the output has base_model's shapes$/m);
  });

  it('crops in the worker as on the main thread (a 2^18-entry embedding goes to a worker)', async () => {
    const big = (seed: number, rows: number) => {
      const data = new Float32Array(rows * 512);
      createRng(seed).fillNormal(data);
      return { ...tinyTensors({ seed }), [EMBED]: { shape: [rows, 512], data } };
    };
    const [x, y] = [big(31, 512), big(32, 516)];
    await writeModelFolder(join(dir, 'emb-x'), x);
    await writeModelFolder(join(dir, 'emb-y'), y);
    const [inWorker, inline] = [out(), out()];
    await mergeModels({ config: linear('./emb-x', './emb-y'), out: inWorker, cwd: dir });
    await mergeModels({ config: linear('./emb-x', './emb-y'), out: inline, cwd: dir, worker: false });
    assert.deepEqual(await readFile(join(inWorker, 'model.safetensors')), await readFile(join(inline, 'model.safetensors')));
    const got = (await readModel(inWorker))[EMBED];
    assert.deepEqual(got.shape, [512, 512]);
    near(got.data, x[EMBED].data.map((v, k) => (v + y[EMBED].data[k]) / 2), EMBED);
  });
});
