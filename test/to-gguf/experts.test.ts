/**
 * to-gguf for mixture-of-experts models without llama.cpp (test/llamacpp/to-gguf-moe.test.ts runs
 * them): the expert KVs in the converter's order, the routing configs llama.cpp cannot compute
 * refused, and incomplete expert sets named.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GgufValueType } from '../../src/io/gguf.js';
import { ggufHparamKvs } from '../../src/to-gguf/gguf-hparams.js';
import { convertToGguf } from '../../src/to-gguf/to-gguf.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { tinyFamilyConfig, tinyFamilyWeights } from '../helpers/tiny-families.js';

const U32 = GgufValueType.UINT32;
const F32 = GgufValueType.FLOAT32;

describe('to-gguf: mixture-of-experts metadata and checks', () => {
  let dir = '';
  before(async () => {
    dir = await makeTempDir('loraforge-to-gguf-moe-');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('Mixtral-8x7B: expert_count and expert_used_count after the RMS epsilon, as the converter writes them', () => {
    const config = {
      architectures: ['MixtralForCausalLM'], hidden_size: 4096, intermediate_size: 14336, max_position_embeddings: 32768, num_attention_heads: 32,
      num_hidden_layers: 32, num_key_value_heads: 8, rms_norm_eps: 1e-5, rope_theta: 1e6, num_local_experts: 8, num_experts_per_tok: 2, vocab_size: 32000,
    };
    assert.deepEqual(ggufHparamKvs('cfg', 'llama', config, 'F16').map(([k, v]) => [k, v.value, v.type]), [
      ['llama.block_count', 32, U32],
      ['llama.context_length', 32768, U32],
      ['llama.embedding_length', 4096, U32],
      ['llama.feed_forward_length', 14336, U32],
      ['llama.attention.head_count', 32, U32],
      ['llama.attention.head_count_kv', 8, U32],
      ['llama.rope.freq_base', 1e6, F32],
      ['llama.attention.layer_norm_rms_epsilon', 1e-5, F32],
      ['llama.expert_count', 8, U32],
      ['llama.expert_used_count', 2, U32],
      ['general.file_type', 1, U32],
      ['llama.vocab_size', 32000, U32],
      ['llama.rope.dimension_count', 128, U32],
    ]);
  });

  it('Qwen3-MoE: expert_feed_forward_length after the file type; unnormalised top-k and dense layers refused', () => {
    const config = tinyFamilyConfig('qwen3_moe', { vocab: 10, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48 }, { experts: 4, used: 2, expertFf: 24 });
    const kvs = ggufHparamKvs('cfg', 'qwen3moe', config, 'BF16').map(([k, v]) => [k, v.value]);
    assert.deepEqual(kvs.slice(-3), [['qwen3moe.attention.value_length', 8], ['general.file_type', 32], ['qwen3moe.expert_feed_forward_length', 24]]);
    assert.throws(() => ggufHparamKvs('cfg', 'qwen3moe', { ...config, norm_topk_prob: false }, 'F16'), /cfg: config.json "norm_topk_prob" is false; llama.cpp always renormalises/);
    assert.throws(() => ggufHparamKvs('cfg', 'qwen3moe', { ...config, mlp_only_layers: [1] }, 'F16'), /some layers dense/);
    assert.throws(() => ggufHparamKvs('cfg', 'qwen3moe', { ...config, decoder_sparse_step: 2 }, 'F16'), /some layers dense/);
  });

  it('a missing expert, or one beyond config.json’s count, is named', async () => {
    const shape = { vocab: 16, hidden: 8, layers: 1, heads: 2, kvHeads: 1, intermediate: 8 };
    const moe = { experts: 3, used: 2, expertFf: 4 };
    const config = tinyFamilyConfig('mixtral', shape, moe);
    const tensors = tinyFamilyWeights('mixtral', shape, 1, moe);
    delete tensors['model.layers.0.block_sparse_moe.experts.1.w2.weight'];
    await writeModelFolder(join(dir, 'missing'), tensors, { dtype: 'F32', config });
    await assert.rejects(convertToGguf({ model: join(dir, 'missing'), out: join(dir, 'missing.gguf'), vocabFrom: 'unused' }), (err: Error) => {
      assert.match(err.message, /blk\.0\.ffn_down_exps\.weight needs 3 experts, but expert\(s\) 1 are missing \(e\.g\. model\.layers\.0\.block_sparse_moe\.experts\.1\.w2\.weight\)/);
      return true;
    });
    await writeModelFolder(join(dir, 'extra'), tinyFamilyWeights('mixtral', shape, 1, moe), { dtype: 'F32', config: { ...config, num_local_experts: 2 } });
    await assert.rejects(convertToGguf({ model: join(dir, 'extra'), out: join(dir, 'extra.gguf'), vocabFrom: 'unused' }), /experts\.2\.w\d\.weight" is expert 2, but config\.json says 2 experts/);
  });
});
