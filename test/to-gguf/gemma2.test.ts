/**
 * to-gguf's Gemma2 metadata without llama.cpp (test/llamacpp/to-gguf-families.test.ts runs the
 * model): the KVs of convert_hf_to_gguf.py's Gemma2Model in its order, and the configs llama.cpp
 * would compute differently refused.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GgufValueType } from '../../src/io/gguf.js';
import { ggufHparamKvs } from '../../src/to-gguf/gguf-hparams.js';

const U32 = GgufValueType.UINT32;
const F32 = GgufValueType.FLOAT32;
// google/gemma-2-2b's config.json (the fields the converter reads)
const GEMMA2_2B = {
  architectures: ['Gemma2ForCausalLM'], model_type: 'gemma2', hidden_size: 2304, intermediate_size: 9216, max_position_embeddings: 8192,
  num_attention_heads: 8, num_hidden_layers: 26, num_key_value_heads: 4, head_dim: 256, rms_norm_eps: 1e-6, rope_theta: 10000,
  query_pre_attn_scalar: 256, attn_logit_softcapping: 50.0, final_logit_softcapping: 30.0, sliding_window: 4096, vocab_size: 256000,
};

describe('to-gguf: Gemma2 metadata', () => {
  it('Gemma-2-2B: Gemma2Model.set_gguf_parameters’ KVs in its order (no RoPE KVs)', () => {
    assert.deepEqual(ggufHparamKvs('cfg', 'gemma2', GEMMA2_2B, 'BF16').map(([k, v]) => [k, v.value, v.type]), [
      ['gemma2.context_length', 8192, U32],
      ['gemma2.embedding_length', 2304, U32],
      ['gemma2.block_count', 26, U32],
      ['gemma2.feed_forward_length', 9216, U32],
      ['gemma2.attention.head_count', 8, U32],
      ['gemma2.attention.head_count_kv', 4, U32],
      ['gemma2.attention.layer_norm_rms_epsilon', 1e-6, F32],
      ['gemma2.attention.key_length', 256, U32],
      ['gemma2.attention.value_length', 256, U32],
      ['general.file_type', 32, U32],
      ['gemma2.attn_logit_softcapping', 50, F32],
      ['gemma2.final_logit_softcapping', 30, F32],
      ['gemma2.attention.sliding_window', 4096, U32],
    ]);
  });

  it('refuses what llama.cpp would compute differently: query scaling, RoPE, no soft-capping', () => {
    assert.throws(() => ggufHparamKvs('cfg', 'gemma2', { ...GEMMA2_2B, query_pre_attn_scalar: 144 }, 'F16'), /cfg: config.json "query_pre_attn_scalar" is 144, but llama.cpp scales Gemma2 queries by head_dim \(256\)/);
    // the 27B (46 layers) scales by hidden/heads, as llama.cpp does for it
    assert.doesNotThrow(() => ggufHparamKvs('cfg', 'gemma2', { ...GEMMA2_2B, num_hidden_layers: 46, hidden_size: 4608, num_attention_heads: 32, head_dim: 128, query_pre_attn_scalar: 144 }, 'F16'));
    assert.throws(() => ggufHparamKvs('cfg', 'gemma2', { ...GEMMA2_2B, rope_theta: 500000 }, 'F16'), /a Gemma2 GGUF carries no RoPE settings/);
    assert.throws(() => ggufHparamKvs('cfg', 'gemma2', { ...GEMMA2_2B, attn_logit_softcapping: null }, 'F16'), /"attn_logit_softcapping" is null, but llama.cpp always soft-caps Gemma2/);
  });
});
