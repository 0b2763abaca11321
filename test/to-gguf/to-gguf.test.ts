import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GGUF_FILE_TYPE, ggufHparamKvs, llama3RopeFactors } from '../../src/to-gguf/gguf-hparams.js';
import { convertToGguf } from '../../src/to-gguf/to-gguf.js';
import { slidingWindowNote } from '../../src/to-gguf/sliding-window.js';
import { createGgufSink, GgufValueType, kvArray, kvString, kvU32, openGguf, type GgufKv } from '../../src/io/gguf.js';
import { createRng } from '../../src/linalg/random.js';
import { roundTo } from '../../src/tensor/dtype.js';
import { runCli } from '../helpers/cli.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

const f32 = Math.fround;

/** Plain [key, value, type] triples of a KV list, for exact comparison. */
function plain(kvs: Array<[string, GgufKv]>): Array<[string, unknown, number]> {
  return kvs.map(([k, v]) => [k, v.value, v.type]);
}

describe('model metadata matches what convert_hf_to_gguf.py wrote into llama.cpp’s vocab GGUFs', () => {
  // Expected lists are the `<arch>.*` KVs (in file order) of llama.cpp's models/ggml-vocab-*.gguf,
  // which its converter produced from these models' config.json files.
  const U32 = GgufValueType.UINT32;
  const F32 = GgufValueType.FLOAT32;

  it('Llama-2-7B (ggml-vocab-llama-spm.gguf)', () => {
    const config = {
      architectures: ['LlamaForCausalLM'], hidden_size: 4096, intermediate_size: 11008, max_position_embeddings: 4096,
      num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 32, rms_norm_eps: 1e-5, vocab_size: 32000,
    };
    assert.deepEqual(plain(ggufHparamKvs('cfg', 'llama', config, 'F16')), [
      ['llama.block_count', 32, U32],
      ['llama.context_length', 4096, U32],
      ['llama.embedding_length', 4096, U32],
      ['llama.feed_forward_length', 11008, U32],
      ['llama.attention.head_count', 32, U32],
      ['llama.attention.head_count_kv', 32, U32],
      ['llama.attention.layer_norm_rms_epsilon', 1e-5, F32],
      ['general.file_type', 1, U32],
      ['llama.vocab_size', 32000, U32],
      ['llama.rope.dimension_count', 128, U32],
    ]);
  });

  it('Llama-3-8B (ggml-vocab-llama-bpe.gguf)', () => {
    const config = {
      architectures: ['LlamaForCausalLM'], hidden_size: 4096, intermediate_size: 14336, max_position_embeddings: 8192,
      num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 8, rms_norm_eps: 1e-5, rope_theta: 500000.0, vocab_size: 128256, rope_scaling: null,
    };
    assert.deepEqual(plain(ggufHparamKvs('cfg', 'llama', config, 'F16')), [
      ['llama.block_count', 32, U32],
      ['llama.context_length', 8192, U32],
      ['llama.embedding_length', 4096, U32],
      ['llama.feed_forward_length', 14336, U32],
      ['llama.attention.head_count', 32, U32],
      ['llama.attention.head_count_kv', 8, U32],
      ['llama.rope.freq_base', 500000, F32],
      ['llama.attention.layer_norm_rms_epsilon', 1e-5, F32],
      ['general.file_type', 1, U32],
      ['llama.vocab_size', 128256, U32],
      ['llama.rope.dimension_count', 128, U32],
    ]);
  });

  it('Qwen (ggml-vocab-qwen2.gguf): no vocab_size / rope.dimension_count for qwen2', () => {
    const config = {
      architectures: ['Qwen2ForCausalLM'], hidden_size: 4096, intermediate_size: 11008, max_position_embeddings: 32768,
      num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 32, rms_norm_eps: 1e-6, rope_theta: 1000000.0, vocab_size: 151936,
    };
    assert.deepEqual(plain(ggufHparamKvs('cfg', 'qwen2', config, 'F16')), [
      ['qwen2.block_count', 32, U32],
      ['qwen2.context_length', 32768, U32],
      ['qwen2.embedding_length', 4096, U32],
      ['qwen2.feed_forward_length', 11008, U32],
      ['qwen2.attention.head_count', 32, U32],
      ['qwen2.attention.head_count_kv', 32, U32],
      ['qwen2.rope.freq_base', 1000000, F32],
      ['qwen2.attention.layer_norm_rms_epsilon', 1e-6, F32],
      ['general.file_type', 1, U32],
    ]);
  });

  it('writes file types, head_dim, linear and yarn RoPE scaling, and refuses what it cannot express', () => {
    assert.deepEqual(GGUF_FILE_TYPE, { F32: 0, F16: 1, BF16: 32 });
    const base = { architectures: ['Qwen3ForCausalLM'], num_hidden_layers: 2, hidden_size: 64, num_attention_heads: 4, head_dim: 32 };
    const kv = new Map(plain(ggufHparamKvs('cfg', 'qwen3', { ...base, rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } }, 'BF16')).map(([k, v]) => [k, v]));
    assert.equal(kv.get('qwen3.attention.key_length'), 32);
    assert.equal(kv.get('qwen3.attention.value_length'), 32);
    assert.equal(kv.get('qwen3.rope.scaling.type'), 'yarn');
    assert.equal(kv.get('qwen3.rope.scaling.factor'), 4);
    assert.equal(kv.get('qwen3.rope.scaling.original_context_length'), 32768);
    assert.equal(kv.get('general.file_type'), 32);
    const linear = new Map(plain(ggufHparamKvs('cfg', 'llama', { ...base, architectures: ['LlamaForCausalLM'], vocab_size: 10, rope_scaling: { type: 'linear', factor: 2 } }, 'F32')).map(([k, v]) => [k, v]));
    assert.equal(linear.get('llama.rope.scaling.type'), 'linear');
    assert.equal(linear.get('llama.rope.dimension_count'), 32, 'head_dim wins over hidden/heads');
    assert.throws(() => ggufHparamKvs('cfg', 'llama', { ...base, rope_scaling: { rope_type: 'dynamic', factor: 2 } }, 'F16'), /rope_scaling type "dynamic" is not supported/);
    assert.throws(() => ggufHparamKvs('cfg', 'qwen2', { ...base, num_experts: 8 }, 'F16'), /mixture-of-experts qwen2 models are not supported/);
    assert.throws(() => ggufHparamKvs('cfg', 'gpt-oss', base, 'F16'), /to-gguf converts .*; "gpt-oss" needs llama\.cpp's convert_hf_to_gguf\.py/);
  });

  it('computes Llama 3.1 RoPE frequency factors (rope_freqs)', () => {
    const config = { hidden_size: 4096, num_attention_heads: 32, rope_theta: 500000, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } };
    const got = llama3RopeFactors('cfg', config)!;
    assert.equal(got.length, 64);
    // independent f64 evaluation of Meta's formula; the converter works in f32, hence the tolerance
    for (let i = 0; i < 64; i++) {
      const wavelen = (2 * Math.PI) / 500000 ** (-(2 * i) / 128);
      const want = wavelen < 8192 / 4 ? 1 : wavelen > 8192 ? 8 : 1 / ((1 - (8192 / wavelen - 1) / 3) / 8 + (8192 / wavelen - 1) / 3);
      assert.ok(Math.abs(got[i]! - want) <= 1e-5 * want, `factor ${i}: ${got[i]} vs ${want}`);
    }
    assert.equal(got[0], 1);
    assert.equal(got[63], 8);
    assert.equal(llama3RopeFactors('cfg', { hidden_size: 64, num_attention_heads: 4 }), undefined);
  });
});

