/**
 * Tiny synthetic checkpoints of every family `to-gguf` converts (the tinyLlama builders of
 * llamacpp.ts, generalised), and the check that llama.cpp computes on the converted GGUF what
 * `referenceLogits` computes on the HF tensors.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openGguf } from '../../src/io/gguf.js';
import { createRng } from '../../src/linalg/random.js';
import { convertToGguf } from '../../src/to-gguf/to-gguf.js';
import { llamaLogits, referenceLogits, tinyLlamaConfig, tinyLlamaWeights, writeTinyLlama, type LlamaLike, type TinyLlamaShape } from './llamacpp.js';

type Tensors = Record<string, { shape: number[]; data: Float32Array }>;
export type TinyFamily = 'qwen3' | 'mixtral' | 'mixtral-fused' | 'qwen3_moe' | 'qwen3_moe-fused' | 'gemma2';

export interface TinyMoeShape {
  experts: number;
  used: number;
  /** each expert's intermediate size */
  expertFf: number;
}

function noise(n: number, std: number, rng: ReturnType<typeof createRng>, mean = 0): Float32Array {
  const d = new Float32Array(n);
  const halfWidth = Math.sqrt(3) * std;
  for (let i = 0; i < n; i++) d[i] = mean + (2 * rng.next() - 1) * halfWidth;
  return d;
}

/** config.json of a tiny model of `family` (shape as tinyLlamaConfig's; `moe` for the MoE families). */
export function tinyFamilyConfig(family: TinyFamily, s: TinyLlamaShape, moe?: TinyMoeShape): Record<string, unknown> {
  const base = tinyLlamaConfig(s);
  const headDim = s.hidden / s.heads;
  switch (family) {
    case 'qwen3':
      return { ...base, architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', head_dim: headDim, rms_norm_eps: 1e-6, rope_theta: 1000000 };
    case 'mixtral':
    case 'mixtral-fused':
      return { ...base, architectures: ['MixtralForCausalLM'], model_type: 'mixtral', num_local_experts: moe!.experts, num_experts_per_tok: moe!.used, intermediate_size: moe!.expertFf };
    case 'qwen3_moe':
    case 'qwen3_moe-fused':
      return {
        ...base,
        architectures: ['Qwen3MoeForCausalLM'],
        model_type: 'qwen3_moe',
        head_dim: headDim,
        num_experts: moe!.experts,
        num_experts_per_tok: moe!.used,
        moe_intermediate_size: moe!.expertFf,
        norm_topk_prob: true,
        decoder_sparse_step: 1,
        mlp_only_layers: [],
      };
    case 'gemma2':
      return {
        ...base,
        architectures: ['Gemma2ForCausalLM'],
        model_type: 'gemma2',
        head_dim: headDim,
        rms_norm_eps: 1e-6,
        query_pre_attn_scalar: headDim,
        attn_logit_softcapping: 5.0,
        final_logit_softcapping: 3.0,
        sliding_window: 3,
        hidden_activation: 'gelu_pytorch_tanh',
        tie_word_embeddings: true,
      };
  }
}

/** Random weights of `family` in its HF layout (MoE: per-expert modules, or the fused 3-D `mlp.experts` tensors for `*-fused`). */
export function tinyFamilyWeights(family: TinyFamily, s: TinyLlamaShape, seed: number, moe?: TinyMoeShape): Tensors {
  const t = tinyLlamaWeights(s, seed, family === 'gemma2');
  const rng = createRng(seed + 1000);
  const headDim = s.hidden / s.heads;
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    if (family === 'qwen3' || family.startsWith('qwen3_moe')) {
      t[`${p}self_attn.q_norm.weight`] = { shape: [headDim], data: noise(headDim, 0.3, rng, 1) };
      t[`${p}self_attn.k_norm.weight`] = { shape: [headDim], data: noise(headDim, 0.3, rng, 1) };
    }
    if (family === 'gemma2') {
      // Gemma stores w with the norm computing x·(1 + w): weights around 0
      for (const n of ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm']) {
        t[`${p}${n}.weight`] = { shape: [s.hidden], data: noise(s.hidden, 0.3, rng) };
      }
    }
    if (moe) {
      for (const proj of ['gate_proj', 'up_proj', 'down_proj']) delete t[`${p}mlp.${proj}.weight`];
      const { experts: E, expertFf: ff } = moe;
      const mixtral = family.startsWith('mixtral');
      // a router with spread-out scores so the top-k choice is not a near tie
      t[`${p}${mixtral && family !== 'mixtral-fused' ? 'block_sparse_moe' : 'mlp'}.gate.weight`] = { shape: [E, s.hidden], data: noise(E * s.hidden, 3 / Math.sqrt(s.hidden), rng) };
      const gate = Array.from({ length: E }, () => noise(ff * s.hidden, 1 / Math.sqrt(s.hidden), rng));
      const up = Array.from({ length: E }, () => noise(ff * s.hidden, 1 / Math.sqrt(s.hidden), rng));
      const down = Array.from({ length: E }, () => noise(s.hidden * ff, 1 / Math.sqrt(ff), rng));
      if (family.endsWith('-fused')) {
        const gateUp = new Float32Array(E * 2 * ff * s.hidden);
        for (let e = 0; e < E; e++) {
          gateUp.set(gate[e]!, e * 2 * ff * s.hidden);
          gateUp.set(up[e]!, (e * 2 + 1) * ff * s.hidden);
        }
        const downAll = new Float32Array(E * s.hidden * ff);
        down.forEach((d, e) => downAll.set(d, e * s.hidden * ff));
        t[`${p}mlp.experts.gate_up_proj`] = { shape: [E, 2 * ff, s.hidden], data: gateUp };
        t[`${p}mlp.experts.down_proj`] = { shape: [E, s.hidden, ff], data: downAll };
      } else {
        for (let e = 0; e < E; e++) {
          const names = mixtral ? ['w1', 'w3', 'w2'].map((w) => `${p}block_sparse_moe.experts.${e}.${w}.weight`) : ['gate_proj', 'up_proj', 'down_proj'].map((w) => `${p}mlp.experts.${e}.${w}.weight`);
          t[names[0]!] = { shape: [ff, s.hidden], data: gate[e]! };
          t[names[1]!] = { shape: [ff, s.hidden], data: up[e]! };
          t[names[2]!] = { shape: [s.hidden, ff], data: down[e]! };
        }
      }
    }
  }
  return t;
}

