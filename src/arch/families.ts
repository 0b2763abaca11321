/**
 * One record per model family loraforge knows something specific about. Adding an architecture
 * is adding a record here; families not listed get the generic behaviour (experts stored
 * (E, out, in), untied embeddings, no GGUF names: GGUF writers refuse them by name).
 *
 * GGUF facts follow llama.cpp: gguf-py/gguf/constants.py (TENSOR_NAMES, MODEL_TENSORS per arch),
 * gguf-py/gguf/tensor_mapping.py (HF module paths per tensor kind) and the model classes of
 * convert_hf_to_gguf.py (LlamaModel, Qwen2Model, Qwen3Model, Gemma2Model).
 */
import type { ExpertLayout } from '../lora/expert-stack.js';

/** How llama.cpp stores a family's weights. Families the converter registers under one class share one object. */
export interface GgufFacts {
  /** `general.architecture`. */
  readonly arch: string;
  /** Per-layer modules: `model.layers.N.<key>` → `blk.N.<value>`. */
  readonly blockNames: Readonly<Record<string, string>>;
  /** Modules outside the layers: full HF module path → GGUF base name. */
  readonly globalNames: Readonly<Record<string, string>>;
  /**
   * Converted by the converter's LlamaModel class, which (unlike the NeoX-RoPE models) permutes
   * the rows of Q and K from HF's "rotate half" layout into ggml's interleaved pairs, writes
   * `vocab_size` and `rope.dimension_count`, reads Llama HF tokenizers as such and writes
   * `add_space_prefix`.
   */
  readonly llamaConverter: boolean;
  /** `loraforge to-gguf` writes whole models of this arch (its metadata and tensors are reproduced). */
  readonly toGguf: boolean;
  /** Mixture-of-experts layers: how the per-expert HF modules become llama.cpp's stacked tensors. */
  readonly experts?: GgufExperts;
  /** HF's RMSNorm computes x·(1 + w): the converter stores every `*norm.weight` as 1 + w. */
  readonly normWeightsPlusOne?: boolean;
  /** HF tensors the converter leaves out (llama.cpp does not use them). */
  readonly skippedTensors?: readonly string[];
  /** The converter class writes its own hyper-parameter KVs instead of TextModel's (see src/to-gguf/gguf-hparams.ts). */
  readonly hparamKvs?: 'gemma2';
  /** `tokenizer.ggml.add_space_prefix` the converter always writes after the vocabulary. */
  readonly addSpacePrefix?: boolean;
}

/**
 * llama.cpp keeps each layer's experts as three 3-D tensors `ffn_{gate,up,down}_exps`
 * ((E, out, in) in PyTorch order) beside the router `ffn_gate_inp`. HF checkpoints store the
 * experts either one module per expert (`model.layers.N.<container>.<e>.<projection>`) or, from
 * transformers 5, fused 3-D `mlp.experts.gate_up_proj` / `mlp.experts.down_proj` tensors, which
 * src/to-gguf/experts.ts handles for every MoE family alike.
 */
export interface GgufExperts {
  /** The per-expert modules' parent, e.g. `block_sparse_moe.experts`. */
  readonly container: string;
  /** Per-expert projection → its stacked GGUF tensor. */
  readonly projections: Readonly<Record<string, 'ffn_gate_exps' | 'ffn_up_exps' | 'ffn_down_exps'>>;
  /**
   * The router's module in fused checkpoints when it differs from the per-expert layout's (kept
   * out of blockNames so that each GGUF name has one HF module).
   */
  readonly fusedRouter?: string;
  /** config.json key of each expert's intermediate size, written as `<arch>.expert_feed_forward_length`. */
  readonly feedForwardKey?: string;
  /** config.json key that must be true: llama.cpp always renormalises the top-k routing weights. */
  readonly normTopKKey?: string;
}

/**
 * How the eval engine runs a family (src/model/): what differs from a plain Llama block beyond
 * what config.json says. Read from transformers' modeling file of each family.
 */
