import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { withConfigDtype, writeModelSideFiles } from '../../src/io/model-folder.js';
import { makeTempDir } from '../helpers/synthetic.js';

let dir: string;
const CONFIG_TEXT = '{"model_type":"llama",  "torch_dtype":"bfloat16", "auto_map":{"AutoModel":"modeling_x.X"}}';

before(async () => {
  dir = await makeTempDir('loraforge-model-folder-');
  const src = join(dir, 'src');
  await mkdir(join(src, 'sub'), { recursive: true });
  const files: Record<string, string> = {
    'config.json': CONFIG_TEXT,
    'tokenizer.json': '{}',
    'generation_config.json': '{}',
    'modeling_x.py': 'class X: pass',
    LICENSE: 'terms',
    'README.md': '# x',
    'mergekit_config.yml': 'old',
    'model.safetensors': 'w',
    'model.safetensors.index.json': '{}',
    'pytorch_model.bin': 'w',
    'adapter_config.json': '{}',
    '.gitattributes': '*',
  };
  for (const [name, text] of Object.entries(files)) await writeFile(join(src, name), text);
});

after(() => rm(dir, { recursive: true, force: true }));

async function out(name: string): Promise<string> {
  const path = join(dir, name);
  await mkdir(path);
  return path;
}

describe('writeModelSideFiles (the one side-file rule of apply and merge)', () => {
  it('from a folder: every file but weights, indexes, adapter configs and hidden files; config.json byte for byte', async () => {
    const o = await out('folder');
    const written = await writeModelSideFiles(o, { source: join(dir, 'src') });
    const expected = ['LICENSE', 'README.md', 'config.json', 'generation_config.json', 'mergekit_config.yml', 'modeling_x.py', 'tokenizer.json'];
    assert.deepEqual(written, expected);
    assert.deepEqual((await readdir(o)).sort(), expected);
    assert.equal(await readFile(join(o, 'config.json'), 'utf8'), CONFIG_TEXT);
  });

  it('from a lone .safetensors file: only the known model files beside it', async () => {
    const o = await out('file');
    const written = await writeModelSideFiles(o, { source: join(dir, 'src', 'model.safetensors') });
    assert.deepEqual(written, ['config.json', 'generation_config.json', 'tokenizer.json']);
  });

  it("rewrites config.json for a new dtype, and writes the command's config and own files over copies", async () => {
    const o = await out('rewrite');
    await writeModelSideFiles(o, { source: join(dir, 'src'), dtype: 'F16' });
    const config = JSON.parse(await readFile(join(o, 'config.json'), 'utf8'));
    assert.deepEqual(config, { model_type: 'llama', torch_dtype: 'float16', auto_map: { AutoModel: 'modeling_x.X' } });

    const m = await out('merge');
    const written = await writeModelSideFiles(m, { source: join(dir, 'src'), config: { num_hidden_layers: 2 }, dtype: 'BF16', own: { 'mergekit_config.yml': 'new' } });
    assert.ok(written.includes('modeling_x.py') && written.includes('mergekit_config.yml'));
    assert.equal(await readFile(join(m, 'config.json'), 'utf8'), '{\n  "num_hidden_layers": 2,\n  "torch_dtype": "bfloat16"\n}\n');
    assert.equal(await readFile(join(m, 'mergekit_config.yml'), 'utf8'), 'new');
  });

  it('sets every dtype key a config has, and torch_dtype when it has none', () => {
    assert.deepEqual(withConfigDtype({ dtype: 'float32', torch_dtype: 'float32' }, 'BF16'), { dtype: 'bfloat16', torch_dtype: 'bfloat16' });
    assert.deepEqual(withConfigDtype({ dtype: 'float32' }, 'F16'), { dtype: 'float16' });
    assert.deepEqual(withConfigDtype({ a: 1 }, 'F32'), { a: 1, torch_dtype: 'float32' });
  });
});
