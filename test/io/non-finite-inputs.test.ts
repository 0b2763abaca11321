/**
 * NaN and ±Inf in any input (issue 13, "exit 0 with wrong numbers" 2 and 4): the shared readers
 * refuse them, naming the file and tensor, so every command stops before computing with them:
 * merge (every method, inline and in worker threads), apply, convert, edora-init and
 * merge-adapters (every method), for models and adapters alike. Small generated inputs.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { randomMat, writePeftFixture, type Mat } from '../helpers/dora.js';
import { tinyTensors, type TensorMap } from '../helpers/merge.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { mergeModels } from '../../src/merge/index.js';
import { applyAdapters } from '../../src/apply/apply.js';
import { convertAdapter } from '../../src/convert/convert.js';
import { edoraInit } from '../../src/edora-init/edora-init.js';
import { mergeAdapters } from '../../src/merge-adapters/index.js';

const CONFIG = { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 8, num_hidden_layers: 3, vocab_size: 12 };
const BAD = 'model.layers.1.self_attn.q_proj.weight';
const Q = 'model.layers.1.self_attn.q_proj';

function withValue(t: TensorMap, name: string, index: number, value: number): TensorMap {
  const data = t[name].data.slice();
  data[index] = value;
  return { ...t, [name]: { shape: t[name].shape, data } };
}

/** A LoRA (or DoRA, with `magnitude`) of q_proj in layer 1, rank 2, whose A holds `value` at element 3. */
async function writeAdapterWith(dir: string, value: number, magnitude = false): Promise<void> {
  const A: Mat = randomMat(2, 8, 7, 0.1);
  A[0][3] = value;
  await writePeftFixture(dir, {
    config: { r: 2, lora_alpha: 2, target_modules: ['q_proj'], use_dora: magnitude },
    modules: [{ name: Q, kind: 'linear', A, B: randomMat(8, 2, 8, 0.1), ...(magnitude ? { magnitude: Array(8).fill(1) } : {}) }],
  });
}

