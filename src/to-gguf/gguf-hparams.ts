/**
 * The model metadata (hyper-parameter KVs) llama.cpp's convert_hf_to_gguf.py writes for the
 * architectures `loraforge to-gguf` converts (the families in src/arch/families.ts with
 * `toGguf`), read from a Hugging Face config.json under the text_config rule (src/arch/config.ts).
 * Key names and types follow gguf-py's constants.py / gguf_writer.py; which keys are written, and
 * from which config fields, follows the converter's TextModel.set_gguf_parameters and its
 * LlamaModel override.
 */
import { kvF32, kvString, kvU32, type GgufKv } from '../io/gguf.js';
import type { FloatDType } from '../io/types.js';
import { ggufFacts, ropeParameters, textFields, TO_GGUF_ARCHS, type GgufArch } from '../arch/index.js';

/** gguf-py LlamaFileType for the storage dtype of the 2-D weights. */
export const GGUF_FILE_TYPE: Readonly<Record<FloatDType, number>> = { F32: 0, F16: 1, BF16: 32 };
/** GGML_QUANT_VERSION, written by the converter into every model. */
export const GGML_QUANT_VERSION = 2;

type Config = Record<string, unknown>;

function uint(where: string, key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new Error(`${where}: config.json "${key}" must be a non-negative integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function float(where: string, key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${where}: config.json "${key}" must be a number, got ${JSON.stringify(v)}`);
  return v;
}

/** Head dimension used for RoPE: config head_dim, else hidden_size / num_attention_heads. */
export function ropeDimension(where: string, h: Config): number {
  const headDim = h['head_dim'];
  if (headDim !== undefined && headDim !== null) return uint(where, 'head_dim', headDim);
  const hidden = uint(where, 'hidden_size', h['hidden_size']);
  const heads = uint(where, 'num_attention_heads', h['num_attention_heads']);
  if (heads === 0 || hidden % heads !== 0) throw new Error(`${where}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  return hidden / heads;
}

/**
 * Llama 3 RoPE frequency factors (the converter's `rope_freqs.weight`), or undefined when the
 * config does not use rope_type "llama3".
 */
export function llama3RopeFactors(where: string, h: Config): Float32Array | undefined {
  const rope = ropeParameters(h);
  if (String(rope['rope_type'] ?? '').toLowerCase() !== 'llama3') return undefined;
  const base = rope['rope_theta'] === undefined ? 10000 : float(where, 'rope_theta', rope['rope_theta']);
  const dim = ropeDimension(where, h);
  const factor = rope['factor'] === undefined ? 8 : float(where, 'rope_scaling.factor', rope['factor']);
  const lowFreqFactor = rope['low_freq_factor'] === undefined ? 1 : float(where, 'rope_scaling.low_freq_factor', rope['low_freq_factor']);
  const highFreqFactor = rope['high_freq_factor'] === undefined ? 4 : float(where, 'rope_scaling.high_freq_factor', rope['high_freq_factor']);
  const oldContext =
    rope['original_max_position_embeddings'] === undefined ? 8192 : float(where, 'rope_scaling.original_max_position_embeddings', rope['original_max_position_embeddings']);
  const lowWavelen = oldContext / lowFreqFactor;
  const highWavelen = oldContext / highFreqFactor;
  const out = new Float32Array(dim / 2);
  const f = Math.fround;
  for (let i = 0; i < out.length; i++) {
    // the converter does all of this on float32 torch scalars: round after every step
    const freq = f(1 / f(base ** f((2 * i) / dim)));
    const wavelen = f((2 * Math.PI) / freq);
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = factor;
    else {
      const smooth = f(f(f(oldContext / wavelen) - lowFreqFactor) / (highFreqFactor - lowFreqFactor));
      out[i] = f(1 / f(f(f(1 - smooth) / factor) + smooth));
    }
  }
  return out;
}

/**
 * llama.cpp's MoE layers (Mixtral's and Qwen3-MoE's graphs) route every layer through softmax
 * top-k with the chosen weights renormalised; configs that ask for anything else would load and
 * compute something different, so they are refused.
 */
function checkRouting(where: string, h: Config, normTopKKey: string | undefined): void {
  if (normTopKKey !== undefined && h[normTopKKey] !== true) {
    throw new Error(`${where}: config.json "${normTopKKey}" is ${JSON.stringify(h[normTopKKey] ?? null)}; llama.cpp always renormalises the chosen experts' weights, so to-gguf converts only models with "${normTopKKey}": true`);
  }
  const dense = h['mlp_only_layers'];
  const step = h['decoder_sparse_step'];
  if ((Array.isArray(dense) && dense.length > 0) || (step !== undefined && step !== null && step !== 1)) {
    throw new Error(`${where}: config.json makes some layers dense (mlp_only_layers / decoder_sparse_step); llama.cpp expects experts in every layer, so to-gguf cannot convert it`);
  }
}

