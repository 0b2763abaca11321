/**
 * Tiny Llama-shaped model folders for the merge tests: seeded tensors with the real naming scheme
 * (model.embed_tokens, model.layers.N.{self_attn,mlp,…}, model.norm, lm_head), a config.json and,
 * on request, tokenizer files.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import type { FloatDType } from '../../src/io/types.js';
import { createRng } from '../../src/linalg/random.js';
import { roundTo } from '../../src/tensor/dtype.js';
import { writeModelFolder } from './synthetic.js';

export type TensorMap = Record<string, { shape: number[]; data: Float32Array }>;

export interface TinyModelOptions {
  seed: number;
  layers?: number;
  hidden?: number;
  intermediate?: number;
  vocab?: number;
  dtype?: FloatDType;
  /** extra config.json keys */
  config?: Record<string, unknown>;
  /** write tokenizer.json (t0, t1, … one per row) / tokenizer_config.json / generation_config.json with this marker */
  tokenizer?: string;
  maxShardBytes?: number;
}

/** Layer tensor suffixes of the tiny model, in file order. */
export function layerSuffixes(hidden: number, intermediate: number): Array<[string, number[]]> {
  return [
    ['input_layernorm.weight', [hidden]],
    ['self_attn.q_proj.weight', [hidden, hidden]],
    ['self_attn.k_proj.weight', [hidden / 2, hidden]],
    ['self_attn.v_proj.weight', [hidden / 2, hidden]],
    ['self_attn.o_proj.weight', [hidden, hidden]],
    ['post_attention_layernorm.weight', [hidden]],
    ['mlp.gate_proj.weight', [intermediate, hidden]],
    ['mlp.up_proj.weight', [intermediate, hidden]],
    ['mlp.down_proj.weight', [hidden, intermediate]],
  ];
}

/** Seeded tensors of a tiny model, already rounded to `dtype` (what reads back from disk). */
export function tinyTensors(opts: TinyModelOptions): TensorMap {
  const { layers = 3, hidden = 8, intermediate = 16, vocab = 12, dtype = 'F32' } = opts;
  const rng = createRng(opts.seed);
  const make = (shape: number[]) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    rng.fillNormal(data);
    return { shape, data: roundTo(data, dtype) };
  };
  const tensors: TensorMap = { 'model.embed_tokens.weight': make([vocab, hidden]) };
  for (let i = 0; i < layers; i++) {
    for (const [suffix, shape] of layerSuffixes(hidden, intermediate)) tensors[`model.layers.${i}.${suffix}`] = make(shape);
  }
  tensors['model.norm.weight'] = make([hidden]);
  tensors['lm_head.weight'] = make([vocab, hidden]);
  return tensors;
}

/** Writes a tiny model folder and returns its tensors as stored. */
export async function writeTinyModel(dir: string, opts: TinyModelOptions): Promise<TensorMap> {
  const tensors = tinyTensors(opts);
  await writeModelFolder(dir, tensors, {
    dtype: opts.dtype,
    maxShardBytes: opts.maxShardBytes,
    config: {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: opts.hidden ?? 8,
      num_hidden_layers: opts.layers ?? 3,
      vocab_size: opts.vocab ?? 12,
      ...opts.config,
    },
  });
  if (opts.tokenizer !== undefined) {
    // a BPE vocabulary of one token per embedding row, so a tokenizer setting finds the same tokens in every model
    const vocab = Object.fromEntries(Array.from({ length: opts.vocab ?? 12 }, (_, i) => [`t${i}`, i]));
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify({ marker: opts.tokenizer, added_tokens: [], model: { type: 'BPE', vocab, merges: [] } }));
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ marker: opts.tokenizer }));
    await writeFile(join(dir, 'generation_config.json'), JSON.stringify({ marker: opts.tokenizer }));
  }
  return tensors;
}

/** Every tensor of a model folder as f32, with its stored dtype. */
export async function readModel(dir: string): Promise<Record<string, { shape: number[]; dtype: string; data: Float32Array }>> {
  const ckpt = await openCheckpoint(dir);
  try {
    const out: Record<string, { shape: number[]; dtype: string; data: Float32Array }> = {};
    for (const t of ckpt.list()) out[t.name] = { shape: t.shape, dtype: t.dtype, data: await ckpt.read(t.name) };
    return out;
  } finally {
    await ckpt.close();
  }
}

/** Largest |a − b| (Infinity on a length mismatch). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
