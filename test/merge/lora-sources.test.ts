/**
 * `model: PATH+ADAPTER` sources (mergekit's syntax): a merge that reads a model through a PEFT
 * adapter gives the tensors of the same merge over `apply`'s output (written as f32), whether a
 * tensor is read on the main thread (small ones) or for a worker (a 2^18-entry one); adapters
 * that do not fit and right sides that are not adapters are refused clearly.
 */
import assert from 'node:assert/strict';
import { HubError } from '../../src/io/hub/index.js';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createRng } from '../../src/linalg/random.js';
import { applyAdapters } from '../../src/apply/apply.js';
import { UsageError } from '../../src/errors.js';
import { mergeModels } from '../../src/merge/index.js';
import { resolveModelRef } from '../../src/merge/sources.js';
import { runCli } from '../helpers/cli.js';
import { randomMat, writePeftFixture, type PeftModuleFixture } from '../helpers/dora.js';
import { readModel, tinyTensors } from '../helpers/merge.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

const BIG = 'model.layers.0.mlp.big';
const Q = 'model.layers.0.self_attn.q_proj';
const DOWN = 'model.layers.1.mlp.down_proj';

let dir: string;
let n = 0;
const out = () => join(dir, `out-${n++}`);

/** A tiny Llama with one 512×512 tensor: 2^18 entries, the smallest a worker merges. */
async function writeModel(name: string, seed: number, hidden = 8): Promise<void> {
  const tensors = tinyTensors({ seed, hidden, intermediate: 2 * hidden });
  const big = new Float32Array(512 * 512);
  createRng(seed + 100).fillNormal(big);
  tensors[`${BIG}.weight`] = { shape: [512, 512], data: big };
  await writeModelFolder(join(dir, name), tensors, { config: { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: hidden, vocab_size: 12 } });
}

const linear = (name: string, out: number, inF: number, seed: number, magnitude = false): PeftModuleFixture => ({
  name,
  kind: 'linear',
  A: randomMat(3, inF, seed, 0.3),
  B: randomMat(out, 3, seed + 1, 0.3),
  ...(magnitude ? { magnitude: randomMat(1, out, seed + 2)[0].map((x) => Math.fround(2 + Math.abs(x))) } : {}),
});

before(async () => {
  dir = await makeTempDir('loraforge-merge-lora-');
  await Promise.all([writeModel('base', 1), writeModel('a', 2), writeModel('b', 3), writeModel('wide', 4, 16)]);
  await writePeftFixture(join(dir, 'lora'), {
    config: { r: 3, lora_alpha: 6 },
    modules: [
      linear(Q, 8, 8, 10),
      linear(DOWN, 8, 16, 12),
      linear(BIG, 512, 512, 14),
      { name: 'model.embed_tokens', kind: 'embedding', A: randomMat(3, 12, 16, 0.3), B: randomMat(8, 3, 17, 0.3) },
    ],
  });
  await writePeftFixture(join(dir, 'dora'), { config: { r: 3, lora_alpha: 3, use_dora: true }, modules: [linear(Q, 8, 8, 20, true), linear(BIG, 512, 512, 23, true)] });
  // made for the 16-wide model: does not fit ./a
  await writePeftFixture(join(dir, 'wide-lora'), { config: { r: 3, lora_alpha: 6 }, modules: [linear(Q, 16, 16, 30)] });
  for (const adapter of ['lora', 'dora']) {
    await applyAdapters({ base: join(dir, 'a'), adapters: [{ dir: join(dir, adapter) }], out: join(dir, `a-${adapter}`), dtype: 'F32' });
  }
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function assertClose(got: Awaited<ReturnType<typeof readModel>>, want: Awaited<ReturnType<typeof readModel>>, what: string): void {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), what);
  for (const [name, t] of Object.entries(want)) {
    let max = 0;
    for (let i = 0; i < t.data.length; i++) max = Math.max(max, Math.abs(got[name].data[i] - t.data[i]));
    assert.ok(max <= 1e-6, `${what}: ${name} differs by ${max}`);
  }
}

const configs: Record<string, (a: string) => Record<string, unknown>> = {
  // ./a beside ./a+ADAPTER: one folder, two sources
  linear: (a) => ({ merge_method: 'linear', models: [a, './b', './a'].map((model, i) => ({ model, parameters: { weight: [0.5, 0.3, 0.2][i] } })) }),
  ties: (a) => ({ merge_method: 'ties', base_model: './base', models: [a, './b'].map((model, i) => ({ model, parameters: { weight: [0.6, 0.4][i], density: 0.5 } })) }),
};

