/**
 * `--out` never touches an input, whichever flag the input came from: every path a command reads
 * is collected where it is read (io/inputs.ts) and checked when the output is created and again
 * when it is committed. The cases are the ones that destroyed a model folder before: a
 * `--base-config` folder or file (not among the inputs the commands listed) used as `--out` with
 * `--force`, or as the parent of `--out`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { runCli } from '../helpers/cli.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { writeAdapter } from '../helpers/spectrum.js';
import { createRng } from '../../src/linalg/random.js';
import { matrix } from '../../src/tensor/matrix.js';
import { mergeAdapters } from '../../src/merge-adapters/index.js';
import { OutputIsInputError } from '../../src/io/atomic.js';
import { readInputText, withInputTracking, noteInput, inputsSoFar } from '../../src/io/inputs.js';

const LLAMA = { architectures: ['LlamaForCausalLM'], model_type: 'llama', num_attention_heads: 2, num_key_value_heads: 2, hidden_size: 8, tie_word_embeddings: false };

function gaussian(rows: number, cols: number, seed: number) {
  const m = matrix(rows, cols);
  createRng(seed).fillNormal(m.data);
  return m;
}

/** Every file under `dir` with its bytes, to compare before and after. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) {
      const p = join(e.parentPath, e.name);
      out.set(p, (await readFile(p)).toString('base64'));
    }
  }
  return out;
}

describe('--out is never an input, whatever flag named it', () => {
  let dir: string;
  let adapter1: string;
  let adapter2: string;
  let models = 0;

  /** A fresh model folder per case, so that one failure cannot hide in the next case. */
  async function freshModel(): Promise<{ model: string; files: Map<string, string> }> {
    const model = join(dir, `A${models++}`);
    await writeModelFolder(model, { 'model.layers.0.self_attn.q_proj.weight': { shape: [8, 8], data: gaussian(8, 8, 1).data } }, { config: LLAMA });
    return { model, files: await snapshot(model) };
  }

  before(async () => {
    dir = await makeTempDir('lf-outsafe-');
    const q = (seed: number) => ({ name: 'model.layers.0.self_attn.q_proj', kind: 'linear' as const, A: gaussian(2, 8, seed), B: gaussian(8, 2, seed + 1), alpha: 2 });
    adapter1 = join(dir, 'ad1');
    adapter2 = join(dir, 'ad2');
    await writeAdapter(adapter1, [q(10)]);
    await writeAdapter(adapter2, [q(20)]);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const mergeArgs = (baseConfig: string, out: string) => ['merge-adapters', '--adapter', adapter1, '--adapter', adapter2, '--method', 'cat', '--format', 'both', '--base-config', baseConfig, '--out', out];
  const editArgs = (baseConfig: string, out: string) => ['edit', '--adapter', adapter1, '--zero', '0', '--format', 'gguf', '--base-config', baseConfig, '--out', out];
  const cases: Array<[string, (model: string) => string, (baseConfig: string, out: string) => string[]]> = [
    ['merge-adapters --base-config FOLDER', (m) => m, mergeArgs],
    ['merge-adapters --base-config FILE', (m) => join(m, 'config.json'), mergeArgs],
    ['edit --base-config FOLDER', (m) => m, editArgs],
    ['edit --base-config FILE', (m) => join(m, 'config.json'), editArgs],
  ];
  for (const [label, baseConfig, args] of cases) {
    it(`${label}: --out on the model folder with --force is refused (exit 2) and the folder is intact`, async () => {
      const { model, files } = await freshModel();
      const r = await runCli([...args(baseConfig(model), model), '--force', '--quiet']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /contains the input|is the input/);
      assert.deepEqual(await snapshot(model), files);
    });
  }
  for (const [label, , args] of cases.filter(([label]) => label.endsWith('FOLDER'))) {
    it(`${label}: --out inside the folder is refused (exit 2) and nothing is written there`, async () => {
      const { model, files } = await freshModel();
      const r = await runCli([...args(model, join(model, 'sub')), '--quiet']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /inside the input/);
      assert.deepEqual(await snapshot(model), files);
      assert.deepEqual((await readdir(model)).sort(), ['config.json', 'model.safetensors']);
    });
  }

  it('the library refuses too: a config read in the same run protects its folder', async () => {
    const { model, files } = await freshModel();
    await assert.rejects(
      withInputTracking(async () => {
        const baseConfig = JSON.parse(await readInputText(join(model, 'config.json'))) as Record<string, unknown>;
        return mergeAdapters({ adapters: [{ path: adapter1, weight: 1 }, { path: adapter2, weight: 1 }], method: 'cat', format: 'gguf', baseConfig, out: model, overwrite: true });
      }),
      OutputIsInputError,
    );
    assert.deepEqual(await snapshot(model), files);
  });
});

describe('input tracking', () => {
  it('collects per run; nested runs share the outer set; concurrent runs are separate', async () => {
    noteInput('/outside/any/run'); // a no-op
    const [a, b] = await Promise.all([
      withInputTracking(async () => {
        noteInput('/x/a');
        await withInputTracking(async () => noteInput('/x/nested'));
        await new Promise((r) => setTimeout(r, 5));
        return inputsSoFar();
      }),
      withInputTracking(async () => {
        noteInput('/y/b');
        return inputsSoFar();
      }),
    ]);
    assert.deepEqual(a.sort(), ['/x/a', '/x/nested']);
    assert.deepEqual(b, ['/y/b']);
    assert.deepEqual(inputsSoFar(), []);
  });

  it('a side file read while the output is being written still stops the commit', async () => {
    const dir = await makeTempDir('lf-outsafe-late-');
    try {
      const { atomicOutputDir } = await import('../../src/io/atomic.js');
      const side = join(dir, 'out', 'x.json');
      await withInputTracking(async () => {
        const out = await atomicOutputDir(join(dir, 'out'));
        await writeFile(join(out.tmpPath, 'a'), 'a');
        noteInput(side); // read after the output was opened
        await assert.rejects(out.commit(), OutputIsInputError);
        await out.abort();
      });
      assert.deepEqual(await readdir(dir), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