export interface ForwardFacts {
  /** RMSNorm multiplies by (1 + w), not w (Gemma) */
  readonly normPlusOne?: boolean;
  /** embeddings are scaled by √hidden_size (Gemma) */
  readonly embedScale?: boolean;
  /** post-attention and pre/post-feed-forward norms around each sublayer (Gemma 2) */
  readonly sandwich?: boolean;
  /** attention scores scaled by query_pre_attn_scalar^-½ instead of head_dim^-½ (Gemma 2) */
  readonly queryScalar?: boolean;
  /** attention and final logits soft-capped as config.json says (Gemma 2) */
  readonly softcap?: boolean;
  /** per-head RMSNorm of q and k before RoPE (Qwen3) */
  readonly qkNorm?: boolean;
  /** which layers use config.json's sliding_window when layer_types does not say */
  readonly sliding: 'all' | 'even' | 'qwen2' | 'none';
  /** the MoE block: Mixtral's (softmax over the chosen experts) or Qwen3-MoE's (softmax, top-k, optional renormalisation) */
  readonly moe?: 'mixtral' | 'qwen3_moe';
}

export interface ArchFamily {
  /** Our name for the family: its main model_type. */
  readonly name: string;
  /** config.json `model_type` values (a multimodal wrapper's text model included). */
  readonly modelTypes: readonly string[];
  /** config.json `architectures[0]` class names. */
  readonly architectures: readonly string[];
  /** The HF config class's tie_word_embeddings default, for config.json files that omit it. */
  readonly tieWordEmbeddings: boolean;
  /** How its 3-D expert tensors are stored (transformers' is_transposed gives 'in-out'). */
  readonly expertLayout: ExpertLayout;
  /** Absent: llama.cpp names for this family are not known to loraforge. */
  readonly gguf?: GgufFacts;
  /** Absent: eval and compare do not run this family. */
  readonly forward?: ForwardFacts;
}

/** Per-layer modules every GGUF family here shares. */
const COMMON_BLOCK_NAMES = {
  'self_attn.q_proj': 'attn_q',
  'self_attn.k_proj': 'attn_k',
  'self_attn.v_proj': 'attn_v',
  'self_attn.o_proj': 'attn_output',
  'mlp.gate_proj': 'ffn_gate',
  'mlp.up_proj': 'ffn_up',
  'mlp.down_proj': 'ffn_down',
  input_layernorm: 'attn_norm',
};

const UNTIED_GLOBAL_NAMES = { 'model.embed_tokens': 'token_embd', 'model.norm': 'output_norm', lm_head: 'output' };

/**
 * LlamaModel covers Llama, Mistral and Mixtral. In Llama-style models `post_attention_layernorm`
 * is the pre-FFN norm. Mixtral's experts (w1 = gate, w3 = up, w2 = down) are stacked into 3-D
 * tensors by the converter, so per-expert modules have no 1:1 name; its router is
 * `block_sparse_moe.gate` → `ffn_gate_inp` (`mlp.gate` once transformers 5 fused the experts).
 */
const LLAMA_GGUF: GgufFacts = {
  arch: 'llama',
  blockNames: { ...COMMON_BLOCK_NAMES, post_attention_layernorm: 'ffn_norm', 'block_sparse_moe.gate': 'ffn_gate_inp' },
  globalNames: UNTIED_GLOBAL_NAMES,
  llamaConverter: true,
  toGguf: true,
  experts: { container: 'block_sparse_moe.experts', projections: { w1: 'ffn_gate_exps', w3: 'ffn_up_exps', w2: 'ffn_down_exps' }, fusedRouter: 'mlp.gate' },
};

