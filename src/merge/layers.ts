/**
 * Where a checkpoint's repeated decoder layers are, read from tensor names alone (no per-architecture
 * tables): `model.layers.7.mlp.up_proj.weight` is layer 7 of the stack `model.layers.`, suffix
 * `mlp.up_proj.weight`. Slices and gradients are defined over this stack; every other tensor
 * (embeddings, final norm, lm_head, a vision tower's own numbered blocks) is a "non-layer" tensor.
 */
import type { TensorInfo } from '../io/types.js';

/** `<prefix><index>.<suffix>` where the prefix ends in a conventional container name (HF Llama/Mistral/Qwen/Gemma/Phi use `layers`, GPT-2/Falcon `h`, others `blocks`). */
const LAYER_NAME = /^((?:.*\.)?(?:layers|h|blocks|block|layer)\.)(\d+)\.(.+)$/;

/** Non-layer tensors that come before the layers (input embeddings); the rest (final norm, lm_head) come after. */
const PRE_LAYER_NAME = /(^|\.)(embed[^.]*|wte|wpe|tok_embeddings|word_embeddings)(\.|$)/;

export interface LayerStack {
  /** e.g. "model.layers."; undefined when the checkpoint has no layer stack */
  prefix: string | undefined;
  /** number of layers: highest index + 1 */
  count: number;
  /** the layer's tensor suffixes in file order (empty for a layer with no tensors) */
  suffixes(layer: number): string[];
  /** tensor name of `suffix` in layer `layer` */
  tensorName(layer: number, suffix: string): string;
  /** tensors outside the stack, in file order */
  nonLayer: string[];
}

/**
 * Finds the layer stack among `tensors`. When several numbered containers exist (a multimodal
 * model's vision and text towers), the one holding the most tensors is taken as the stack.
 */
export function findLayerStack(tensors: readonly TensorInfo[]): LayerStack {
  const byPrefix = new Map<string, number>();
  for (const t of tensors) {
    const m = LAYER_NAME.exec(t.name);
    if (m) byPrefix.set(m[1], (byPrefix.get(m[1]) ?? 0) + 1);
  }
  let prefix: string | undefined;
  for (const [p, n] of byPrefix) {
    const best = prefix === undefined ? -1 : (byPrefix.get(prefix) as number);
    if (n > best || (n === best && p < (prefix as string))) prefix = p;
  }
  const layers = new Map<number, string[]>();
  const nonLayer: string[] = [];
  for (const t of tensors) {
    const m = LAYER_NAME.exec(t.name);
    if (m && m[1] === prefix) {
      const index = Number(m[2]);
      const list = layers.get(index) ?? [];
      list.push(m[3]);
      layers.set(index, list);
    } else {
      nonLayer.push(t.name);
    }
  }
  const count = layers.size === 0 ? 0 : Math.max(...layers.keys()) + 1;
  return {
    prefix,
    count,
    suffixes: (layer) => [...(layers.get(layer) ?? [])],
    tensorName: (layer, suffix) => `${prefix ?? ''}${layer}.${suffix}`,
    nonLayer,
  };
}

/** True for non-layer tensors that sit before the layers (embeddings): they come from the first slice, the rest from the last. */
export function isPreLayerTensor(name: string): boolean {
  return PRE_LAYER_NAME.test(name);
}
