/**
 * Which tensors of a checkpoint pair become LoRA modules, and as what: the one classifier extract,
 * spectrum and edit share. Everything else is only compared, so that differences outside the
 * adapter (norms, biases, MoE routers) can be reported.
 *
 * Module names follow the PEFT convention: the tensor name without `.weight`, and `target_modules`
 * entries match a module's last path component (`q_proj` matches every layer's q_proj).
 */

/**
 * Last path components of the 2-D linear weights in decoder layers that are targets by default:
 * Llama/Mistral/Qwen/Gemma (q/k/v/o, gate/up/down), Phi-3 (qkv_proj, gate_up_proj),
 * Falcon/GPT-NeoX (query_key_value, dense, dense_h_to_4h, dense_4h_to_h), Phi-2 (fc1, fc2),
 * Mixtral's per-expert w1/w2/w3, and out_proj. GPT-2's Conv1D weights (c_attn, c_fc) are stored
 * transposed (in × out) and are left out on purpose.
 */
export const DEFAULT_TARGET_MODULES: readonly string[] = [
  'q_proj',
  'k_proj',
  'v_proj',
  'o_proj',
  'qkv_proj',
  'query_key_value',
  'dense',
  'out_proj',
  'gate_proj',
  'up_proj',
  'down_proj',
  'gate_up_proj',
  'dense_h_to_4h',
  'dense_4h_to_h',
  'fc1',
  'fc2',
  'w1',
  'w2',
  'w3',
];

/** A numbered block of a decoder stack: `model.layers.3.`, `transformer.h.3.`, `blocks.3.`. */
const DECODER_LAYER = /(?:^|\.)(?:layers|h|blocks)\.\d+\./;
/** Input token embeddings as Hugging Face names them. */
const EMBEDDING = /(?:^|\.)(?:embed_tokens|wte|word_embeddings|tok_embeddings)\.weight$/;
/** Output projections to the vocabulary (a Linear, tied to the embeddings in some models). */
const LM_HEAD = /(?:^|\.)(?:lm_head|embed_out)\.weight$/;
/** 3-D MoE expert stacks live under an `experts` module: `mlp.experts.gate_up_proj`. */
const EXPERTS = /(?:^|\.)experts\.[^.]+$/;

export type TensorRole =
  /** a 2-D LoRA target; `module` is the PEFT module path */
  | { kind: 'linear'; module: string }
  /** a 3-D stack of expert weights [experts, ·, ·]: one LoRA per expert, `module.param` in PEFT terms */
  | { kind: 'experts'; module: string; param: string }
  | { kind: 'embedding'; module: string }
  | { kind: 'lm-head'; module: string }
  /** not a target: compared and, when it differs, reported */
  | { kind: 'other' };

export interface TargetSelection {
  /** last path components to target instead of DEFAULT_TARGET_MODULES (then not limited to decoder layers) */
  targetModules?: readonly string[];
  /** only tensors whose name matches become targets */
  include?: RegExp;
  /** tensors whose name matches never become targets */
  exclude?: RegExp;
}

/** A weight tensor's module path: its name without `.weight`. */
export function withoutWeightSuffix(name: string): string {
  return name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : name;
}

function lastComponent(path: string): string {
  return path.slice(path.lastIndexOf('.') + 1);
}

/** True for the tensors --embeddings governs (input embeddings and the LM head). */
export function isEmbeddingLike(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && (EMBEDDING.test(name) || LM_HEAD.test(name));
}

/** The role of one tensor, from its name and shape alone. */
export function classifyTensor(name: string, shape: readonly number[], sel: TargetSelection = {}): TensorRole {
  if (shape.length === 2 && EMBEDDING.test(name)) return { kind: 'embedding', module: withoutWeightSuffix(name) };
  if (shape.length === 2 && LM_HEAD.test(name)) return { kind: 'lm-head', module: withoutWeightSuffix(name) };
  if (sel.include && !sel.include.test(name)) return { kind: 'other' };
  if (sel.exclude?.test(name)) return { kind: 'other' };
  const inLayer = DECODER_LAYER.test(name);
  if (shape.length === 2 && name.endsWith('.weight')) {
    const module = withoutWeightSuffix(name);
    const suffix = lastComponent(module);
    const wanted = sel.targetModules ? sel.targetModules.includes(suffix) : inLayer && DEFAULT_TARGET_MODULES.includes(suffix);
    return wanted ? { kind: 'linear', module } : { kind: 'other' };
  }
  if (shape.length === 3) {
    const param = lastComponent(name);
    const wanted = sel.targetModules ? sel.targetModules.includes(param) : inLayer && EXPERTS.test(name);
    if (wanted) return { kind: 'experts', module: name.slice(0, name.length - param.length - 1), param };
  }
  return { kind: 'other' };
}

/**
 * Whether a tensor may become a target, from its name alone: what a download needs before any
 * header is read (the shards of a Hub model to fetch). Over-inclusive where only the shape could
 * tell (a 2-D linear weight or a 3-D expert stack); embeddings and the LM head as asked.
 */
export function mayBeTarget(name: string, sel: TargetSelection, embeddings: boolean): boolean {
  if (EMBEDDING.test(name) || LM_HEAD.test(name)) return embeddings;
  return classifyTensor(name, [0, 0], sel).kind !== 'other' || classifyTensor(name, [0, 0, 0], sel).kind !== 'other';
}
