/**
 * `to-gguf` checked by llama.cpp itself: tiny Llama (GQA, so K is permuted with the KV head
 * count) and Qwen2 (q/k/v biases, no permutation) checkpoints whose tokenizer files are rebuilt
 * from llama.cpp's own vocab GGUFs are converted with the tokenizer read from the folder; then
 * - llama.cpp's logits must equal an independent f64 forward pass of the HF tensors
 *   (transformers' semantics: rotate-half RoPE on unpermuted weights), and
 * - llama.cpp must tokenize llama.cpp's golden test strings (models/ggml-vocab-*.gguf.inp/.out)
 *   exactly as expected.
 */
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { convertToGguf } from '../../src/convert/to-gguf.js';
import { openGguf } from '../../src/io/gguf.js';
import { createRng } from '../../src/linalg/random.js';
import { roundTo } from '../../src/tensor/dtype.js';
import {
  encodeSentencePieceModel,
  extractFromLlamaCppSource,
  llamaLogits,
  loadLlama,
  readGoldenTokenizerCases,
  readVocabGguf,
  referenceLogits,
  tinyLlamaConfig,
  tinyLlamaWeights,
  writeTinyLlama,
  type LlamaLike,
  type VocabArrays,
} from '../helpers/llamacpp.js';
import { makeTempDir } from '../helpers/synthetic.js';

const SRC = 'models/ggml-vocab-';
const TEXT = 'Hello world! The quick brown fox jumps over 13 lazy dogs.';

let dir = '';
let llama: LlamaLike;
let files: Record<string, string> = {};

before(async () => {
  dir = await makeTempDir('loraforge-to-gguf-');
  llama = await loadLlama();
  const names = ['llama-spm.gguf', 'llama-spm.gguf.inp', 'llama-spm.gguf.out', 'qwen2.gguf', 'qwen2.gguf.inp', 'qwen2.gguf.out'];
  const paths = await extractFromLlamaCppSource(names.map((n) => SRC + n), join(dir, 'vocab'));
  files = Object.fromEntries(names.map((n, i) => [n, paths[i]!]));
});

after(async () => {
  await llama?.dispose();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function maxAbsDiff64(a: Float32Array[], b: Float64Array[]): { diff: number; scale: number } {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < a[i]!.length; j++) {
      diff = Math.max(diff, Math.abs(a[i]![j]! - b[i]![j]!));
      scale = Math.max(scale, Math.abs(b[i]![j]!));
    }
  }
  return { diff, scale };
}

async function checkAgainstLlamaCpp(
  gguf: string,
  tensors: Parameters<typeof referenceLogits>[0],
  config: Record<string, unknown>,
  golden: { inp: string; out: string },
  tolerance: number,
): Promise<void> {
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  try {
    const cases = await readGoldenTokenizerCases(golden.inp, golden.out);
    let mismatches = 0;
    for (const c of cases) if (JSON.stringify(model.tokenize(c.text)) !== JSON.stringify(c.ids)) mismatches++;
    assert.equal(mismatches, 0, `${mismatches} of ${cases.length} golden tokenizations differ`);

    const tokens = model.tokenize(TEXT);
    const got = await llamaLogits(model, tokens, config['vocab_size'] as number);
    const { diff, scale } = maxAbsDiff64(got, referenceLogits(tensors, config, tokens));
    process.stderr.write(`  ${String(config['model_type'])}: ${cases.length} golden tokenizations ok; logit scale ${scale.toFixed(2)}, max |llama.cpp − reference| ${diff.toExponential(2)}\n`);
    assert.ok(scale > 1, 'logits are not degenerate');
    assert.ok(diff <= tolerance * scale, `llama.cpp logits differ from the reference by ${diff} (allowed ${tolerance * scale})`);
  } finally {
    await model.dispose();
  }
}

describe('to-gguf output runs in llama.cpp like the HF model', () => {
  it('llama (GQA, tokenizer.model): permuted Q/K, f32, SentencePiece vocabulary', async () => {
    const vocab: VocabArrays = await readVocabGguf(files['llama-spm.gguf']!);
    const shape = { vocab: vocab.tokens.length, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96 };
    const config = tinyLlamaConfig(shape);
    const tensors = tinyLlamaWeights(shape, 7);
    const folder = join(dir, 'llama');
    await writeTinyLlama(folder, tensors, config);
    const pieces = vocab.tokens.map((piece, i) => ({ piece, score: vocab.scores![i]!, type: vocab.types[i]! }));
    await writeFile(join(folder, 'tokenizer.model'), encodeSentencePieceModel(pieces));
    await writeFile(join(folder, 'tokenizer_config.json'), JSON.stringify({ add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>' }));

    const out = join(dir, 'llama.gguf');
    const result = await convertToGguf(folder, out, { dtype: 'F32' });
    assert.equal(result.tokenizer, join(folder, 'tokenizer.model'));

    // The vocabulary we built equals the one llama.cpp ships, array for array.
    const written = await readVocabGguf(out);
    assert.deepEqual(written.tokens, vocab.tokens);
    assert.deepEqual(written.scores, vocab.scores);
    assert.deepEqual(written.types, vocab.types);
    for (const k of ['tokenizer.ggml.model', 'tokenizer.ggml.pre', 'tokenizer.ggml.bos_token_id', 'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.add_bos_token', 'tokenizer.ggml.add_eos_token']) {
      assert.deepEqual(written.kv.get(k), vocab.kv.get(k), k);
    }
    await checkAgainstLlamaCpp(out, tensors, config, { inp: files['llama-spm.gguf.inp']!, out: files['llama-spm.gguf.out']! }, 1e-4);
  });

  it('qwen2 (q/k/v biases, tied embeddings, tokenizer.json byte-level BPE): unpermuted, f16', async () => {
    const vocab = await readVocabGguf(files['qwen2.gguf']!);
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
    const folder = join(dir, 'qwen2');
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

    const out = join(dir, 'qwen2.gguf');
    await convertToGguf(folder, out, { dtype: 'F16' });
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
    await checkAgainstLlamaCpp(out, rounded, config, { inp: files['qwen2.gguf.inp']!, out: files['qwen2.gguf.out']! }, 1e-2);
  });
});