// ---------------------------------------------------------------------------------------------
// Converting checkpoints
// ---------------------------------------------------------------------------------------------

const VOCAB = 48;
const HIDDEN = 16;
const HEADS = 4;
const KV_HEADS = 2;
const HEAD_DIM = HIDDEN / HEADS;
const FF = 24;
const CONFIG = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: VOCAB, hidden_size: HIDDEN, intermediate_size: FF,
  num_hidden_layers: 1, num_attention_heads: HEADS, num_key_value_heads: KV_HEADS, max_position_embeddings: 256,
  rms_norm_eps: 1e-6, rope_theta: 10000, attention_bias: true,
};

function random(shape: number[], seed: number): { shape: number[]; data: Float32Array } {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  createRng(seed).fillNormal(data);
  return { shape, data };
}

const TENSORS: Record<string, { shape: number[]; data: Float32Array }> = {
  'model.embed_tokens.weight': random([VOCAB, HIDDEN], 1),
  'model.layers.0.input_layernorm.weight': random([HIDDEN], 2),
  'model.layers.0.self_attn.q_proj.weight': random([HEADS * HEAD_DIM, HIDDEN], 3),
  'model.layers.0.self_attn.q_proj.bias': random([HEADS * HEAD_DIM], 4),
  'model.layers.0.self_attn.k_proj.weight': random([KV_HEADS * HEAD_DIM, HIDDEN], 5),
  'model.layers.0.self_attn.k_proj.bias': random([KV_HEADS * HEAD_DIM], 6),
  'model.layers.0.self_attn.v_proj.weight': random([KV_HEADS * HEAD_DIM, HIDDEN], 7),
  'model.layers.0.self_attn.o_proj.weight': random([HIDDEN, HIDDEN], 8),
  'model.layers.0.self_attn.rotary_emb.inv_freq': random([HEAD_DIM / 2], 9),
  'model.layers.0.post_attention_layernorm.weight': random([HIDDEN], 10),
  'model.layers.0.mlp.gate_proj.weight': random([FF, HIDDEN], 11),
  'model.layers.0.mlp.up_proj.weight': random([FF, HIDDEN], 12),
  'model.layers.0.mlp.down_proj.weight': random([HIDDEN, FF], 13),
  'model.norm.weight': random([HIDDEN], 14),
  'lm_head.weight': random([VOCAB, HIDDEN], 15),
};