/**
 * The `<arch>.*` and `general.file_type` KVs for a model, in the order the converter adds them.
 * Throws for configs the converter would treat specially in ways we do not reproduce.
 */
export function ggufHparamKvs(where: string, arch: GgufArch, config: Config, dtype: FloatDType): Array<[string, GgufKv]> {
  if (!TO_GGUF_ARCHS.includes(arch)) {
    throw new Error(`${where}: to-gguf converts ${TO_GGUF_ARCHS.join(', ')} models; "${arch}" needs llama.cpp's convert_hf_to_gguf.py`);
  }
  const h = textFields(config);
  if (ggufFacts(arch).hparamKvs === 'gemma2') return gemma2HparamKvs(where, h, dtype);
  const kv: Array<[string, GgufKv]> = [];
  const key = (k: string) => `${arch}.${k}`;
  const optional = (keys: readonly string[]) => {
    const k = keys.find((name) => h[name] !== undefined && h[name] !== null);
    return k === undefined ? undefined : { k, v: h[k] };
  };

  const blocks = optional(['n_layers', 'num_hidden_layers', 'n_layer', 'num_layers']);
  if (!blocks) throw new Error(`${where}: config.json has no num_hidden_layers`);
  kv.push([key('block_count'), kvU32(uint(where, blocks.k, blocks.v))]);
  const ctx = optional(['max_position_embeddings', 'n_ctx', 'n_positions', 'max_length', 'max_sequence_length', 'model_max_length']);
  if (ctx) kv.push([key('context_length'), kvU32(uint(where, ctx.k, ctx.v))]);
  const embd = optional(['hidden_size', 'n_embd', 'dim']);
  if (embd) kv.push([key('embedding_length'), kvU32(uint(where, embd.k, embd.v))]);
  const ff = optional(['prefix_dense_intermediate_size', 'dense_intermediate_size', 'intermediate_size', 'n_inner', 'hidden_dim']);
  if (ff) kv.push([key('feed_forward_length'), kvU32(uint(where, ff.k, ff.v))]);
  const heads = optional(['num_attention_heads', 'n_head', 'n_heads']);
  if (heads) kv.push([key('attention.head_count'), kvU32(uint(where, heads.k, heads.v))]);
  const kvHeads = optional(['num_key_value_heads', 'n_kv_heads']);
  if (kvHeads) kv.push([key('attention.head_count_kv'), kvU32(uint(where, kvHeads.k, kvHeads.v))]);
  if (h['is_causal'] === false) throw new Error(`${where}: non-causal (is_causal: false) models are not supported by to-gguf`);

  const rope = ropeParameters(h);
  const ropeType = rope['rope_type'];
  if (ropeType !== undefined && ropeType !== null) {
    const type = String(ropeType).toLowerCase();
    const factor = rope['factor'];
    if (type === 'linear' && factor !== undefined) {
      kv.push([key('rope.scaling.type'), kvString('linear')]);
      kv.push([key('rope.scaling.factor'), kvF32(float(where, 'rope_scaling.factor', factor))]);
    } else if (type === 'yarn' && factor !== undefined) {
      kv.push([key('rope.scaling.type'), kvString('yarn')]);
      kv.push([key('rope.scaling.factor'), kvF32(float(where, 'rope_scaling.factor', factor))]);
      kv.push([key('rope.scaling.original_context_length'), kvU32(uint(where, 'rope_scaling.original_max_position_embeddings', rope['original_max_position_embeddings']))]);
      const optionalF32 = (name: string, field: unknown) => {
        if (field !== undefined && field !== null) kv.push([key(name), kvF32(float(where, name, field))]);
      };
      optionalF32('rope.scaling.yarn_ext_factor', rope['extrapolation_factor']);
      optionalF32('rope.scaling.yarn_attn_factor', rope['attention_factor'] ?? rope['attn_factor']);
      optionalF32('rope.scaling.yarn_beta_fast', rope['beta_fast']);
      optionalF32('rope.scaling.yarn_beta_slow', rope['beta_slow']);
    } else if (!['default', 'llama3', 'linear', 'yarn'].includes(type)) {
      // llama3 is carried by the rope_freqs tensor; anything else changes attention in ways we do not write
      throw new Error(`${where}: rope_scaling type "${String(ropeType)}" is not supported by to-gguf (supported: default, linear, yarn, llama3)`);
    }
  }
  if (rope['rope_theta'] !== undefined) kv.push([key('rope.freq_base'), kvF32(float(where, 'rope_theta', rope['rope_theta']))]);
  const rms = optional(['rms_norm_eps', 'norm_eps']);
  if (rms) kv.push([key('attention.layer_norm_rms_epsilon'), kvF32(float(where, rms.k, rms.v))]);
  const experts = optional(['num_local_experts', 'num_experts', 'n_routed_experts']);
  const moe = ggufFacts(arch).experts;
  if (experts) {
    if (!moe) throw new Error(`${where}: mixture-of-experts ${arch} models are not supported by to-gguf (config has "${experts.k}")`);
    checkRouting(where, h, moe.normTopKKey);
    kv.push([key('expert_count'), kvU32(uint(where, experts.k, experts.v))]);
  }
  const used = optional(['num_experts_per_tok', 'num_experts_per_token', 'top_k_experts']);
  if (used) kv.push([key('expert_used_count'), kvU32(uint(where, used.k, used.v))]);
  if (h['head_dim'] !== undefined && h['head_dim'] !== null) {
    const headDim = uint(where, 'head_dim', h['head_dim']);
    kv.push([key('attention.key_length'), kvU32(headDim)]);
    kv.push([key('attention.value_length'), kvU32(headDim)]);
  }
  kv.push(['general.file_type', kvU32(GGUF_FILE_TYPE[dtype])]);
  const expertFf = experts && moe?.feedForwardKey ? h[moe.feedForwardKey] : undefined;
  if (expertFf !== undefined && expertFf !== null) kv.push([key('expert_feed_forward_length'), kvU32(uint(where, moe!.feedForwardKey!, expertFf))]);
  if (ggufFacts(arch).llamaConverter) {
    kv.push([key('vocab_size'), kvU32(uint(where, 'vocab_size', h['vocab_size']))]);
    kv.push([key('rope.dimension_count'), kvU32(ropeDimension(where, h))]);
  }
  return kv;
}

