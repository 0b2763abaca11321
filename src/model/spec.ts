/**
 * What the inference engine needs to know about a model, from its config.json and the family
 * record (src/arch/families.ts): shapes, RoPE, norms, attention variants and the MoE router.
 * transformers' modeling files are the reference for every rule here (LlamaModel, MistralModel,
 * Qwen2Model, Qwen3Model, Gemma2Model, MixtralModel, Qwen3MoeModel).
 */
import { familyOf, type ModelConfig } from '../arch/index.js';
import type { ForwardFacts } from '../arch/families.js';
import { InputError } from '../errors.js';
import { ropeInverseFrequencies } from './rope.js';

export interface ModelSpec {
  family: string;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  eps: number;
  maxPositions?: number;
  /** RoPE inverse frequencies (head_dim / 2), scaling applied */
  invFreq: Float64Array;
  tied: boolean;
  facts: ForwardFacts;
  /** multiplies scores before softmax */
  attnScale: number;
  attnSoftcap?: number;
  finalSoftcap?: number;
  /** the sliding window (tokens a query sees, itself included) of layer `l`, or undefined for full attention */
  window(l: number): number | undefined;
  act: 'silu' | 'gelu_tanh';
  moe?: { experts: number; topK: number; normTopK: boolean };
  bosId?: number;
  eosIds: number[];
}

function need(value: number | undefined, key: string, file: string): number {
  if (value === undefined || !Number.isInteger(value) || value <= 0) {
    throw new InputError(`${file}: "${key}" is missing or not a positive integer; restore the model's config.json`, { file });
  }
  return value;
}

function ids(v: unknown): number[] {
  if (typeof v === 'number') return [v];
  return Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number') : [];
}

const ACTIVATIONS: Record<string, ModelSpec['act']> = { silu: 'silu', swish: 'silu', gelu_pytorch_tanh: 'gelu_tanh', gelu_tanh: 'gelu_tanh' };

/** The spec of a model whose config.json is `c` (read from `file`); refuses families the engine does not run. */
export function modelSpec(c: ModelConfig, file: string): ModelSpec {
  const family = familyOf(c);
  const facts = family?.forward;
  if (!family || !facts) {
    throw new InputError(
      `${file}: model_type "${c.modelType ?? '(none)'}" is not supported by eval/compare; supported: llama, mistral, qwen2, qwen3, gemma2, mixtral, qwen3_moe`,
      { file },
    );
  }
  const f = c.fields;
  const hidden = need(c.hiddenSize, 'hidden_size', file);
  const heads = need(c.numAttentionHeads, 'num_attention_heads', file);
  const kvHeads = c.numKeyValueHeads ?? heads;
  if (heads % kvHeads !== 0) throw new InputError(`${file}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`, { file });
  const headDim = need(c.headDim, 'head_dim', file);
  const actName = String(f['hidden_activation'] ?? f['hidden_act'] ?? 'silu');
  const act = ACTIVATIONS[actName];
  if (!act) throw new InputError(`${file}: hidden_act "${actName}" is not supported by eval (silu, gelu_pytorch_tanh)`, { file });
  const num = (k: string): number | undefined => (typeof f[k] === 'number' ? (f[k] as number) : undefined);
  const sliding = num('sliding_window');
  const layers = need(c.numHiddenLayers, 'num_hidden_layers', file);
  const window = slidingRule(facts, f, sliding, layers);
  const experts = c.numExperts;
  const spec: ModelSpec = {
    family: family.name,
    hidden,
    layers,
    heads,
    kvHeads,
    headDim,
    intermediate: need(num('moe_intermediate_size') ?? c.intermediateSize, 'intermediate_size', file),
    vocab: need(c.vocabSize, 'vocab_size', file),
    eps: c.rmsNormEps ?? 1e-6,
    maxPositions: num('max_position_embeddings'),
    invFreq: ropeInverseFrequencies(headDim, c.rope, file),
    tied: c.tieWordEmbeddings ?? family.tieWordEmbeddings,
    facts,
    attnScale: 1 / Math.sqrt(facts.queryScalar ? (num('query_pre_attn_scalar') ?? headDim) : headDim),
    attnSoftcap: facts.softcap ? num('attn_logit_softcapping') : undefined,
    finalSoftcap: facts.softcap ? num('final_logit_softcapping') : undefined,
    window,
    act,
    bosId: typeof f['bos_token_id'] === 'number' ? (f['bos_token_id'] as number) : undefined,
    eosIds: ids(f['eos_token_id']),
  };
  if (facts.moe) {
    if (!experts) throw new InputError(`${file}: an MoE model needs num_local_experts / num_experts in config.json`, { file });
    const topK = need(num('num_experts_per_tok'), 'num_experts_per_tok', file);
    // Mixtral renormalises over the chosen experts always; Qwen3-MoE only with norm_topk_prob
    spec.moe = { experts, topK, normTopK: facts.moe === 'mixtral' ? true : f['norm_topk_prob'] === true };
  }
  return spec;
}

/** Which layers attend within a sliding window, per family (transformers' layer_types defaults). */
function slidingRule(facts: ForwardFacts, f: Record<string, unknown>, sliding: number | undefined, layers: number): (l: number) => number | undefined {
  if (!sliding) return () => undefined;
  const types = Array.isArray(f['layer_types']) && f['layer_types'].length === layers ? (f['layer_types'] as unknown[]) : undefined;
  if (types) return (l) => (types[l] === 'sliding_attention' ? sliding : undefined);
  switch (facts.sliding) {
    case 'all':
      return () => sliding;
    case 'even':
      return (l) => (l % 2 === 0 ? sliding : undefined);
    case 'qwen2': {
      // Qwen2: only with use_sliding_window, and only from max_window_layers on
      if (f['use_sliding_window'] !== true) return () => undefined;
      const from = typeof f['max_window_layers'] === 'number' ? (f['max_window_layers'] as number) : layers;
      return (l) => (l >= from ? sliding : undefined);
    }
    default:
      return () => undefined;
  }
}