/** GGUF name and llama.cpp row permutation (head count) of each HF tensor, written out by hand. */
const EXPECTED: Record<string, [string, number | undefined]> = {
  'model.embed_tokens.weight': ['token_embd.weight', undefined],
  'model.layers.0.input_layernorm.weight': ['blk.0.attn_norm.weight', undefined],
  'model.layers.0.self_attn.q_proj.weight': ['blk.0.attn_q.weight', HEADS],
  'model.layers.0.self_attn.q_proj.bias': ['blk.0.attn_q.bias', HEADS],
  'model.layers.0.self_attn.k_proj.weight': ['blk.0.attn_k.weight', KV_HEADS],
  'model.layers.0.self_attn.k_proj.bias': ['blk.0.attn_k.bias', KV_HEADS],
  'model.layers.0.self_attn.v_proj.weight': ['blk.0.attn_v.weight', undefined],
  'model.layers.0.self_attn.o_proj.weight': ['blk.0.attn_output.weight', undefined],
  'model.layers.0.post_attention_layernorm.weight': ['blk.0.ffn_norm.weight', undefined],
  'model.layers.0.mlp.gate_proj.weight': ['blk.0.ffn_gate.weight', undefined],
  'model.layers.0.mlp.up_proj.weight': ['blk.0.ffn_up.weight', undefined],
  'model.layers.0.mlp.down_proj.weight': ['blk.0.ffn_down.weight', undefined],
  'model.norm.weight': ['output_norm.weight', undefined],
  'lm_head.weight': ['output.weight', undefined],
};

/** reshape(n_head, 2, d/2, cols).swapaxes(1, 2): GGUF row h·d + 2i + j holds HF row h·d + j·d/2 + i. */
function permuted(data: Float32Array, rows: number, nHead: number): Float32Array {
  const cols = data.length / rows;
  const d = rows / nHead;
  const out = new Float32Array(data.length);
  for (let row = 0; row < rows; row++) {
    const h = Math.floor(row / d);
    const i = Math.floor((row % d) / 2);
    const j = row % 2;
    const src = h * d + j * (d / 2) + i;
    out.set(data.subarray(src * cols, (src + 1) * cols), row * cols);
  }
  return out;
}

const TOKENS = Array.from({ length: VOCAB }, (_, i) => `tok${i}`);

async function writeVocabGguf(path: string, tokens: string[]): Promise<void> {
  const sink = await createGgufSink(path, {
    kv: [
      ['general.architecture', kvString('llama')],
      ['llama.block_count', kvU32(99)],
      ['tokenizer.ggml.model', kvString('llama')],
      ['tokenizer.ggml.tokens', kvArray(GgufValueType.STRING, tokens)],
      ['tokenizer.ggml.token_type', kvArray(GgufValueType.INT32, tokens.map(() => 1))],
      ['tokenizer.ggml.bos_token_id', kvU32(1)],
    ],
  });
  await sink.finish();
}

