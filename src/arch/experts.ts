/**
 * How a 3-D MoE expert tensor ([experts, ·, ·], e.g. `mlp.experts.gate_up_proj`) is laid out:
 * (E, out, in), used with F.linear (transformers' default), or (E, in, out), used as x @ W by
 * the families whose expert modules set is_transposed (see families.ts).
 */
import { isDownProjection, type ExpertLayout } from '../lora/expert-stack.js';
import { modelConfig, type RawConfig } from './config.js';
import { familyExpertLayout } from './index.js';

/**
 * How a 3-D expert tensor is laid out. The family decides; when config.json gives the hidden
 * size and the shape only fits the other layout (a gate/up projection reads the hidden state, a
 * down projection writes it), the shape wins.
 */
export function expertLayout(config: RawConfig | undefined, param: string, shape: readonly number[]): ExpertLayout {
  const c = modelConfig(config);
  const byFamily = familyExpertLayout(c);
  const hidden = c.hiddenSize;
  if (hidden === undefined || shape[1] === shape[2]) return byFamily;
  // the dimension that is the hidden size: input of gate/up, output of down
  const hiddenIsInput = !isDownProjection(param);
  const outInFits = hiddenIsInput ? shape[2] === hidden : shape[1] === hidden;
  const inOutFits = hiddenIsInput ? shape[1] === hidden : shape[2] === hidden;
  if (outInFits && !inOutFits) return 'out-in';
  if (inOutFits && !outInFits) return 'in-out';
  return byFamily;
}

/** [out, in] of one expert's weight in the orientation LoRA works in (ΔW_e = B·A, out × in). */
export function expertWeightShape(layout: ExpertLayout, shape: readonly number[]): [out: number, inF: number] {
  return layout === 'out-in' ? [shape[1], shape[2]] : [shape[2], shape[1]];
}
