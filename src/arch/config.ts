/**
 * One reading of a Hugging Face config.json for every command.
 *
 * The text_config rule: multimodal wrappers (Gemma 3, Llama 4, Qwen-VL, …) nest the language
 * model's config under `text_config`. A field is read from `text_config` where it is present
 * there, else from the top level — the view llama.cpp's convert_hf_to_gguf.py takes
 * (`{**hparams, **hparams["text_config"]}`), and the one every LoRA concern needs, since adapters
 * target the language model. Nothing else in loraforge looks inside `text_config`; writers that
 * must change a field in both places (merge's layer count) are the only exception.
 */
import { join } from 'node:path';
import { readJsonFile } from '../io/json-file.js';

export type RawConfig = Record<string, unknown>;

function isRecord(v: unknown): v is RawConfig {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** config.json as the language model sees it: text_config's fields over the top level's. */
export function textFields(config: RawConfig | undefined): RawConfig {
  if (!config) return {};
  const text = config['text_config'];
  return isRecord(text) ? { ...config, ...text } : config;
}

/** First present key, as the converter's find_hparam does. */
function findField(h: RawConfig, keys: readonly string[]): unknown {
  for (const k of keys) if (h[k] !== undefined && h[k] !== null) return h[k];
  return undefined;
}

/**
 * RoPE parameters: `rope_parameters` (newer transformers) or `rope_scaling` (per-attention-type
 * dicts read for full attention), with the top-level rope_theta mirrored in and the old `type`
 * key copied to `rope_type`, as the converter reads them.
 */
export function ropeParameters(h: RawConfig): RawConfig {
  const raw = (h['rope_parameters'] ?? h['rope_scaling'] ?? {}) as RawConfig;
  const params: RawConfig = { ...((raw['full_attention'] as RawConfig | undefined) ?? raw) };
  const theta = findField(h, ['global_rope_theta', 'rope_global_theta', 'rope_theta_global', 'rope_theta', 'rotary_emb_base']);
  if (params['rope_theta'] === undefined && theta !== undefined) params['rope_theta'] = theta;
  if (params['rope_type'] === undefined && params['type'] !== undefined) params['rope_type'] = params['type'];
  return params;
}

/** Typed hyper-parameters; a field is undefined when config.json lacks it or gives another type. */
export interface ModelConfig {
  /** `model_type` (the text model's, for a multimodal wrapper). */
  modelType?: string;
  /** `architectures` (class names; the text model's when text_config lists them). */
  architectures: string[];
  hiddenSize?: number;
  numHiddenLayers?: number;
  numAttentionHeads?: number;
  /** As written; HF's default when absent is numAttentionHeads. */
  numKeyValueHeads?: number;
  /** `head_dim`, else hidden_size / num_attention_heads when that divides. */
  headDim?: number;
  intermediateSize?: number;
  vocabSize?: number;
  rmsNormEps?: number;
  ropeTheta?: number;
  /** rope_parameters / rope_scaling as the converter reads them (see ropeParameters). */
  rope: RawConfig;
  tieWordEmbeddings?: boolean;
  /** Routed experts of an MoE model (num_local_experts, num_experts or n_routed_experts). */
  numExperts?: number;
  /** Every field under the text_config rule, for readers of fields not typed here. */
  fields: RawConfig;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/** The typed view of a parsed config.json (see the file comment for the text_config rule). */
export function modelConfig(config: RawConfig | undefined): ModelConfig {
  const h = textFields(config);
  const hiddenSize = num(h['hidden_size']);
  const numAttentionHeads = num(h['num_attention_heads']);
  const rope = ropeParameters(h);
  const modelType = h['model_type'];
  const tie = h['tie_word_embeddings'];
  const explicitHeadDim = num(h['head_dim']);
  const derivedHeadDim =
    hiddenSize !== undefined && numAttentionHeads && hiddenSize % numAttentionHeads === 0 ? hiddenSize / numAttentionHeads : undefined;
  return {
    modelType: typeof modelType === 'string' ? modelType : undefined,
    architectures: Array.isArray(h['architectures']) ? h['architectures'].map(String) : [],
    hiddenSize,
    numHiddenLayers: num(h['num_hidden_layers']),
    numAttentionHeads,
    numKeyValueHeads: num(h['num_key_value_heads']),
    headDim: explicitHeadDim ?? derivedHeadDim,
    intermediateSize: num(h['intermediate_size']),
    vocabSize: num(h['vocab_size']),
    rmsNormEps: num(h['rms_norm_eps']),
    ropeTheta: num(rope['rope_theta']),
    rope,
    tieWordEmbeddings: typeof tie === 'boolean' ? tie : undefined,
    numExperts: num(findField(h, ['num_local_experts', 'num_experts', 'n_routed_experts'])),
    fields: h,
  };
}

/** Reads `<dir>/config.json` (recorded as an input of the run) into its typed view. */
export async function readModelConfig(dir: string): Promise<ModelConfig> {
  const path = join(dir, 'config.json');
  const parsed = await readJsonFile(path);
  if (!isRecord(parsed)) throw new Error(`${path}: config.json must hold a JSON object; restore the model's config.json`);
  return modelConfig(parsed);
}