export const FAMILIES: readonly ArchFamily[] = [
  { name: 'llama', modelTypes: ['llama'], architectures: ['LlamaForCausalLM'], tieWordEmbeddings: false, expertLayout: 'out-in', gguf: LLAMA_GGUF, forward: { sliding: 'none' } },
  { name: 'mistral', modelTypes: ['mistral'], architectures: ['MistralForCausalLM'], tieWordEmbeddings: false, expertLayout: 'out-in', gguf: LLAMA_GGUF, forward: { sliding: 'all' } },
  {
    name: 'mixtral',
    modelTypes: ['mixtral'],
    architectures: ['MixtralForCausalLM'],
    tieWordEmbeddings: false,
    expertLayout: 'out-in',
    gguf: LLAMA_GGUF,
    forward: { sliding: 'all', moe: 'mixtral' },
  },
  {
    name: 'qwen2',
    modelTypes: ['qwen2'],
    architectures: ['Qwen2ForCausalLM'],
    tieWordEmbeddings: false,
    expertLayout: 'out-in',
    gguf: {
      arch: 'qwen2',
      blockNames: { ...COMMON_BLOCK_NAMES, post_attention_layernorm: 'ffn_norm' },
      globalNames: UNTIED_GLOBAL_NAMES,
      llamaConverter: false,
      toGguf: true,
    },
    forward: { sliding: 'qwen2' },
  },
  {
    name: 'qwen3',
    modelTypes: ['qwen3'],
    architectures: ['Qwen3ForCausalLM'],
    tieWordEmbeddings: false,
    expertLayout: 'out-in',
    gguf: {
      arch: 'qwen3',
      blockNames: { ...COMMON_BLOCK_NAMES, post_attention_layernorm: 'ffn_norm', 'self_attn.q_norm': 'attn_q_norm', 'self_attn.k_norm': 'attn_k_norm' },
      globalNames: UNTIED_GLOBAL_NAMES,
      llamaConverter: false,
      toGguf: true,
    },
    forward: { sliding: 'qwen2', qkNorm: true },
  },
  /**
   * Qwen3-MoE (the converter's Qwen3MoeModel, from Qwen2MoeModel): every layer MoE, router
   * `mlp.gate`, per-expert `mlp.experts.<e>.{gate,up,down}_proj`, Qwen3's q/k norms.
   */
  {
    name: 'qwen3_moe',
    modelTypes: ['qwen3_moe'],
    architectures: ['Qwen3MoeForCausalLM'],
    tieWordEmbeddings: false,
    expertLayout: 'out-in',
    gguf: {
      arch: 'qwen3moe',
      blockNames: {
        ...COMMON_BLOCK_NAMES,
        post_attention_layernorm: 'ffn_norm',
        'self_attn.q_norm': 'attn_q_norm',
        'self_attn.k_norm': 'attn_k_norm',
        'mlp.gate': 'ffn_gate_inp',
      },
      globalNames: UNTIED_GLOBAL_NAMES,
      llamaConverter: false,
      toGguf: true,
      experts: {
        container: 'mlp.experts',
        projections: { gate_proj: 'ffn_gate_exps', up_proj: 'ffn_up_exps', down_proj: 'ffn_down_exps' },
        feedForwardKey: 'moe_intermediate_size',
        normTopKKey: 'norm_topk_prob',
      },
    },
    forward: { sliding: 'qwen2', qkNorm: true, moe: 'qwen3_moe' },
  },
  /**
   * Gemma2 (the converter's Gemma2Model) has sandwich norms: HF `post_attention_layernorm` is
   * ATTN_POST_NORM (`post_attention_norm`), `pre_feedforward_layernorm` is FFN_PRE_NORM
   * (`ffn_norm`) and `post_feedforward_layernorm` is FFN_POST_NORM (`post_ffw_norm`). Its GGUF has
   * no `output` tensor (the embeddings are tied; a stray lm_head is skipped), every RMSNorm weight
   * is stored as 1 + w, and its KVs carry soft-capping and the sliding window but no RoPE base.
   */
  {
    name: 'gemma2',
    modelTypes: ['gemma2'],
    architectures: ['Gemma2ForCausalLM'],
    tieWordEmbeddings: true,
    expertLayout: 'out-in',
    gguf: {
      arch: 'gemma2',
      blockNames: {
        ...COMMON_BLOCK_NAMES,
        post_attention_layernorm: 'post_attention_norm',
        pre_feedforward_layernorm: 'ffn_norm',
        post_feedforward_layernorm: 'post_ffw_norm',
      },
      globalNames: { 'model.embed_tokens': 'token_embd', 'model.norm': 'output_norm' },
      llamaConverter: false,
      toGguf: true,
      normWeightsPlusOne: true,
      skippedTensors: ['lm_head.weight'],
      hparamKvs: 'gemma2',
      addSpacePrefix: false,
    },
    forward: { sliding: 'even', normPlusOne: true, embedScale: true, sandwich: true, queryScalar: true, softcap: true },
  },
  // Expert modules used as x @ W (is_transposed in transformers): stored (E, in, out).
  { name: 'gpt_oss', modelTypes: ['gpt_oss'], architectures: ['GptOssForCausalLM'], tieWordEmbeddings: false, expertLayout: 'in-out' },
  {
    name: 'llama4',
    modelTypes: ['llama4', 'llama4_text'],
    architectures: ['Llama4ForConditionalGeneration', 'Llama4ForCausalLM'],
    tieWordEmbeddings: false,
    expertLayout: 'in-out',
  },
];
