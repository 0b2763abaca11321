/**
 * Mistral and Mixtral checkpoints may attend over a sliding window (config.json `sliding_window`).
 * They convert to llama.cpp's `llama` architecture, whose graph has no window: it attends over the
 * whole context. Measured against transformers, positions beyond the window differ by 1–15 in the
 * logits, while those within it agree. The file is still what users want for contexts up to the
 * window, so the conversion goes ahead with a note rather than a refusal.
 */
import { familyOf, modelConfig, textFields, type RawConfig } from '../arch/index.js';

/** The note for a model whose window llama.cpp will ignore, or undefined when nothing is lost. */
export function slidingWindowNote(arch: string, config: RawConfig): string | undefined {
  // gemma2 carries its window in the GGUF (attention.sliding_window); only `llama` drops it
  if (arch !== 'llama' || familyOf(modelConfig(config))?.forward?.sliding !== 'all') return undefined;
  const h = textFields(config);
  const window = h['sliding_window'];
  const positions = h['max_position_embeddings'];
  if (typeof window !== 'number' || !(window > 0)) return undefined;
  // a window as long as the context never slides
  if (typeof positions === 'number' && window >= positions) return undefined;
  return `llama.cpp attends over the whole context; transformers uses a sliding window of ${window}: outputs differ beyond ${window} tokens`;
}
