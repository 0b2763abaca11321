/**
 * Hugging Face → llama.cpp GGUF tensor names and the weight transforms llama.cpp's
 * convert_hf_to_gguf.py applies, so that tensors (and LoRA factors) we write line up with a
 * GGUF base model produced by that converter.
 *
 * Sources of truth (llama.cpp): gguf-py/gguf/constants.py (TENSOR_NAMES, MODEL_TENSORS per arch),
 * gguf-py/gguf/tensor_mapping.py (HF module paths per tensor kind), and the converter's model
 * classes (LlamaModel, Qwen2Model, Qwen3Model, Gemma2Model).
 */
import { roundTo } from '../tensor/dtype.js';
import type { FloatDType } from '../io/types.js';

export const SUPPORTED_GGUF_ARCHS = ['llama', 'qwen2', 'qwen3', 'gemma2'] as const;
export type GgufArch = (typeof SUPPORTED_GGUF_ARCHS)[number];

/**
 * config.json `architectures[0]` → GGUF `general.architecture`. The converter registers Mistral
 * and Mixtral under its LlamaModel class, so they become `llama` (with Llama's Q/K permutation).
 */
const HF_ARCHITECTURE_TO_GGUF: Readonly<Record<string, GgufArch>> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'llama',
  MixtralForCausalLM: 'llama',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
  Gemma2ForCausalLM: 'gemma2',
};

/** Fallback when config.json has no `architectures`: its `model_type`. */
const HF_MODEL_TYPE_TO_GGUF: Readonly<Record<string, GgufArch>> = {
  llama: 'llama',
  mistral: 'llama',
  mixtral: 'llama',
  qwen2: 'qwen2',
  qwen3: 'qwen3',
  gemma2: 'gemma2',
};

function supportedList(): string {
  return Object.keys(HF_ARCHITECTURE_TO_GGUF).join(', ');
}

/** The llama.cpp architecture name for a Hugging Face config.json (as llama.cpp's converters pick it). */
export function ggufArchFromConfig(config: Record<string, unknown>): GgufArch {
  // Multimodal wrappers keep the language model's architecture in text_config (as convert_lora_to_gguf reads it).
  const textConfig = config['text_config'];
  const architectures =
    (typeof textConfig === 'object' && textConfig !== null && (textConfig as Record<string, unknown>)['architectures']) ||
    config['architectures'];
  if (Array.isArray(architectures) && architectures.length > 0) {
    const name = String(architectures[0]);
    const arch = HF_ARCHITECTURE_TO_GGUF[name];
    if (!arch) {
      throw new Error(`config.json: architecture "${name}" has no GGUF name mapping in loraforge; supported: ${supportedList()}`);
    }
    return arch;
  }
  const modelType = config['model_type'];
  const arch = typeof modelType === 'string' ? HF_MODEL_TYPE_TO_GGUF[modelType] : undefined;
  if (!arch) {
    throw new Error(
      `config.json: cannot tell the architecture (architectures is missing, model_type is ${JSON.stringify(modelType)}); supported: ${supportedList()}`,
    );
  }
  return arch;
}

function checkArch(arch: string): GgufArch {
  if (!(SUPPORTED_GGUF_ARCHS as readonly string[]).includes(arch)) {
    throw new Error(`GGUF architecture "${arch}" is not supported for name mapping; supported: ${SUPPORTED_GGUF_ARCHS.join(', ')}`);
  }
  return arch as GgufArch;
}

/** Per-layer modules shared by all supported archs: `model.layers.N.<key>` → `blk.N.<value>`. */
const COMMON_BLOCK_NAMES: Readonly<Record<string, string>> = {
  'self_attn.q_proj': 'attn_q',
  'self_attn.k_proj': 'attn_k',
  'self_attn.v_proj': 'attn_v',
  'self_attn.o_proj': 'attn_output',
  'mlp.gate_proj': 'ffn_gate',
  'mlp.up_proj': 'ffn_up',
  'mlp.down_proj': 'ffn_down',
  input_layernorm: 'attn_norm',
};

/**
 * Gemma2 has sandwich norms: HF `post_attention_layernorm` is llama.cpp's ATTN_POST_NORM
 * (`post_attention_norm`), `pre_feedforward_layernorm` is FFN_PRE_NORM (spelled `ffn_norm`) and
 * `post_feedforward_layernorm` is FFN_POST_NORM (`post_ffw_norm`). In Llama-style models
 * `post_attention_layernorm` is the pre-FFN norm, `ffn_norm`.
 * Mixtral's experts are stacked into 3-D tensors by the converter, so per-expert modules have no
 * 1:1 name and are left unmapped; its router maps to `ffn_gate_inp`.
 */
const BLOCK_NAMES: Readonly<Record<GgufArch, Readonly<Record<string, string>>>> = {
  llama: { ...COMMON_BLOCK_NAMES, post_attention_layernorm: 'ffn_norm', 'block_sparse_moe.gate': 'ffn_gate_inp' },
  qwen2: { ...COMMON_BLOCK_NAMES, post_attention_layernorm: 'ffn_norm' },
  qwen3: {
    ...COMMON_BLOCK_NAMES,
    post_attention_layernorm: 'ffn_norm',
    'self_attn.q_norm': 'attn_q_norm',
    'self_attn.k_norm': 'attn_k_norm',
  },
  gemma2: {
    ...COMMON_BLOCK_NAMES,
    post_attention_layernorm: 'post_attention_norm',
    pre_feedforward_layernorm: 'ffn_norm',
    post_feedforward_layernorm: 'post_ffw_norm',
  },
};

