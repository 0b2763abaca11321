/** `inspect` (and every other JSON reader) on broken adapter folders: the file named, the way out said. */
import assert from 'node:assert/strict';
import { copyFile, cp, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { inspectPath } from '../../src/inspect/inspect.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { openPeftAdapter } from '../../src/lora/adapter.js';
import { makeFaultCorpus, type FaultCorpus } from './corpus.js';

describe('inspect on broken adapter folders', () => {
  let c: FaultCorpus;
  before(async () => {
    c = await makeFaultCorpus();
  });
  after(() => c.remove());

  async function adapterCopy(name: string): Promise<string> {
    const dir = join(c.root, name);
    await cp(c.adapter, dir, { recursive: true });
    return dir;
  }

  it('a truncated adapter_config.json is named and called invalid JSON, by inspect and by the adapter reader', async () => {
    const dir = await adapterCopy('truncated-config');
    const path = join(dir, 'adapter_config.json');
    const text = await readFile(path, 'utf8');
    await writeFile(path, text.slice(0, text.length >> 1));
    const expected = /truncated-config\/adapter_config\.json: not valid JSON \(.*\): the file is damaged or cut short/;
    await assert.rejects(inspectPath({ path: dir }), expected);
    await assert.rejects(openPeftAdapter(dir), expected);
  });

  it('a truncated model config.json is named', async () => {
    const dir = join(c.root, 'truncated-model');
    await cp(c.model, dir, { recursive: true });
    await writeFile(join(dir, 'config.json'), '{"architectures": ["Llama');
    await assert.rejects(openCheckpoint(dir), /truncated-model\/config\.json: not valid JSON/);
  });

  it('adapter_model.bin alone: says .bin is not read and gives the one-line conversion', async () => {
    const dir = await adapterCopy('bin-only');
    await rename(join(dir, 'adapter_model.safetensors'), join(dir, 'adapter_model.bin'));
    const expected = /bin-only: only adapter_model\.bin \(a PyTorch pickle\) .* convert it in Python with: python -c ".*save_file\(torch\.load\('adapter_model\.bin'/;
    await assert.rejects(inspectPath({ path: dir }), expected);
    await assert.rejects(openPeftAdapter(dir), expected);
  });

  it('a folder holding only a GGUF is inspected as that GGUF', async () => {
    const dir = join(c.root, 'gguf-only');
    await mkdir(dir);
    await copyFile(c.vocab, join(dir, 'adapter.gguf'));
    const r = await inspectPath({ path: dir });
    assert.equal(r.kind, 'gguf');
    assert.equal(r.path, join(dir, 'adapter.gguf'));
    assert.equal(r.metadata['general.architecture'], 'llama');
  });
});
