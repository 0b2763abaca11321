import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { modelConfig, readModelConfig, textFields } from '../../src/arch/config.js';
import { expertLayout } from '../../src/arch/experts.js';
import { hasTiedEmbeddings } from '../../src/lora/gguf-lora.js';
import { ggufArchFromConfig, qkPermuteHeadCount } from '../../src/lora/gguf-names.js';

describe('readModelConfig: the text_config rule', () => {
  it('takes a field from text_config where present, else from the top level', () => {
    const c = modelConfig({
      model_type: 'llama4',
      architectures: ['Llama4ForConditionalGeneration'],
      hidden_size: 999,
      vocab_size: 7,
      text_config: { model_type: 'llama4_text', hidden_size: 64, num_attention_heads: 4, tie_word_embeddings: true },
    });
    assert.equal(c.modelType, 'llama4_text');
    assert.equal(c.hiddenSize, 64, 'text_config wins');
    assert.equal(c.vocabSize, 7, 'top level where text_config lacks the field');
    assert.equal(c.numAttentionHeads, 4, 'only in text_config');
    assert.deepEqual(c.architectures, ['Llama4ForConditionalGeneration']);
    assert.equal(c.tieWordEmbeddings, true);
    assert.equal(c.headDim, 16);
    assert.deepEqual(textFields({ a: 1, text_config: { a: 2 } }), { a: 2, text_config: { a: 2 } });
  });

  it('every reader follows it (they used three rules before)', () => {
    const config = {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      tie_word_embeddings: false,
      num_attention_heads: 99,
      hidden_size: 999,
      text_config: { tie_word_embeddings: true, num_attention_heads: 4, num_key_value_heads: 2, hidden_size: 32 },
    };
    assert.equal(hasTiedEmbeddings('llama', config), true);
    assert.equal(qkPermuteHeadCount('llama', config, 'model.layers.0.self_attn.q_proj'), 4);
    assert.equal(qkPermuteHeadCount('llama', config, 'model.layers.0.self_attn.k_proj'), 2);
    // hidden size 32 (text_config) makes (E, 32, 48) a gate/up stored (E, in, out); the top level's 999 fits nothing
    assert.equal(expertLayout(config, 'gate_up_proj', [4, 32, 48]), 'in-out');
    assert.equal(ggufArchFromConfig({ model_type: 'gemma3', text_config: { model_type: 'qwen2' } }), 'qwen2');
  });

  it('leaves missing or mistyped fields undefined', () => {
    const c = modelConfig({ hidden_size: '64', num_attention_heads: 3, tie_word_embeddings: 'yes', architectures: 'Llama' });
    assert.equal(c.hiddenSize, undefined);
    assert.equal(c.headDim, undefined);
    assert.equal(c.tieWordEmbeddings, undefined);
    assert.deepEqual(c.architectures, []);
    const empty = modelConfig(undefined);
    for (const k of ['modelType', 'hiddenSize', 'numHiddenLayers', 'numKeyValueHeads', 'intermediateSize', 'vocabSize', 'rmsNormEps', 'ropeTheta', 'numExperts'] as const) {
      assert.equal(empty[k], undefined, k);
    }
    assert.equal(modelConfig({ hidden_size: 30, num_attention_heads: 4 }).headDim, undefined, 'not a whole head size');
    assert.equal(modelConfig({ hidden_size: 32, num_attention_heads: 4, head_dim: 12 }).headDim, 12, 'head_dim wins');
  });

  it('reads RoPE and expert fields as the converter does', () => {
    const c = modelConfig({ rope_theta: 500000, rope_scaling: { type: 'linear', factor: 2 }, num_experts: 8, rms_norm_eps: 1e-6 });
    assert.equal(c.ropeTheta, 500000);
    assert.equal(c.rope['rope_type'], 'linear');
    assert.equal(c.rope['factor'], 2);
    assert.equal(c.numExperts, 8);
    assert.equal(c.rmsNormEps, 1e-6);
  });

  it('reads a model folder and names a config.json that is not an object', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lf-arch-'));
    try {
      await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'qwen2', num_hidden_layers: 2 }));
      const c = await readModelConfig(dir);
      assert.equal(c.modelType, 'qwen2');
      assert.equal(c.numHiddenLayers, 2);
      await writeFile(join(dir, 'config.json'), '[1]');
      await assert.rejects(readModelConfig(dir), (e: Error) => e.message.startsWith(join(dir, 'config.json')) && /JSON object/.test(e.message));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