/** Gemma2's GGUF has no `output` tensor: the converter drops lm_head (the embeddings are tied). */
const GLOBAL_NAMES: Readonly<Record<GgufArch, Readonly<Record<string, string>>>> = {
  llama: { 'model.embed_tokens': 'token_embd', 'model.norm': 'output_norm', lm_head: 'output' },
  qwen2: { 'model.embed_tokens': 'token_embd', 'model.norm': 'output_norm', lm_head: 'output' },
  qwen3: { 'model.embed_tokens': 'token_embd', 'model.norm': 'output_norm', lm_head: 'output' },
  gemma2: { 'model.embed_tokens': 'token_embd', 'model.norm': 'output_norm' },
};

const BLOCK_MODULE = /^model\.layers\.(0|[1-9][0-9]*)\.(.+)$/;

/**
 * GGUF base name (no `.weight`) of a Hugging Face module path, e.g.
 * `model.layers.3.self_attn.o_proj` → `blk.3.attn_output`; undefined when llama.cpp has no such tensor.
 */
export function hfModuleToGguf(arch: string, modulePath: string): string | undefined {
  const a = checkArch(arch);
  const global = GLOBAL_NAMES[a][modulePath];
  if (global !== undefined) return global;
  const m = BLOCK_MODULE.exec(modulePath);
  if (!m) return undefined;
  const name = BLOCK_NAMES[a][m[2]!];
  return name === undefined ? undefined : `blk.${m[1]}.${name}`;
}

/**
 * GGUF name of a Hugging Face tensor (`....weight` or `....bias`, as the converter tries both
 * suffixes), e.g. `model.layers.0.self_attn.q_proj.weight` → `blk.0.attn_q.weight`.
 */
export function hfToGgufTensorName(arch: string, hfName: string): string | undefined {
  const m = /^(.+)\.(weight|bias)$/.exec(hfName);
  if (!m) return undefined;
  const base = hfModuleToGguf(arch, m[1]!);
  return base === undefined ? undefined : `${base}.${m[2]}`;
}

/**
 * Whether llama.cpp's converter permutes the rows of Q and K (weights and biases) for this arch.
 * Only `llama` does (LlamaModel, which also covers Mistral and Mixtral): it reorders HF's
 * "rotate half" RoPE layout into ggml's interleaved-pair layout. Qwen2, Qwen3 and Gemma2 use
 * NeoX-style RoPE in llama.cpp and are written unpermuted.
 */
export function needsQkPermute(arch: string): boolean {
  return checkArch(arch) === 'llama';
}

/**
 * Head count for the Q/K permutation of a module, or undefined if the module is not permuted:
 * q_proj uses `num_attention_heads`, k_proj `num_key_value_heads` (falling back to
 * `num_attention_heads`, the HF default when the key is absent).
 */
export function qkPermuteHeadCount(arch: string, config: Record<string, unknown>, modulePath: string): number | undefined {
  if (!needsQkPermute(arch)) return undefined;
  const isQ = modulePath.endsWith('self_attn.q_proj');
  const isK = modulePath.endsWith('self_attn.k_proj');
  if (!isQ && !isK) return undefined;
  const nHead = config['num_attention_heads'];
  const nKv = config['num_key_value_heads'] ?? nHead;
  const n = isQ ? nHead : nKv;
  if (typeof n !== 'number' || !Number.isInteger(n) || n <= 0) {
    throw new Error(`config.json: ${isQ ? 'num_attention_heads' : 'num_key_value_heads'} is missing or invalid (${JSON.stringify(n)}); it is needed to permute ${modulePath}`);
  }
  return n;
}

/**
 * llama.cpp convert_hf_to_gguf's LlamaModel.permute on the rows of a row-major (rows × cols)
 * matrix: reshape(nHead, 2, rows/nHead/2, cols).swapaxes(1, 2).reshape(rows, cols). Inside each
 * head the two halves of the rows are interleaved: output row h·d + 2i + j is input row
 * h·d + j·(d/2) + i (d = rows/nHead, j ∈ {0, 1}). Applies equally to a 1-D bias (cols = 1) and
 * to the rows of a LoRA B (out × r) matrix, since (P·B)·A = P·(B·A).
 */
export function permuteQkRows(data: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  if (data.length !== rows * cols) throw new Error(`${data.length} values do not form a ${rows}×${cols} matrix`);
  if (!Number.isInteger(nHead) || nHead <= 0 || rows % (2 * nHead) !== 0) {
    throw new Error(`${rows} rows cannot be split into ${nHead} heads of two equal halves: the config's head count does not fit the weights`);
  }
  const headRows = rows / nHead;
  const half = headRows / 2;
  const out = new Float32Array(data.length);
  for (let h = 0; h < nHead; h++) {
    const base = h * headRows;
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (base + j * half + i) * cols;
        out.set(data.subarray(src, src + cols), (base + 2 * i + j) * cols);
      }
    }
  }
  return out;
}

/**
 * Value transform (besides Q/K permutation) llama.cpp's converter applies to a tensor, or
 * undefined if it stores the tensor unchanged. Gemma2 stores RMSNorm weights as (1 + w): every
 * tensor whose HF name ends in `norm.weight` gets 1 added. The converter adds in the checkpoint's
 * dtype when that is F16 or F32 (BF16 is widened to F32 first), so pass the source dtype to get
 * bit-identical results: for an F16 source the sum is rounded to F16.
 */
export function ggufNormTransform(
  arch: string,
  hfName: string,
): ((data: Float32Array, sourceDtype: FloatDType) => Float32Array) | undefined {
  if (checkArch(arch) !== 'gemma2' || !hfName.endsWith('norm.weight')) return undefined;
  return (data, sourceDtype) => {
    const shifted = new Float32Array(data.length);
    for (let i = 0; i < data.length; i++) shifted[i] = data[i]! + 1;
    return sourceDtype === 'F16' ? roundTo(shifted, 'F16') : shifted;
  };
}
