/** Damaged GGUF and YAML inputs: the message says what is wrong with the file, in the user's terms. */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openGguf } from '../../src/io/gguf.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { writeSafetensorsFile } from '../../src/io/safetensors.js';
import { runCli } from '../helpers/cli.js';
import { parseMergeConfig } from '../../src/merge/config.js';
import { makeFaultCorpus, type FaultCorpus } from './corpus.js';

describe('damaged GGUF files', () => {
  let c: FaultCorpus;
  before(async () => {
    c = await makeFaultCorpus();
  });
  after(() => c.remove());

  it('a file cut inside the metadata reads as truncated, not as an absurd count', async () => {
    const bytes = await readFile(c.vocab);
    for (const keep of [40, 60, bytes.length - 40]) {
      const cut = join(c.root, `cut-${keep}.gguf`);
      await writeFile(cut, bytes.subarray(0, keep));
      await assert.rejects(openGguf(cut), (err: Error) => {
        assert.match(err.message, new RegExp(`cut-${keep}\\.gguf: GGUF file is truncated: .*(incomplete download or copy\\?)`));
        assert.doesNotMatch(err.message, /absurd/);
        return true;
      });
    }
  });

  it('a folder given as a GGUF (to-gguf --vocab-from <folder>) is called a folder', async () => {
    await assert.rejects(openGguf(c.root), new RegExp(`${c.root}: is a folder, not a GGUF file`));
  });
});

describe('damaged mergekit YAML', () => {
  const yaml = (weight: string) => `merge_method: linear\nmodels:\n  - model: ./a\n    parameters:\n      weight: ${weight}\n`;

  it('weight: .nan / .inf is reported as NaN / Infinity, not null', () => {
    assert.throws(() => parseMergeConfig(yaml('.nan'), 'm.yaml'), /^Error: m\.yaml:5:15: models\[0\]\.parameters\.weight: weight must be a finite number, got NaN$/);
    assert.throws(() => parseMergeConfig(yaml('[1, -.inf]'), 'm.yaml'), /weight\[1\]: weight must be a finite number, got -Infinity$/);
  });

  it('an alias bomb (billion laughs) names the file and says why it is refused', () => {
    let text = 'a0: &a0 [x, x, x, x, x, x, x, x, x]\n';
    for (let i = 1; i < 10; i++) text += `a${i}: &a${i} [${Array(9).fill(`*a${i - 1}`).join(', ')}]\n`;
    text += 'merge_method: linear\n';
    assert.throws(() => parseMergeConfig(text, 'bomb.yaml'), /^Error: bomb\.yaml: too many YAML aliases \(\*name\) to expand/);
  });
});

describe('to-gguf on a model holding NaN', () => {
  let c: FaultCorpus;
  before(async () => {
    c = await makeFaultCorpus();
  });
  after(() => c.remove());

  it('exits 1 naming the file and the tensor, and writes nothing', async () => {
    const bad = join(c.root, 'nan-model');
    await mkdir(bad);
    await copyFile(join(c.model, 'config.json'), join(bad, 'config.json'));
    const source = await openCheckpoint(c.model);
    const tensors = [];
    for (const { name } of source.list()) {
      const data = await source.read(name);
      if (name === 'model.layers.0.self_attn.v_proj.weight') data[5] = NaN;
      tensors.push({ name, shape: [...source.info(name).shape], data, dtype: 'F32' as const });
    }
    await source.close();
    await writeSafetensorsFile(join(bad, 'model.safetensors'), tensors);
    const outDir = join(c.root, 'gguf-out');
    await mkdir(outDir);
    const r = await runCli(['to-gguf', '--model', bad, '--out', join(outDir, 'x.gguf'), '--vocab-from', c.vocab, '--quiet']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /model\.safetensors.*model\.layers\.0\.self_attn\.v_proj\.weight.*NaN/);
    assert.deepEqual(await readdir(outDir), [], 'no GGUF and no temporary left');
  });
});
