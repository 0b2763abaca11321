/**
 * `to-gguf` checked by llama.cpp itself (Llama): a tiny GQA Llama checkpoint (so K is permuted
 * with the KV head count) whose tokenizer.model is rebuilt from llama.cpp's own
 * ggml-vocab-llama-spm.gguf is converted with the tokenizer read from the folder; then
 * llama.cpp's logits must equal an independent f64 forward pass of the HF tensors (transformers'
 * semantics: rotate-half RoPE on unpermuted weights) and llama.cpp must tokenize its golden test
 * strings (models/ggml-vocab-llama-spm.gguf.inp/.out) exactly as expected.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { convertToGguf } from '../../src/to-gguf/to-gguf.js';
import {
  checkAgainstLlamaCpp,
  encodeSentencePieceModel,
  readVocabGguf,
  tinyLlamaConfig,
  tinyLlamaWeights,
  useLlamaCppVocab,
  writeTinyLlama,
  type VocabArrays,
} from '../helpers/llamacpp.js';

const fixture = useLlamaCppVocab('llama-spm');

describe('to-gguf output runs in llama.cpp like the HF model (llama)', () => {
  it('llama (GQA, tokenizer.model): permuted Q/K, f32, SentencePiece vocabulary', async () => {
    const vocab: VocabArrays = await readVocabGguf(fixture.vocab);
    const shape = { vocab: vocab.tokens.length, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96 };
    const config = tinyLlamaConfig(shape);
    const tensors = tinyLlamaWeights(shape, 7);
    const folder = join(fixture.dir, 'llama');
    await writeTinyLlama(folder, tensors, config);
    const pieces = vocab.tokens.map((piece, i) => ({ piece, score: vocab.scores![i]!, type: vocab.types[i]! }));
    await writeFile(join(folder, 'tokenizer.model'), encodeSentencePieceModel(pieces));
    await writeFile(join(folder, 'tokenizer_config.json'), JSON.stringify({ add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>' }));

    const out = join(fixture.dir, 'llama.gguf');
    const result = await convertToGguf({ model: folder, out, dtype: 'F32' });
    assert.equal(result.tokenizer, join(folder, 'tokenizer.model'));

    // The vocabulary we built equals the one llama.cpp ships, array for array.
    const written = await readVocabGguf(out);
    assert.deepEqual(written.tokens, vocab.tokens);
    assert.deepEqual(written.scores, vocab.scores);
    assert.deepEqual(written.types, vocab.types);
    for (const k of ['tokenizer.ggml.model', 'tokenizer.ggml.pre', 'tokenizer.ggml.bos_token_id', 'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.add_bos_token', 'tokenizer.ggml.add_eos_token']) {
      assert.deepEqual(written.kv.get(k), vocab.kv.get(k), k);
    }
    await checkAgainstLlamaCpp(fixture.llama, out, tensors, config, fixture.golden, 1e-4);
  });
});
