import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCheckpoint, pairTensors, readMatrix } from '../../src/io/checkpoint.js';
import { writeSafetensorsFile } from '../../src/io/safetensors.js';
import { roundTo } from '../../src/tensor/dtype.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

let root: string;
before(async () => {
  root = await makeTempDir('loraforge-ckpt-');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let count = 0;
const sub = () => join(root, `m${count++}`);

/** Tiny deterministic LCG giving floats in [-1, 1). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

function tensor(shape: number[], seed: number): { shape: number[]; data: Float32Array } {
  const next = lcg(seed);
  return { shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, next) };
}

/** A tiny Llama-shaped model: embed, one layer's q/k projections and a norm. */
function tinyModel(seed = 1): Record<string, { shape: number[]; data: Float32Array }> {
  return {
    'model.embed_tokens.weight': tensor([32, 16], seed),
    'model.layers.0.self_attn.q_proj.weight': tensor([16, 16], seed + 1),
    'model.layers.0.self_attn.k_proj.weight': tensor([8, 16], seed + 2),
    'model.norm.weight': tensor([16], seed + 3),
  };
}

async function rejectsWith(p: Promise<unknown>, ...res: RegExp[]): Promise<void> {
  await assert.rejects(p, (err: Error) => {
    for (const re of res) assert.match(err.message, re);
    return true;
  });
}

describe('openCheckpoint', () => {
  it('refuses a folder with both model.safetensors and an index (transformers would ignore the shards), naming both', async () => {
    const dir = sub();
    await writeModelFolder(dir, tinyModel(), { maxShardBytes: 1200 });
    await writeSafetensorsFile(join(dir, 'model.safetensors'), [{ name: 'model.norm.weight', ...tensor([16], 9), dtype: 'F32' }]);
    await rejectsWith(openCheckpoint(dir), /has both model\.safetensors and model\.safetensors\.index\.json: transformers would load model\.safetensors/, /remove the stale one, or pass .*model\.safetensors itself/);
    const single = await openCheckpoint(join(dir, 'model.safetensors'));
    assert.deepEqual(single.list().map((t) => t.name), ['model.norm.weight']);
    await single.close();
  });

  it('opens a single-file model folder with its config', async () => {
    const dir = sub();
    const model = tinyModel();
    assert.deepEqual(await writeModelFolder(dir, model, { dtype: 'BF16', config: { model_type: 'qwen2', hidden_size: 16 } }), ['model.safetensors']);
    const ckpt = await openCheckpoint(dir);
    try {
      assert.equal(ckpt.dir, dir);
      assert.deepEqual(ckpt.config, { model_type: 'qwen2', hidden_size: 16 });
      assert.deepEqual(ckpt.files, [join(dir, 'model.safetensors')]);
      assert.deepEqual(ckpt.list().map((t) => t.name), Object.keys(model));
      assert.deepEqual(ckpt.info('model.norm.weight'), { name: 'model.norm.weight', dtype: 'BF16', shape: [16], bytes: 32 });
      for (const [name, t] of Object.entries(model)) assert.deepEqual(await ckpt.read(name), roundTo(t.data, 'BF16'), name);
      assert.equal(ckpt.has('lm_head.weight'), false);
      await rejectsWith(ckpt.read('lm_head.weight'), /no tensor named "lm_head.weight"/);
    } finally {
      await ckpt.close();
    }
  });

  it('opens a sharded folder via the index, reading from the right shard', async () => {
    const dir = sub();
    const model = tinyModel(5);
    const files = await writeModelFolder(dir, model, { maxShardBytes: 1100 });
    assert.ok(files.length > 2 && files.includes('model.safetensors.index.json'), files.join());
    const ckpt = await openCheckpoint(dir);
    try {
      assert.equal(ckpt.files.length, files.length - 1);
      assert.deepEqual(ckpt.config, { architectures: ['LlamaForCausalLM'], model_type: 'llama' });
      for (const [name, t] of Object.entries(model)) assert.deepEqual(await ckpt.read(name), t.data, name);
      const reused = new Float32Array(256);
      for (const name of ['model.layers.0.self_attn.q_proj.weight', 'model.embed_tokens.weight']) {
        const buf = name === 'model.embed_tokens.weight' ? new Float32Array(512) : reused;
        assert.equal(await ckpt.readInto(name, buf), buf);
        assert.deepEqual(buf, model[name].data);
      }
      await rejectsWith(ckpt.readInto('model.norm.weight', reused), /readInto needs an array of 16 elements, got 256/);
    } finally {
      await ckpt.close();
    }
    await rejectsWith(ckpt.read('model.norm.weight'), /already closed/);
  });

  it('opens a lone .safetensors file, and a folder whose only file has another name', async () => {
    const dir = sub();
    await mkdir(dir);
    const w = tensor([4, 4], 9);
    await writeSafetensorsFile(join(dir, 'consolidated.safetensors'), [{ name: 'w', shape: w.shape, data: w.data, dtype: 'F32' }]);
    for (const path of [join(dir, 'consolidated.safetensors'), dir]) {
      const ckpt = await openCheckpoint(path);
      assert.equal(ckpt.dir, dir);
      assert.equal(ckpt.config, undefined);
      assert.deepEqual(await ckpt.read('w'), w.data);
      await ckpt.close();
    }
  });

  it('names the missing shard', async () => {
    const dir = sub();
    const files = await writeModelFolder(dir, tinyModel(), { maxShardBytes: 1100 });
    await unlink(join(dir, files[1]));
    await rejectsWith(openCheckpoint(dir), new RegExp(`names shard ${files[1]}, which is missing`), /incomplete/);
  });

  it('opens only the shards holding the chosen tensors, and lists only those (a Hub snapshot downloaded for them)', async () => {
    const dir = sub();
    const files = await writeModelFolder(dir, tinyModel(), { maxShardBytes: 1100 });
    const index = JSON.parse(await readFile(join(dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    const [first, firstShard] = Object.entries(index.weight_map)[0];
    for (const f of files.filter((f) => f !== firstShard && f.endsWith('.safetensors'))) await unlink(join(dir, f));
    const ckpt = await openCheckpoint(dir, { tensors: (name) => name === first });
    assert.deepEqual(ckpt.list().map((t) => t.name), [first]);
    assert.ok(ckpt.has(first));
    assert.equal((await ckpt.read(first)).length, ckpt.info(first).shape.reduce((a, b) => a * b, 1));
    await ckpt.close();
    await rejectsWith(openCheckpoint(dir), /which is missing/);
  });

  it('refuses an index that disagrees with the shards, or points outside the folder', async () => {
    const dir = sub();
    const files = await writeModelFolder(dir, tinyModel(), { maxShardBytes: 1100 });
    const indexPath = join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(await readFile(indexPath, 'utf8'));
    index.weight_map['model.norm.weight'] = files[0];
    await writeFile(indexPath, JSON.stringify(index));
    await rejectsWith(openCheckpoint(dir), new RegExp(`places tensor "model.norm.weight" in ${files[0]}, but that file does not contain it`));
    index.weight_map['model.norm.weight'] = '../elsewhere.safetensors';
    await writeFile(indexPath, JSON.stringify(index));
    await rejectsWith(openCheckpoint(dir), /"model.norm.weight" maps to "..\/elsewhere.safetensors", which is not a file name inside/);
    await writeFile(indexPath, '{"metadata": {}}');
    await rejectsWith(openCheckpoint(dir), /no "weight_map" object/);
  });

  it('refuses a tensor stored in two shards', async () => {
    const dir = sub();
    await mkdir(dir);
    const one = Float32Array.of(1);
    await writeSafetensorsFile(join(dir, 'a.safetensors'), [{ name: 'w', shape: [1], data: one, dtype: 'F32' }]);
    await writeSafetensorsFile(join(dir, 'b.safetensors'), [{ name: 'w', shape: [1], data: one, dtype: 'F32' }, { name: 'v', shape: [1], data: one, dtype: 'F32' }]);
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: { w: 'a.safetensors', v: 'b.safetensors' } }));
    await rejectsWith(openCheckpoint(dir), /tensor "w" is stored twice, in .*a\.safetensors and in .*b\.safetensors/);
  });

  it('says an adapter is an adapter (folder or file)', async () => {
    const dir = sub();
    await mkdir(dir);
    await writeSafetensorsFile(join(dir, 'adapter_model.safetensors'), [{ name: 'x.lora_A.weight', shape: [2, 4], data: new Float32Array(8), dtype: 'F32' }]);
    await writeFile(join(dir, 'adapter_config.json'), '{"peft_type": "LORA"}');
    await rejectsWith(openCheckpoint(dir), /is a LoRA adapter \(adapter_model\.safetensors\), not a model checkpoint/);
    await rejectsWith(openCheckpoint(join(dir, 'adapter_model.safetensors')), /is a LoRA adapter/);
  });

  it('explains folders without a usable safetensors checkpoint', async () => {
    const empty = sub();
    await mkdir(empty);
    await rejectsWith(openCheckpoint(empty), /has no model\.safetensors\.index\.json, model\.safetensors or other \.safetensors file/);
    await writeFile(join(empty, 'pytorch_model.bin'), 'x');
    await rejectsWith(openCheckpoint(empty), /found pytorch_model\.bin: loraforge reads safetensors checkpoints; convert first/);
    const several = sub();
    await mkdir(several);
    for (const f of ['x.safetensors', 'y.safetensors']) await writeSafetensorsFile(join(several, f), []);
    await rejectsWith(openCheckpoint(several), /several \.safetensors files \(x\.safetensors, y\.safetensors\)/);
    await rejectsWith(openCheckpoint(join(root, 'does-not-exist')), /no such file or folder/);
    await rejectsWith(openCheckpoint(join(several, '..', 'nothing.bin')), /no such file/);
    await writeFile(join(several, 'notes.txt'), 'x');
    await rejectsWith(openCheckpoint(join(several, 'notes.txt')), /expected a model folder or a \.safetensors file/);
  });

  it('reports a broken config.json', async () => {
    const dir = sub();
    await writeModelFolder(dir, tinyModel());
    await writeFile(join(dir, 'config.json'), '{oops');
    await rejectsWith(openCheckpoint(dir), /config\.json: not valid JSON/);
  });

  it('prefers model.safetensors over other files in the folder', async () => {
    const dir = sub();
    await writeModelFolder(dir, { w: tensor([2], 1) });
    await writeSafetensorsFile(join(dir, 'extra.safetensors'), [{ name: 'other', shape: [1], data: Float32Array.of(1), dtype: 'F32' }]);
    const ckpt = await openCheckpoint(dir);
    assert.deepEqual(ckpt.list().map((t) => t.name), ['w']);
    await ckpt.close();
  });
});

describe('pairTensors', () => {
  it('pairs common names (dtype may differ) and lists the rest', async () => {
    const da = sub();
    const db = sub();
    const base = tinyModel(1);
    await writeModelFolder(da, { ...base, 'lm_head.weight': tensor([32, 16], 7) }, { dtype: 'F32' });
    const { 'model.norm.weight': _dropped, ...rest } = base;
    await writeModelFolder(db, { 'extra.bias': tensor([3], 8), ...rest }, { dtype: 'BF16' });
    const a = await openCheckpoint(da);
    const b = await openCheckpoint(db);
    try {
      const { pairs, onlyInA, onlyInB } = pairTensors(a, b);
      assert.deepEqual(pairs.map((p) => p.name), Object.keys(rest));
      assert.deepEqual(onlyInA.sort(), ['lm_head.weight', 'model.norm.weight']);
      assert.deepEqual(onlyInB, ['extra.bias']);
      assert.equal(pairs[0].a.dtype, 'F32');
      assert.equal(pairs[0].b.dtype, 'BF16');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('throws on a shape mismatch, naming both paths, the tensor and both shapes', async () => {
    const da = sub();
    const db = sub();
    await writeModelFolder(da, { w: tensor([4, 8], 1) });
    await writeModelFolder(db, { w: tensor([8, 4], 1) });
    const a = await openCheckpoint(da);
    const b = await openCheckpoint(db);
    try {
      assert.throws(() => pairTensors(a, b), (err: Error) => {
        assert.match(err.message, /tensor "w" has shape \[4, 8\] in .* but \[8, 4\] in /);
        assert.ok(err.message.includes(da) && err.message.includes(db));
        return true;
      });
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('readMatrix', () => {
  it('reads 1-D as 1×n and 2-D as rows×cols, and refuses other ranks', async () => {
    const dir = sub();
    const m = tensor([3, 5], 4);
    const v = tensor([6], 5);
    await writeModelFolder(dir, { m, v, cube: tensor([2, 2, 2], 6), s: { shape: [], data: Float32Array.of(2) } });
    const ckpt = await openCheckpoint(dir);
    try {
      assert.deepEqual(await readMatrix(ckpt, 'm'), { rows: 3, cols: 5, data: m.data });
      assert.deepEqual(await readMatrix(ckpt, 'v'), { rows: 1, cols: 6, data: v.data });
      await rejectsWith(readMatrix(ckpt, 'cube'), /tensor "cube" has shape \[2, 2, 2\]; readMatrix handles 1-D and 2-D/);
      await rejectsWith(readMatrix(ckpt, 's'), /shape \[\]/);
    } finally {
      await ckpt.close();
    }
  });
});

describe('writeModelFolder', () => {
  it('leaves nothing behind when a tensor is refused', async () => {
    const dir = sub();
    await rejectsWith(writeModelFolder(dir, { ok: tensor([2], 1), bad: { shape: [3], data: new Float32Array(2) } }), /"bad"/);
    assert.deepEqual(await readdir(dir), []);
  });
});
