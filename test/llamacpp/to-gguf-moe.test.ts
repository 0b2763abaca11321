/**
 * `to-gguf` for mixture-of-experts families, checked by llama.cpp: tiny Mixtral and Qwen3-MoE
 * models in both HF expert layouts (one module per expert; transformers 5's fused 3-D
 * `mlp.experts.gate_up_proj` / `down_proj`) are converted to f32 GGUF and llama.cpp's logits must
 * match an independent f64 forward pass (router softmax, top-2 of 4 experts, renormalised).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { useLlamaCppVocab } from '../helpers/llamacpp.js';
import { checkFamilyInLlamaCpp, describeGguf, tinyFamilyConfig, tinyFamilyWeights } from '../helpers/tiny-families.js';

const fixture = useLlamaCppVocab('llama-spm');
const SHAPE = { vocab: 32000, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48 };
const TOKENS = [1, 15043, 3186, 29991, 450, 4996, 17354, 1701, 29916];
const MOE = { experts: 4, used: 2, expertFf: 24 };

describe('to-gguf mixture-of-experts families in llama.cpp', () => {
  for (const family of ['mixtral', 'mixtral-fused', 'qwen3_moe', 'qwen3_moe-fused'] as const) {
    const arch = family.startsWith('mixtral') ? 'llama' : 'qwen3moe';
    it(`${family}: experts stacked into ffn_{gate,up,down}_exps (E, out, in), router ffn_gate_inp in F32, expert counts`, async () => {
      const config = tinyFamilyConfig(family, SHAPE, MOE);
      const tensors = tinyFamilyWeights(family, SHAPE, 31, MOE);
      const gguf = await checkFamilyInLlamaCpp({ llama: fixture.llama, dir: fixture.dir, name: family, tensors, config, vocabFrom: fixture.vocab, tokens: TOKENS, tolerance: 1e-4 });
      const { kv, shapes, dtypes } = await describeGguf(gguf);
      assert.equal(kv.get(`${arch}.expert_count`), 4);
      assert.equal(kv.get(`${arch}.expert_used_count`), 2);
      if (arch === 'qwen3moe') assert.equal(kv.get('qwen3moe.expert_feed_forward_length'), 24);
      assert.deepEqual(shapes.get('blk.1.ffn_gate_exps.weight'), [4, 24, 32]);
      assert.deepEqual(shapes.get('blk.1.ffn_up_exps.weight'), [4, 24, 32]);
      assert.deepEqual(shapes.get('blk.1.ffn_down_exps.weight'), [4, 32, 24]);
      assert.deepEqual(shapes.get('blk.0.ffn_gate_inp.weight'), [4, 32]);
      assert.equal(dtypes.get('blk.0.ffn_gate_inp.weight'), 'F32');
      assert.equal([...shapes.keys()].filter((n) => n.includes('exps')).length, 3 * SHAPE.layers);
    });
  }
});
