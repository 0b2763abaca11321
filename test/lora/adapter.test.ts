import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/synthetic.js';
import { PeftAdapterWriter, openPeftAdapter, readPeftAdapter, lookupPattern, loraScaling, patternKey } from '../../src/lora/adapter.js';
import { writeSafetensorsFile } from '../../src/io/safetensors.js';
import { matrix, type Matrix } from '../../src/tensor/matrix.js';

function filled(rows: number, cols: number, seed: number): Matrix {
  const m = matrix(rows, cols);
  for (let i = 0; i < m.data.length; i++) m.data[i] = Math.sin(seed * 1000 + i);
  return m;
}

describe('PEFT adapter folders', async () => {
  const dir = await makeTempDir('lf-adapter-');
  after(() => rm(dir, { recursive: true, force: true }));

  it('round-trips linear and embedding modules with per-module rank/alpha patterns', async () => {
    const out = join(dir, 'rt');
    const w = await PeftAdapterWriter.create(out, { baseModel: 'base-x' });
    const q = { name: 'model.layers.0.self_attn.q_proj', kind: 'linear' as const, A: filled(4, 6, 1), B: filled(8, 4, 2), alpha: 4 };
    const v = { name: 'model.layers.0.self_attn.v_proj', kind: 'linear' as const, A: filled(4, 6, 3), B: filled(8, 4, 4), alpha: 4 };
    const o = { name: 'model.layers.1.self_attn.o_proj', kind: 'linear' as const, A: filled(2, 6, 5), B: filled(6, 2, 6), alpha: 7 };
    // embedding weight is vocab(10) × hidden(6): B is 10 × r, A is r × 6 in weight orientation
    const e = { name: 'model.embed_tokens', kind: 'embedding' as const, A: filled(3, 6, 7), B: filled(10, 3, 8), alpha: 3 };
    for (const m of [q, v, o, e]) await w.addModule(m);
    await w.finish();

    const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(config.r, 4);
    assert.equal(config.lora_alpha, 4);
    assert.deepEqual(config.rank_pattern, { 'layers.1.self_attn.o_proj': 2, embed_tokens: 3 });
    assert.deepEqual(config.alpha_pattern, { 'layers.1.self_attn.o_proj': 7, embed_tokens: 3 });
    assert.deepEqual(config.target_modules, ['embed_tokens', 'o_proj', 'q_proj', 'v_proj']);
    assert.equal(config.base_model_name_or_path, 'base-x');

    const adapter = await openPeftAdapter(out);
    const emb = adapter.module('model.embed_tokens');
    assert.deepEqual([emb.kind, emb.rank, emb.outFeatures, emb.inFeatures], ['embedding', 3, 10, 6]);
    assert.equal(adapter.module('model.layers.1.self_attn.o_proj').scaling, 7 / 2);
    await adapter.close();

    const { modules } = await readPeftAdapter(out);
    for (const orig of [q, v, o, e]) {
      const got = modules.find((m) => m.name === orig.name)!;
      assert.deepEqual(got.A, orig.A);
      assert.deepEqual(got.B, orig.B);
      assert.equal(got.alpha, orig.alpha);
    }
  });

  it('stores embedding LoRA in PEFT orientation (lora_embedding_A is r × vocab)', async () => {
    const out = join(dir, 'emb');
    const w = await PeftAdapterWriter.create(out);
    await w.addModule({ name: 'model.embed_tokens', kind: 'embedding', A: filled(2, 5, 1), B: filled(9, 2, 2), alpha: 2 });
    await w.finish();
    const { openSafetensors } = await import('../../src/io/safetensors.js');
    const f = await openSafetensors(join(out, 'adapter_model.safetensors'));
    assert.deepEqual(f.info('base_model.model.model.embed_tokens.lora_embedding_A').shape, [2, 9]);
    assert.deepEqual(f.info('base_model.model.model.embed_tokens.lora_embedding_B').shape, [5, 2]);
    await f.close();
  });

  it('reads DoRA magnitude and EDoRA latent tensors and checks their shapes', async () => {
    const out = join(dir, 'dora');
    await mkdir(out);
    await writeFile(join(out, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 4, use_dora: true }));
    const p = 'base_model.model.model.layers.0.mlp.up_proj';
    await writeSafetensorsFile(join(out, 'adapter_model.safetensors'), [
      { name: `${p}.lora_A.weight`, shape: [2, 3], data: new Float32Array(6), dtype: 'F32' },
      { name: `${p}.lora_B.weight`, shape: [5, 2], data: new Float32Array(10), dtype: 'F32' },
      { name: `${p}.lora_magnitude_vector`, shape: [5], data: new Float32Array([1, 2, 3, 4, 5]), dtype: 'F32' },
      { name: `${p}.lora_latent_mapping.weight`, shape: [2, 2], data: new Float32Array([1, 0, 0, 1]), dtype: 'F32' },
    ]);
    const { modules } = await readPeftAdapter(out);
    assert.deepEqual(Array.from(modules[0].magnitude!), [1, 2, 3, 4, 5]);
    assert.deepEqual(Array.from(modules[0].latent!.data), [1, 0, 0, 1]);

    await writeSafetensorsFile(join(out, 'adapter_model.safetensors'), [
      { name: `${p}.lora_A.weight`, shape: [2, 3], data: new Float32Array(6), dtype: 'F32' },
      { name: `${p}.lora_B.weight`, shape: [5, 2], data: new Float32Array(10), dtype: 'F32' },
      { name: `${p}.lora_latent_mapping.weight`, shape: [3, 3], data: new Float32Array(9), dtype: 'F32' },
    ]);
    await assert.rejects(openPeftAdapter(out), /lora_latent_mapping is 3×3, expected 2×2/);
  });

  it('rejects incomplete or mismatched factors and non-LoRA configs', async () => {
    const out = join(dir, 'bad');
    await mkdir(out);
    await writeFile(join(out, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 4 }));
    const p = 'base_model.model.model.layers.0.mlp.up_proj';
    await writeSafetensorsFile(join(out, 'adapter_model.safetensors'), [
      { name: `${p}.lora_A.weight`, shape: [2, 3], data: new Float32Array(6), dtype: 'F32' },
    ]);
    await assert.rejects(openPeftAdapter(out), /has lora_A but no lora_B/);
    await writeSafetensorsFile(join(out, 'adapter_model.safetensors'), [
      { name: `${p}.lora_A.weight`, shape: [2, 3], data: new Float32Array(6), dtype: 'F32' },
      { name: `${p}.lora_B.weight`, shape: [5, 3], data: new Float32Array(15), dtype: 'F32' },
    ]);
    await assert.rejects(openPeftAdapter(out), /ranks differ/);
    await writeFile(join(out, 'adapter_config.json'), JSON.stringify({ peft_type: 'IA3', r: 2, lora_alpha: 4 }));
    await assert.rejects(openPeftAdapter(out), /peft_type is IA3/);
    await assert.rejects(openPeftAdapter(join(dir, 'missing')), /adapter_config\.json: missing/);
  });

  it('matches rank/alpha patterns the way PEFT does', () => {
    const patterns = { 'layers.1.self_attn.o_proj': 7, q_proj: 3 };
    assert.equal(lookupPattern(patterns, 'model.layers.1.self_attn.o_proj'), 7);
    assert.equal(lookupPattern(patterns, 'model.layers.11.self_attn.o_proj'), undefined);
    assert.equal(lookupPattern(patterns, 'model.layers.5.self_attn.q_proj'), 3);
    assert.equal(lookupPattern(patterns, 'model.layers.5.self_attn.xq_proj'), undefined);
    assert.equal(patternKey('model.layers.3.mlp.up_proj'), 'layers.3.mlp.up_proj');
    assert.equal(loraScaling(16, 4), 4);
    assert.equal(loraScaling(16, 4, true), 8);
  });
});