function maxDiff(a: Float32Array[], b: Float64Array[]): { diff: number; scale: number; finite: boolean } {
  let diff = 0;
  let scale = 0;
  let finite = true;
  a.forEach((row, i) =>
    row.forEach((v, j) => {
      finite &&= Number.isFinite(v);
      diff = Math.max(diff, Math.abs(v - b[i]![j]!));
      scale = Math.max(scale, Math.abs(b[i]![j]!));
    }),
  );
  return { diff, scale, finite };
}

/**
 * Writes the model to `dir/<name>`, converts it to an f32 GGUF (tokenizer KVs from `vocabFrom`),
 * and asserts that llama.cpp's logits are finite and within `tolerance`·scale of the reference
 * for every position of `tokens`. Returns the GGUF path.
 */
export async function checkFamilyInLlamaCpp(opts: {
  llama: LlamaLike;
  dir: string;
  name: string;
  tensors: Tensors;
  config: Record<string, unknown>;
  vocabFrom: string;
  tokens: number[];
  tolerance: number;
}): Promise<string> {
  const folder = join(opts.dir, opts.name);
  await writeTinyLlama(folder, opts.tensors, opts.config);
  const out = join(opts.dir, `${opts.name}.gguf`);
  await convertToGguf({ model: folder, out, dtype: 'F32', vocabFrom: opts.vocabFrom });
  const model = await opts.llama.loadModel({ modelPath: out, gpuLayers: 0 });
  try {
    const got = await llamaLogits(model, opts.tokens, opts.config['vocab_size'] as number);
    const { diff, scale, finite } = maxDiff(got, referenceLogits(opts.tensors, opts.config, opts.tokens, { ggmlGelu: true }));
    process.stderr.write(`  ${opts.name}: logit scale ${scale.toFixed(2)}, max |llama.cpp − reference| ${diff.toExponential(2)}\n`);
    assert.ok(finite, 'llama.cpp logits are finite');
    assert.ok(scale > 0.5, 'logits are not degenerate');
    assert.ok(diff <= opts.tolerance * scale, `${opts.name}: llama.cpp logits differ from the reference by ${diff} (allowed ${opts.tolerance * scale})`);
  } finally {
    await model.dispose();
  }
  return out;
}

/** The GGUF's KVs and tensor shapes (PyTorch order). */
export async function describeGguf(path: string): Promise<{ kv: Map<string, unknown>; shapes: Map<string, number[]>; dtypes: Map<string, string> }> {
  const file = await openGguf(path);
  try {
    const names = file.list().map((t) => t.name);
    return { kv: file.kv, shapes: new Map(names.map((n) => [n, file.info(n).shape])), dtypes: new Map(names.map((n) => [n, file.info(n).dtype])) };
  } finally {
    await file.close();
  }
}