let root: string;
const nanModel = /\/nan\/model\.safetensors: tensor "model\.layers\.1\.self_attn\.q_proj\.weight" holds NaN at element 5/;
const nanAdapter = /\/nan-lora\/adapter_model\.safetensors: tensor "base_model\.model\.model\.layers\.1\.self_attn\.q_proj\.lora_A\.weight" holds NaN at element 3/;
before(async () => {
  root = await makeTempDir('loraforge-non-finite-');
  const base = tinyTensors({ seed: 1 });
  await writeModelFolder(join(root, 'good'), base, { config: CONFIG });
  await writeModelFolder(join(root, 'other'), tinyTensors({ seed: 2 }), { config: CONFIG });
  await writeModelFolder(join(root, 'nan'), withValue(base, BAD, 5, NaN), { config: CONFIG });
  await writeModelFolder(join(root, 'inf'), withValue(base, BAD, 6, -Infinity), { config: CONFIG, dtype: 'BF16' });
  await writeAdapterWith(join(root, 'lora'), 0.5);
  await writeAdapterWith(join(root, 'nan-lora'), NaN);
  await writeAdapterWith(join(root, 'inf-dora'), Infinity, true);
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('a NaN or ±Inf in a model', () => {
  for (const method of ['linear', 'task_arithmetic', 'ties', 'dare_ties', 'dare_linear', 'slerp']) {
    it(`merge ${method} refuses it, naming file and tensor`, async () => {
      const parameters = method.includes('ties') || method.startsWith('dare') ? { weight: 0.5, density: 0.5 } : { weight: 0.5 };
      const models = [{ model: './nan', parameters }, { model: './other', parameters }];
      const config =
        method === 'slerp'
          ? { merge_method: 'slerp', base_model: './good', models: [{ model: './good' }, { model: './nan' }], parameters: { t: 0.5 } }
          : { merge_method: method, ...(method === 'linear' ? {} : { base_model: './good' }), models };
      await assert.rejects(mergeModels({ config, out: join(root, `m-${method}`), cwd: root, worker: false }), nanModel);
    });
  }

  it('merge passthrough refuses ±Inf in a BF16 model', async () => {
    const config = { merge_method: 'passthrough', slices: [{ sources: [{ model: './inf', layer_range: [0, 3] }] }] };
    await assert.rejects(mergeModels({ config, out: join(root, 'm-pass'), cwd: root }), /\/inf\/model\.safetensors: tensor "model\.layers\.1\.self_attn\.q_proj\.weight" holds -Infinity at element 6/);
  });

  it('merge refuses it in the worker threads too', async () => {
    // 512 × 512: large enough that the merge reads it in a worker thread (compute.ts MIN_WORKER_ENTRIES)
    const big = (value: number) => ({ 'model.layers.0.mlp.up_proj.weight': { shape: [512, 512], data: new Float32Array(512 * 512).fill(value) } });
    const bad = big(1);
    bad['model.layers.0.mlp.up_proj.weight'].data[1000] = NaN;
    const cfg = { ...CONFIG, num_hidden_layers: 1 };
    await writeModelFolder(join(root, 'big-a'), big(2), { config: cfg });
    await writeModelFolder(join(root, 'big-nan'), bad, { config: cfg });
    const config = { merge_method: 'linear', models: [{ model: './big-a', parameters: { weight: 0.5 } }, { model: './big-nan', parameters: { weight: 0.5 } }] };
    await assert.rejects(mergeModels({ config, out: join(root, 'm-worker'), cwd: root, worker: true }), /big-nan\/model\.safetensors: tensor "model\.layers\.0\.mlp\.up_proj\.weight" holds NaN at element 1000/);
  });

  it('apply, edora-init and convert --base refuse it', async () => {
    await assert.rejects(applyAdapters({ base: join(root, 'nan'), adapters: [{ dir: join(root, 'lora') }], out: join(root, 'apply') }), nanModel);
    await assert.rejects(edoraInit({ base: join(root, 'nan'), rank: 2, targetModules: ['q_proj'], out: join(root, 'edora') }), nanModel);
    await writeAdapterWith(join(root, 'dora'), 0.5, true);
    // was: "factorsFromSvd: rank 1 exceeds the 0 singular values available"
    await assert.rejects(convertAdapter({ adapter: join(root, 'dora'), base: join(root, 'nan'), out: join(root, 'conv') }), nanModel);
  });

  it('the CLI exits 1 with that message and writes nothing', async () => {
    const r = await runCli(['apply', '--base', join(root, 'nan'), '--adapter', join(root, 'lora'), '--out', join(root, 'cli-out')]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, nanModel);
    assert.ok(!(await readdir(root)).includes('cli-out'));
  });
});

describe('a NaN or ±Inf in an adapter', () => {
  for (const method of ['linear', 'cat', 'svd', 'ties', 'dare_linear', 'magnitude_prune'] as const) {
    it(`merge-adapters ${method} refuses it, naming the adapter file and tensor`, async () => {
      const adapters = [{ path: join(root, 'lora'), weight: 1 }, { path: join(root, 'nan-lora'), weight: 1 }];
      const density = ['linear', 'cat', 'svd'].includes(method) ? {} : { density: 0.5 };
      await assert.rejects(mergeAdapters({ adapters, method, out: join(root, `ma-${method}`), ...density }), nanAdapter);
    });
  }

  it('merge-adapters svd --exact, apply and convert refuse it', async () => {
    const adapters = [{ path: join(root, 'lora'), weight: 1 }, { path: join(root, 'nan-lora'), weight: 1 }];
    await assert.rejects(mergeAdapters({ adapters, method: 'svd', exact: true, out: join(root, 'ma-exact') }), nanAdapter);
    await assert.rejects(applyAdapters({ base: join(root, 'good'), adapters: [{ dir: join(root, 'nan-lora') }], out: join(root, 'apply2') }), nanAdapter);
    await assert.rejects(
      convertAdapter({ adapter: join(root, 'inf-dora'), base: join(root, 'good'), out: join(root, 'conv2') }),
      /inf-dora\/adapter_model\.safetensors: tensor "base_model\.model\.model\.layers\.1\.self_attn\.q_proj\.lora_A\.weight" holds Infinity at element 3/,
    );
  });
});
