/**
 * `to-gguf` for every family the eval engine runs, checked by llama.cpp: a tiny synthetic model
 * of each family is converted to f32 GGUF (tokenizer KVs from llama.cpp's llama-spm vocab) and
 * llama.cpp's logits must be finite and match an independent f64 forward pass of the HF
 * tensors (test/helpers/llamacpp.ts referenceLogits), plus one property per family that only a
 * correct conversion has.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openGguf } from '../../src/io/gguf.js';
import { useLlamaCppVocab } from '../helpers/llamacpp.js';
import { checkFamilyInLlamaCpp, describeGguf, tinyFamilyConfig, tinyFamilyWeights } from '../helpers/tiny-families.js';

const fixture = useLlamaCppVocab('llama-spm');
const SHAPE = { vocab: 32000, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48 };
const TOKENS = [1, 15043, 3186, 29991, 450, 4996, 17354, 1701, 29916];

describe('to-gguf families in llama.cpp', () => {
  it('qwen3: per-head q_norm/k_norm are written (attn_q_norm/attn_k_norm) and used', async () => {
    const config = tinyFamilyConfig('qwen3', SHAPE);
    const tensors = tinyFamilyWeights('qwen3', SHAPE, 21);
    const gguf = await checkFamilyInLlamaCpp({ llama: fixture.llama, dir: fixture.dir, name: 'qwen3', tensors, config, vocabFrom: fixture.vocab, tokens: TOKENS, tolerance: 1e-4 });
    const { kv, shapes } = await describeGguf(gguf);
    assert.equal(kv.get('general.architecture'), 'qwen3');
    assert.deepEqual(shapes.get('blk.1.attn_k_norm.weight'), [8]);
  });

  it('gemma2: norms stored as 1 + w, soft-capping and sliding-window KVs, no output tensor (lm_head skipped)', async () => {
    const config = tinyFamilyConfig('gemma2', SHAPE);
    const tensors = tinyFamilyWeights('gemma2', SHAPE, 41);
    // a stray lm_head (as AutoAWQ writes) is not used by llama.cpp: the converter skips it
    const withHead = { ...tensors, 'lm_head.weight': tensors['model.embed_tokens.weight']! };
    // 9 tokens > sliding_window 3 and soft caps of 5 / 3: all three shape the logits being compared
    const gguf = await checkFamilyInLlamaCpp({ llama: fixture.llama, dir: fixture.dir, name: 'gemma2', tensors: withHead, config, vocabFrom: fixture.vocab, tokens: TOKENS, tolerance: 1e-4 });
    const { kv, shapes } = await describeGguf(gguf);
    assert.equal(kv.get('gemma2.attn_logit_softcapping'), 5);
    assert.equal(kv.get('gemma2.final_logit_softcapping'), 3);
    assert.equal(kv.get('gemma2.attention.sliding_window'), 3);
    assert.equal(kv.has('gemma2.rope.freq_base'), false);
    assert.equal(shapes.has('output.weight'), false);
    assert.ok(shapes.has('blk.1.post_ffw_norm.weight') && shapes.has('blk.1.post_attention_norm.weight'));
    const file = await openGguf(gguf);
    try {
      const stored = await file.read('blk.0.ffn_norm.weight');
      const hf = tensors['model.layers.0.pre_feedforward_layernorm.weight']!.data;
      assert.deepEqual([...stored], [...hf].map((v) => Math.fround(v + 1)));
    } finally {
      await file.close();
    }
  });
});
