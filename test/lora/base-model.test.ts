import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { edoraInit } from '../../src/edora-init/edora-init.js';
import { getBackend } from '../../src/linalg/index.js';
import { editDelta } from '../../src/edit/edit.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { runCli } from '../helpers/cli.js';
import { TINY_LLAMA, llamaBase, llamaConfig, planted, withDeltas, writePair } from '../helpers/extract.js';

/** base_model_name_or_path of a written adapter. */
async function baseOf(adapter: string): Promise<unknown> {
  return JSON.parse(await readFile(join(adapter, 'adapter_config.json'), 'utf8')).base_model_name_or_path;
}

describe('base_model_name_or_path: the absolute model folder, however the path was typed', () => {
  let root: string;
  let pair: { a: string; b: string };
  before(async () => {
    root = await makeTempDir('lf-base-model-');
    const base = llamaBase(TINY_LLAMA, 3);
    const b = withDeltas(base, { 'model.layers.0.self_attn.q_proj.weight': planted(64, 64, [0.5, 0.2], 4) });
    pair = await writePair(join(root, 'models'), base, b, { config: llamaConfig(TINY_LLAMA) });
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('extract (relative folder, or a lone .safetensors file: the folder holding it)', async () => {
    const typed = await runCli(['extract', '--model-a', relative(root, pair.a), '--model-b', relative(root, pair.b), '--out', 'x1', '--rank', '2', '--quiet'], { cwd: root });
    assert.equal(typed.code, 0, typed.stderr);
    assert.equal(await baseOf(join(root, 'x1')), pair.a);
    const file = await runCli(['extract', '--model-a', join(relative(root, pair.a), 'model.safetensors'), '--model-b', pair.b, '--out', 'x2', '--rank', '2', '--quiet'], { cwd: root });
    assert.equal(file.code, 0, file.stderr);
    assert.equal(await baseOf(join(root, 'x2')), pair.a);
  });

  it('edit --model-a/--model-b and edora-init', async () => {
    const rel = (p: string) => relative(process.cwd(), p);
    const edited = join(root, 'edited');
    await editDelta({ backend: await getBackend(), modelA: rel(pair.a), modelB: rel(pair.b), rank: 2, out: edited, edit: { zero: [1] }, include: /q_proj/ });
    assert.equal(await baseOf(edited), pair.a);
    const edora = join(root, 'edora');
    await edoraInit({ base: rel(pair.a), rank: 2, targetModules: ['q_proj'], out: edora });
    assert.equal(await baseOf(edora), pair.a);
  });
});
