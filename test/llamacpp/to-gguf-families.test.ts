/**
 * `to-gguf` for every family the eval engine runs, checked by llama.cpp: a tiny synthetic model
 * of each family is converted to f32 GGUF (tokenizer KVs from llama.cpp's llama-spm vocab) and
 * llama.cpp's logits must be finite and match an independent f64 forward pass of the HF
 * tensors (test/helpers/llamacpp.ts referenceLogits), plus one property per family that only a
 * correct conversion has.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
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
});