describe('PATH+ADAPTER sources: the model with a PEFT adapter applied on the fly', () => {
  for (const adapter of ['lora', 'dora']) {
    for (const method of ['linear', 'ties']) {
      it(`${method} over ./a+./${adapter} gives the merge over apply's output`, async () => {
        const [want, got] = [out(), out()];
        // workers (the 512×512 tensor) only for ties over the adapter: starting one costs more than
        // these tiny merges, and the main thread gives the same bytes (merge.test.ts)
        const worker = method === 'ties';
        await mergeModels({ config: configs[method](`./a-${adapter}`), out: want, cwd: dir, worker: false });
        const report = await mergeModels({ config: configs[method](`./a+./${adapter}`), out: got, cwd: dir, worker });
        assertClose(await readModel(got), await readModel(want), `${method} ${adapter}`);
        // base_model first
        const at = method === 'linear' ? 0 : 1;
        assert.equal(report.models[at], `${join(dir, 'a')}+${join(dir, adapter)}`);
        assert.deepEqual(report.adapters, [0, 1, 2].map((i) => (i === at ? join(dir, adapter) : null)));
      });
    }
  }

  it('splits at the last "+" whose right side is an adapter folder; a path that exists as given wins', async () => {
    await mkdir(join(dir, 'c+lora'));
    const ref = (name: string) => resolveModelRef({ name, where: 'merge.yaml:3:12' }, dir);
    assert.deepEqual(await ref('./c+lora'), { path: join(dir, 'c+lora') });
    assert.deepEqual(await ref('./c+lora+./lora'), { path: join(dir, 'c+lora'), adapter: join(dir, 'lora') });
    assert.deepEqual(await ref('./a+lora'), { path: join(dir, 'a'), adapter: join(dir, 'lora') });
  });

  it('refuses an --out inside the adapter folder (the adapter is an input)', async () => {
    await assert.rejects(mergeModels({ config: configs.linear('./a+./lora'), out: join(dir, 'lora', 'merged'), cwd: dir }), /is inside the input .*lora/);
  });

  it('refuses a right side that is not an adapter folder (config mistakes: UsageError); takes Hub ids on either side to the Hub', async () => {
    const refuses = (model: string, message: RegExp) =>
      assert.rejects(mergeModels({ config: configs.ties(model), out: out(), cwd: dir }), (err: Error) => err instanceof UsageError && message.test(err.message));
    await refuses('./a+./b', /"\.\/a\+\.\/b" is neither a model folder nor MODEL\+ADAPTER: "\.\/b" after its last "\+" is not a PEFT adapter folder \(no .*b\/adapter_config\.json\)/);
    const offline = { offline: true, cacheDir: join(dir, 'no-hub-cache') };
    // a local folder spelled like a Hub id, relative to the config's cwd (not the process's), stays local
    await mkdir(join(dir, 'local'), { recursive: true });
    await symlink(join(dir, 'a'), join(dir, 'local', 'a'));
    for (const [model, missing] of [['org/model+org/lora', 'org/model'], ['./a+org/lora', 'org/lora'], ['local/a+org/lora', 'org/lora'], ['org/model+./lora', 'org/model']]) {
      await assert.rejects(
        mergeModels({ config: configs.ties(model), out: out(), cwd: dir, hub: offline }),
        (err: Error) => err instanceof HubError && err.kind === 'offline-miss' && err.message.includes(`${missing}@main is not in the cache`),
      );
    }
    await refuses('./nope+./lora', /model folder "\.\/nope" does not exist/);
  });

  it('CLI: an adapter that does not fit exits 1 naming module and shapes; a non-adapter right side exits 2 at its YAML line', async () => {
    const yaml = (model: string) => `merge_method: linear\nmodels:\n  - model: ./b\n    parameters: {weight: 0.5}\n  - model: ${model}\n    parameters: {weight: 0.5}\n`;
    await writeFile(join(dir, 'misfit.yaml'), yaml('./a+./wide-lora'));
    await writeFile(join(dir, 'notlora.yaml'), yaml('./a+./b'));
    const [misfit, notLora] = await Promise.all(['misfit.yaml', 'notlora.yaml'].map((f) => runCli(['merge', f, '--out', 'never'], { cwd: dir })));
    assert.equal(misfit.code, 1, misfit.stderr);
    assert.match(misfit.stderr, /^loraforge: misfit\.yaml:5:\d+: .*wide-lora: module "model\.layers\.0\.self_attn\.q_proj" is a linear layer of shape \[16, 16\] \(out × in\) but the base tensor "model\.layers\.0\.self_attn\.q_proj\.weight" in .*a is \[8, 8\]/);
    assert.equal(notLora.code, 2, notLora.stderr);
    assert.match(notLora.stderr, /^loraforge: notlora\.yaml:5:\d+: models\[1\]\.model: "\.\/a\+\.\/b" is neither a model folder nor MODEL\+ADAPTER/);
  });
});
