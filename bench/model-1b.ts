/**
 * The benches' generated 1B-shaped checkpoint: Llama 3.2 1B's layout (hidden 2048, intermediate
 * 8192, 32 query / 8 key-value heads), bf16, weights uniform noise with σ 0.02 and norms 1, and
 * tinyfam llama-base's tokenizer (32000 ids; a larger vocabulary only adds rows never looked up).
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSafetensorsSink } from '../src/io/safetensors.js';

export const HIDDEN = 2048;
export const INTERMEDIATE = 8192;
export const HEADS = 32;
export const KV_HEADS = 8;

const TINYFAM = join(fileURLToPath(new URL('..', import.meta.url)), '..', 'shared', 'testdata', 'tinyfam');

export function modelTensors(layers: number, vocab = 32000): Array<{ name: string; shape: number[] }> {
  const kv = (HIDDEN / HEADS) * KV_HEADS;
  const t = [{ name: 'model.embed_tokens.weight', shape: [vocab, HIDDEN] }];
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}.`;
    t.push(
      { name: `${p}input_layernorm.weight`, shape: [HIDDEN] },
      { name: `${p}self_attn.q_proj.weight`, shape: [HIDDEN, HIDDEN] },
      { name: `${p}self_attn.k_proj.weight`, shape: [kv, HIDDEN] },
      { name: `${p}self_attn.v_proj.weight`, shape: [kv, HIDDEN] },
      { name: `${p}self_attn.o_proj.weight`, shape: [HIDDEN, HIDDEN] },
      { name: `${p}post_attention_layernorm.weight`, shape: [HIDDEN] },
      { name: `${p}mlp.gate_proj.weight`, shape: [INTERMEDIATE, HIDDEN] },
      { name: `${p}mlp.up_proj.weight`, shape: [INTERMEDIATE, HIDDEN] },
      { name: `${p}mlp.down_proj.weight`, shape: [HIDDEN, INTERMEDIATE] },
    );
  }
  t.push({ name: 'model.norm.weight', shape: [HIDDEN] }, { name: 'lm_head.weight', shape: [vocab, HIDDEN] });
  return t;
}

/** Uniform noise with standard deviation `std` from a 32-bit xorshift: the bench needs volume, not Gaussian quality. */
function fillNoise(out: Float32Array, state: { s: number }, std: number): void {
  const width = std * Math.sqrt(12);
  let s = state.s;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 4294967296 - 0.5) * width;
  }
  state.s = s;
}

/** A bf16 model folder of `layers` layers (and `vocab` rows) with tinyfam llama-base's tokenizer beside it. */
export async function write1BModel(dir: string, layers: number, vocab = 32000): Promise<void> {
  await mkdir(dir);
  const plan = modelTensors(layers, vocab).map((t) => ({ ...t, dtype: 'BF16' as const }));
  const sink = await createSafetensorsSink(dir, { plan, maxShardBytes: 5e9 });
  const state = { s: 0x9e3779b9 };
  for (const t of plan) {
    const data = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
    if (t.shape.length === 1) data.fill(1);
    else fillNoise(data, state, 0.02);
    await sink.add(t.name, t.shape, data);
  }
  await sink.finish();
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: HIDDEN, intermediate_size: INTERMEDIATE, num_hidden_layers: layers,
    num_attention_heads: HEADS, num_key_value_heads: KV_HEADS, vocab_size: vocab, max_position_embeddings: 2048, rms_norm_eps: 1e-5,
    rope_theta: 500000, tie_word_embeddings: false, hidden_act: 'silu', bos_token_id: 1, eos_token_id: 2, torch_dtype: 'bfloat16',
  };
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(TINYFAM, 'llama-base', f), join(dir, f));
}

