/**
 * `to-gguf` checked by llama.cpp itself (Qwen2): a tiny Qwen2 checkpoint with q/k/v biases and
 * tied embeddings (no permutation, no output tensor) whose tokenizer.json is rebuilt from
 * llama.cpp's ggml-vocab-qwen2.gguf is converted with the tokenizer read from the folder; then
 * llama.cpp's logits must match an independent forward pass of the HF tensors and llama.cpp must
 * tokenize its golden test strings (models/ggml-vocab-qwen2.gguf.inp/.out) exactly as expected.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { convertToGguf } from '../../src/to-gguf/to-gguf.js';
import { openGguf } from '../../src/io/gguf.js';
import { createRng } from '../../src/linalg/random.js';
import { roundTo } from '../../src/tensor/dtype.js';
import {
  checkAgainstLlamaCpp,
  readVocabGguf,
  tinyLlamaConfig,
  tinyLlamaWeights,
  useLlamaCppVocab,
  writeTinyLlama,
} from '../helpers/llamacpp.js';

const fixture = useLlamaCppVocab('qwen2');

describe('to-gguf output runs in llama.cpp like the HF model (qwen2)', () => {
  it('qwen2 (q/k/v biases, tied embeddings, tokenizer.json byte-level BPE): unpermuted, f16', async () => {
    const vocab = await readVocabGguf(fixture.vocab);
    const shape = { vocab: vocab.tokens.length, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96 };
    const config = { ...tinyLlamaConfig(shape), architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', rope_theta: 1000000, rms_norm_eps: 1e-6, bos_token_id: 151643, eos_token_id: 151643, tie_word_embeddings: true };
    const tensors = tinyLlamaWeights(shape, 8, true);
    const rng = createRng(9);
    for (let l = 0; l < shape.layers; l++) {
      for (const [proj, n] of [['q_proj', 64], ['k_proj', 32], ['v_proj', 32]] as const) {
        const data = new Float32Array(n);
        rng.fillNormal(data);
        tensors[`model.layers.${l}.self_attn.${proj}.bias`] = { shape: [n], data: data.map((v) => 0.5 * v) };
      }
    }
    const folder = join(fixture.dir, 'qwen2');
    await writeTinyLlama(folder, tensors, config);
    // tokenizer.json rebuilt from llama.cpp's vocab: byte-level BPE with Qwen2's pre-tokenizer regex
    const modelVocab: Record<string, number> = {};
    const added: object[] = [];
    vocab.tokens.forEach((tok, id) => {
      if (vocab.types[id] === 1) modelVocab[tok] = id;
      else if (vocab.types[id] === 3) added.push({ id, content: tok, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    });
    const regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    await writeFile(
      join(folder, 'tokenizer.json'),
      JSON.stringify({
        version: '1.0',
        added_tokens: added,
        normalizer: { type: 'NFC' },
        pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false }] },
        post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
        decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
        // the newer pair format of merges (transformers ≥ 4.45)
        model: { type: 'BPE', byte_fallback: false, vocab: modelVocab, merges: vocab.merges!.map((m) => m.split(' ')) },
      }),
    );
    await writeFile(join(folder, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|endoftext|>', pad_token: '<|endoftext|>', bos_token: null, chat_template: '{{ messages }}' }));

    const out = join(fixture.dir, 'qwen2.gguf');
    await convertToGguf({ model: folder, out, dtype: 'F16' });
    const written = await readVocabGguf(out);
    assert.equal(written.kv.get('tokenizer.ggml.model'), 'gpt2');
    assert.equal(written.kv.get('tokenizer.ggml.pre'), 'qwen2');
    assert.deepEqual(written.tokens, vocab.tokens.map((t, i) => (vocab.types[i] === 1 || vocab.types[i] === 3 ? t : `[PAD${i}]`)));
    assert.deepEqual(written.merges, vocab.merges);
    assert.equal(written.kv.get('tokenizer.ggml.eos_token_id'), 151643);
    assert.equal(written.kv.get('tokenizer.ggml.padding_token_id'), 151643);
    assert.equal(written.kv.get('tokenizer.ggml.bos_token_id'), 151643);
    assert.equal(written.kv.get('tokenizer.chat_template'), '{{ messages }}');
    const file = await openGguf(out);
    try {
      assert.equal(file.info('blk.0.attn_q.weight').dtype, 'F16');
      assert.equal(file.info('blk.0.attn_q.bias').dtype, 'F32');
      assert.equal(file.info('blk.0.attn_norm.weight').dtype, 'F32');
      assert.equal(file.has('output.weight'), false, 'a tied model has no output tensor; llama.cpp reuses token_embd');
    } finally {
      await file.close();
    }
    // the reference sees the same f16-rounded 2-D weights; llama.cpp also rounds activations to f16 for f16 matmuls
    const rounded = Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, t.shape.length === 2 ? { ...t, data: roundTo(t.data, 'F16') } : t]));
    await checkAgainstLlamaCpp(fixture.llama, out, rounded, config, fixture.golden, 1e-2);
  });
});