describe('convertToGguf', () => {
  let dir = '';
  let model = '';
  let vocab = '';
  before(async () => {
    dir = await makeTempDir('loraforge-to-gguf-unit-');
    model = join(dir, 'model');
    await writeModelFolder(model, TENSORS, { config: CONFIG, maxShardBytes: 4000 });
    vocab = join(dir, 'vocab.gguf');
    await writeVocabGguf(vocab, TOKENS);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names, permutes, types and copies every tensor like convert_hf_to_gguf.py (sharded input, f16)', async () => {
    const out = join(dir, 'f16.gguf');
    const result = await convertToGguf({ model, out, dtype: 'F16', vocabFrom: vocab });
    assert.deepEqual(result, { path: out, arch: 'llama', dtype: 'F16', tensors: 14, vocabSize: VOCAB, tokenizer: vocab, notes: [] });
    const file = await openGguf(out);
    try {
      assert.deepEqual(file.tensors.map((t) => t.name).sort(), Object.values(EXPECTED).map(([n]) => n).sort(), 'rotary_emb.inv_freq is dropped');
      for (const [hf, [name, nHead]] of Object.entries(EXPECTED)) {
        const src = TENSORS[hf]!;
        const info = file.info(name);
        assert.deepEqual(info.shape, src.shape, `${name} shape`);
        const keepF32 = src.shape.length === 1 || name.endsWith('_norm.weight');
        assert.equal(info.dtype, keepF32 ? 'F32' : 'F16', `${name} dtype`);
        const want = nHead === undefined ? src.data : permuted(src.data, src.shape[0]!, nHead);
        assert.deepEqual(await file.read(name), keepF32 ? want : roundTo(want, 'F16'), `${name} data`);
      }
      assert.equal(file.kv.get('general.architecture'), 'llama');
      assert.equal(file.kv.get('general.type'), 'model');
      assert.equal(file.kv.get('general.name'), 'model');
      assert.equal(file.kv.get('general.file_type'), 1);
      assert.equal(file.kv.get('general.quantization_version'), 2);
      assert.equal(file.kv.get('llama.attention.head_count_kv'), KV_HEADS);
      assert.equal(file.kv.get('llama.attention.layer_norm_rms_epsilon'), f32(1e-6));
      assert.deepEqual(file.kv.get('tokenizer.ggml.tokens'), TOKENS, 'tokenizer KVs copied');
      assert.equal(file.kv.get('tokenizer.ggml.bos_token_id'), 1);
      assert.equal(file.kv.has('llama.block_count') && file.kv.get('llama.block_count'), 1, 'model KVs come from config.json, not the vocab GGUF');
    } finally {
      await file.close();
    }
  });

  it('refuses a vocabulary of the wrong size, unknown tensors and configs it cannot convert', async () => {
    const small = join(dir, 'small-vocab.gguf');
    await writeVocabGguf(small, TOKENS.slice(0, 40));
    await assert.rejects(convertToGguf({ model, out: join(dir, 'x.gguf'), vocabFrom: small }), /40 tokens but .* has 48 embedding rows/);
    await assert.rejects(convertToGguf({ model, out: join(dir, 'x.gguf'), vocabFrom: model + '/config.json' }), /not a GGUF file/);

    const odd = join(dir, 'odd');
    await writeModelFolder(odd, { ...TENSORS, 'model.layers.0.mlp.extra.weight': random([2, 2], 1) }, { config: CONFIG });
    await assert.rejects(convertToGguf({ model: odd, out: join(dir, 'x.gguf'), vocabFrom: vocab }), /"model\.layers\.0\.mlp\.extra\.weight" has no llama\.cpp name/);

    const gptOss = join(dir, 'gpt-oss');
    await writeModelFolder(gptOss, TENSORS, { config: { ...CONFIG, architectures: ['GptOssForCausalLM'] } });
    await assert.rejects(convertToGguf({ model: gptOss, out: join(dir, 'x.gguf'), vocabFrom: vocab }), /architecture "GptOssForCausalLM" has no GGUF name mapping/);

    const noTokenizer = join(dir, 'no-tokenizer');
    await writeModelFolder(noTokenizer, TENSORS, { config: CONFIG });
    await assert.rejects(convertToGguf({ model: noTokenizer, out: join(dir, 'x.gguf') }), /no tokenizer\.model or tokenizer\.json; pass --vocab-from/);
  });

  it('refuses a config.json that disagrees with the weights, naming it and the mismatch (nothing written)', async () => {
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ['layers', { num_hidden_layers: 3 }, /config\.json: num_hidden_layers is 3, but the weights have 1 layer\(s\) \(blk\.0–blk\.0\)/],
      ['hidden', { hidden_size: HIDDEN * 2 }, new RegExp(`config\\.json: hidden_size is ${HIDDEN * 2}, but model\\.embed_tokens\\.weight is ${VOCAB}×${HIDDEN}`)],
      ['vocab', { vocab_size: VOCAB + 1 }, new RegExp(`config\\.json: vocab_size is ${VOCAB + 1}, but model\\.embed_tokens\\.weight has ${VOCAB} rows`)],
      ['heads', { num_attention_heads: HEADS * 2, head_dim: HIDDEN / HEADS }, /config\.json: num_attention_heads \d+ × head dimension \d+ is \d+, but layer 0's q_proj has \d+ rows/],
      ['kv-heads', { num_key_value_heads: KV_HEADS * 2 }, /config\.json: num_key_value_heads \d+ × head dimension \d+ is \d+, but layer 0's k_proj has \d+ rows/],
    ];
    for (const [name, change, message] of cases) {
      const folder = join(dir, `cfg-${name}`);
      await writeModelFolder(folder, TENSORS, { config: { ...CONFIG, ...change } });
      const out = join(dir, `cfg-${name}.gguf`);
      await assert.rejects(convertToGguf({ model: folder, out, vocabFrom: vocab }), message, name);
      await assert.rejects(readFile(out), /ENOENT/);
    }
  });

  it('refuses NaN in a weight, naming the file and tensor', async () => {
    const folder = join(dir, 'nan');
    const name = Object.keys(TENSORS).find((n) => n.endsWith('mlp.up_proj.weight'))!;
    const data = TENSORS[name]!.data.slice();
    data[2] = NaN;
    await writeModelFolder(folder, { ...TENSORS, [name]: { shape: TENSORS[name]!.shape, data } }, { config: CONFIG });
    await assert.rejects(convertToGguf({ model: folder, out: join(dir, 'nan.gguf'), vocabFrom: vocab }), new RegExp(`nan/model\\.safetensors: tensor "${name.replace(/\./g, '\\.')}" holds NaN at element 2`));
  });

  it('notes that llama.cpp ignores a Mistral/Mixtral sliding window shorter than the context (and converts anyway)', async () => {
    const mistral = { ...CONFIG, architectures: ['MistralForCausalLM'], model_type: 'mistral' };
    const note = /^llama\.cpp attends over the whole context; transformers uses a sliding window of 128: outputs differ beyond 128 tokens$/;
    assert.match(slidingWindowNote('llama', { ...mistral, sliding_window: 128 }) ?? '', note);
    assert.match(slidingWindowNote('llama', { architectures: ['MixtralForCausalLM'], model_type: 'mixtral', sliding_window: 128, max_position_embeddings: 32768 }) ?? '', note);
    for (const config of [
      { ...mistral, sliding_window: null }, // Mistral v0.2+: no window
      { ...mistral, sliding_window: 256 }, // as long as the context: never slides
      { ...CONFIG, sliding_window: 128 }, // transformers' Llama has no window whatever config.json says
    ]) {
      assert.equal(slidingWindowNote('llama', config), undefined, JSON.stringify(config));
    }
    const folder = join(dir, 'mistral');
    await writeModelFolder(folder, TENSORS, { config: { ...mistral, sliding_window: 128 } });
    const out = join(dir, 'mistral.gguf');
    const r = await runCli(['to-gguf', '--model', folder, '--out', out, '--vocab-from', vocab, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(JSON.parse(r.stdout).notes[0], note);
    assert.match(r.stderr, /^loraforge: note: llama\.cpp attends over the whole context; transformers uses a sliding window of 128/m);
    await readFile(out);
  });

  it('CLI: --json summary, refuses an existing --out without --force, rejects a bad --dtype', async () => {
    const out = join(dir, 'cli.gguf');
    const first = await runCli(['to-gguf', '--model', model, '--out', out, '--dtype', 'bf16', '--vocab-from', vocab, '--json']);
    assert.equal(first.code, 0, first.stderr);
    const summary = JSON.parse(first.stdout) as Record<string, unknown>;
    assert.equal(summary['dtype'], 'BF16');
    assert.equal(summary['tensors'], 14);
    const file = await openGguf(out);
    assert.equal(file.info('blk.0.attn_q.weight').dtype, 'BF16');
    assert.equal(file.kv.get('general.file_type'), 32);
    await file.close();

    const before = await readFile(out);
    const again = await runCli(['to-gguf', '--model', model, '--out', out, '--vocab-from', vocab]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already exists.*--force/);
    assert.deepEqual(await readFile(out), before, 'the existing file is untouched');
    const forced = await runCli(['to-gguf', '--model', model, '--out', out, '--vocab-from', vocab, '--dtype', 'f32', '--force', '--quiet']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /wrote .*cli\.gguf: llama, 14 tensors, F32, 48 tokens/);

    const bad = await runCli(['to-gguf', '--model', model, '--out', join(dir, 'y.gguf'), '--dtype', 'q4']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--dtype <dtype>' argument 'q4' is invalid\. use f32, f16 or bf16/);
    const intoInput = await runCli(['to-gguf', '--model', model, '--out', join(model, 'x.gguf'), '--vocab-from', vocab]);
    assert.equal(intoInput.code, 2);
    assert.match(intoInput.stderr, /inside the input/);
  });
});
