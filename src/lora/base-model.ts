/**
 * The one rule for `base_model_name_or_path` in the adapters we write from a model: the model's
 * folder as an absolute path (for a lone .safetensors file, the folder holding it), so the
 * adapter finds its base from any working directory — a relative path as typed only works from
 * where it was typed. A model read from the Hub will name its Hub id here instead.
 */
import type { Checkpoint } from '../io/checkpoint.js';

export function baseModelNameOrPath(model: Pick<Checkpoint, 'dir'>): string {
  return model.dir;
}