/**
 * Gemma2Model.set_gguf_parameters, which replaces TextModel's: no RoPE KVs at all (llama.cpp
 * uses its default base 10000, Gemma2's), head_dim as key/value length, the soft-capping values
 * and the sliding window. llama.cpp scales queries by 1/√head_dim (by 1/√(hidden/heads) only for
 * the 46-layer 27B), so a config whose query_pre_attn_scalar says otherwise, or whose RoPE differs
 * from that default, would load and compute something else: refused.
 */
function gemma2HparamKvs(where: string, h: Config, dtype: FloatDType): Array<[string, GgufKv]> {
  const key = (k: string) => `gemma2.${k}`;
  const need = (k: string) => uint(where, k, h[k]);
  const layers = need('num_hidden_layers');
  const hidden = need('hidden_size');
  const heads = need('num_attention_heads');
  const headDim = need('head_dim');
  const scalar = h['query_pre_attn_scalar'];
  if (scalar !== undefined && scalar !== null && scalar !== headDim && !(layers === 46 && scalar === hidden / heads)) {
    throw new Error(`${where}: config.json "query_pre_attn_scalar" is ${JSON.stringify(scalar)}, but llama.cpp scales Gemma2 queries by head_dim (${headDim}); to-gguf cannot convert it`);
  }
  const rope = ropeParameters(h);
  const theta = rope['rope_theta'];
  if ((theta !== undefined && theta !== 10000) || (rope['rope_type'] !== undefined && rope['rope_type'] !== null && rope['rope_type'] !== 'default')) {
    throw new Error(`${where}: config.json sets RoPE (rope_theta ${JSON.stringify(theta)}, rope_type ${JSON.stringify(rope['rope_type'] ?? null)}), but a Gemma2 GGUF carries no RoPE settings and llama.cpp uses base 10000; to-gguf cannot convert it`);
  }
  // absent keys take Gemma2Config's defaults; llama.cpp always soft-caps Gemma2, so null (no capping) is refused
  const withDefault = (k: string, fallback: number) => (h[k] === undefined ? fallback : h[k]);
  const softcap = (k: string, fallback: number) => {
    const v = withDefault(k, fallback);
    if (v === null) throw new Error(`${where}: config.json "${k}" is null, but llama.cpp always soft-caps Gemma2; to-gguf cannot convert it`);
    return kvF32(float(where, k, v));
  };
  return [
    [key('context_length'), kvU32(need('max_position_embeddings'))],
    [key('embedding_length'), kvU32(hidden)],
    [key('block_count'), kvU32(layers)],
    [key('feed_forward_length'), kvU32(need('intermediate_size'))],
    [key('attention.head_count'), kvU32(heads)],
    [key('attention.head_count_kv'), kvU32(h['num_key_value_heads'] === undefined ? heads : need('num_key_value_heads'))],
    [key('attention.layer_norm_rms_epsilon'), kvF32(float(where, 'rms_norm_eps', h['rms_norm_eps']))],
    [key('attention.key_length'), kvU32(headDim)],
    [key('attention.value_length'), kvU32(headDim)],
    ['general.file_type', kvU32(GGUF_FILE_TYPE[dtype])],
    [key('attn_logit_softcapping'), softcap('attn_logit_softcapping', 50)],
    [key('final_logit_softcapping'), softcap('final_logit_softcapping', 30)],
    [key('attention.sliding_window'), kvU32(uint(where, 'sliding_window', withDefault('sliding_window', 4096)))],
  ];
}
