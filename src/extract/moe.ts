/**
 * 3-D MoE expert tensors ([experts, ·, ·], e.g. `mlp.experts.gate_up_proj`): how a checkpoint lays
 * them out. Weights are stored (E, out, in) (used with F.linear, transformers' default) or
 * (E, in, out) (used as x @ W: gpt-oss and Llama 4, whose expert modules set is_transposed);
 * ΔW_e is in the first case slice e, in the second its transpose. How PEFT saves their LoRA
 * (target_parameters, stacked factors, nesting) is lora/expert-stack.ts's and the adapter writer's.
 */
import { isDownProjection, type ExpertLayout } from '../lora/expert-stack.js';

/** model_type values whose expert modules store (E, in, out) (is_transposed in transformers). */
const TRANSPOSED_EXPERT_MODEL_TYPES = new Set(['gpt_oss', 'llama4', 'llama4_text']);

function modelType(config: Record<string, unknown> | undefined): string | undefined {
  const text = config?.['text_config'];
  const inner = typeof text === 'object' && text !== null ? (text as Record<string, unknown>)['model_type'] : undefined;
  const own = config?.['model_type'];
  return typeof own === 'string' ? own : typeof inner === 'string' ? inner : undefined;
}

function hiddenSize(config: Record<string, unknown> | undefined): number | undefined {
  const text = config?.['text_config'];
  const value = config?.['hidden_size'] ?? (typeof text === 'object' && text !== null ? (text as Record<string, unknown>)['hidden_size'] : undefined);
  return typeof value === 'number' ? value : undefined;
}

/**
 * How a 3-D expert tensor is laid out. The model type decides; when config.json gives the hidden
 * size and the shape only fits the other layout (a gate/up projection reads the hidden state, a
 * down projection writes it), the shape wins.
 */
export function expertLayout(config: Record<string, unknown> | undefined, param: string, shape: readonly number[]): ExpertLayout {
  const type = modelType(config);
  const byType: ExpertLayout = type !== undefined && TRANSPOSED_EXPERT_MODEL_TYPES.has(type) ? 'in-out' : 'out-in';
  const hidden = hiddenSize(config);
  if (hidden === undefined || shape[1] === shape[2]) return byType;
  // the dimension that is the hidden size: input of gate/up, output of down
  const hiddenIsInput = !isDownProjection(param);
  const outInFits = hiddenIsInput ? shape[2] === hidden : shape[1] === hidden;
  const inOutFits = hiddenIsInput ? shape[1] === hidden : shape[2] === hidden;
  if (outInFits && !inOutFits) return 'out-in';
  if (inOutFits && !outInFits) return 'in-out';
  return byType;
}

/** [out, in] of one expert's weight in the orientation LoRA works in (ΔW_e = B·A, out × in). */
export function expertWeightShape(layout: ExpertLayout, shape: readonly number[]): [out: number, inF: number] {
  return layout === 'out-in' ? [shape[1], shape[2]] : [shape[2], shape[1]];
}
