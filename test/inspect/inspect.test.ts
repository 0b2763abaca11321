import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { runCli } from '../helpers/cli.js';
import { inspectPath } from '../../src/inspect/inspect.js';
import { createGgufSink, kvString, kvArray, GgufValueType } from '../../src/io/gguf.js';
import { PeftAdapterWriter } from '../../src/lora/adapter.js';
import { matrix } from '../../src/tensor/matrix.js';

describe('inspect', async () => {
  const dir = await makeTempDir('lf-inspect-');
  after(() => rm(dir, { recursive: true, force: true }));

  const model = join(dir, 'model');
  await writeModelFolder(
    model,
    {
      'model.embed_tokens.weight': { shape: [10, 4], data: new Float32Array(40).fill(1) },
      'model.layers.0.self_attn.q_proj.weight': { shape: [4, 4], data: new Float32Array(16).fill(2) },
    },
    { dtype: 'BF16', maxShardBytes: 64 },
  );

  it('lists a sharded checkpoint with totals', async () => {
    const r = await inspectPath({ path: model });
    assert.equal(r.kind, 'checkpoint');
    assert.equal(r.tensors.length, 2);
    assert.equal(r.totalParameters, 56);
    assert.equal(r.totalBytes, 112);
    assert.deepEqual(r.dtypes, { BF16: 2 });
    assert.equal(r.config?.model_type, 'llama');
  });

  it('lists a GGUF file and summarises long arrays', async () => {
    const path = join(dir, 'x.gguf');
    const sink = await createGgufSink(path, {
      kv: [
        ['general.architecture', kvString('llama')],
        ['tokenizer.ggml.tokens', kvArray(GgufValueType.STRING, Array.from({ length: 100 }, (_, i) => `t${i}`))],
      ],
    });
    await sink.add('blk.0.attn_q.weight', [3, 5], new Float32Array(15), 'F16');
    await sink.finish();
    const r = await inspectPath({ path });
    assert.equal(r.kind, 'gguf');
    assert.deepEqual(r.tensors.map((t) => [t.name, t.shape]), [['blk.0.attn_q.weight', [3, 5]]]);
    assert.equal(r.metadata['general.architecture'], 'llama');
    assert.equal(r.metadata['tokenizer.ggml.tokens'], '[100 items]');
  });

  it('lists a PEFT adapter folder with its config', async () => {
    const out = join(dir, 'adapter');
    const w = await PeftAdapterWriter.create(out);
    await w.addModule({ name: 'model.layers.0.self_attn.q_proj', kind: 'linear', A: matrix(2, 4), B: matrix(4, 2), alpha: 4 });
    await w.finish();
    const r = await inspectPath({ path: out });
    assert.equal(r.kind, 'peft-adapter');
    assert.equal(r.config?.r, 2);
    assert.equal(r.config?.lora_alpha, 4);
    assert.equal(r.tensors.length, 2);
  });

  it('CLI prints JSON and exits 0; a missing path exits 1 with the path named', async () => {
    const ok = await runCli(['inspect', model, '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).totalParameters, 56);
    const missing = await runCli(['inspect', join(dir, 'nope')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope: no such file or folder/);
  });

  it('CLI rejects a corrupt file with a clear message', async () => {
    const bad = join(dir, 'bad.safetensors');
    await writeFile(bad, Buffer.from([1, 2, 3]));
    const r = await runCli(['inspect', bad]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /bad\.safetensors/);
  });

  it('CLI usage errors exit 2', async () => {
    const r = await runCli(['inspect']);
    assert.equal(r.code, 2);
  });
});
