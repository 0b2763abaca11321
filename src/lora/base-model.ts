/**
 * The one rule for `base_model_name_or_path` in the adapters we write from a model: a model read
 * from the Hub cache is named by its Hub id, as PEFT records it after from_pretrained("org/name");
 * any other by its folder as an absolute path (for a lone .safetensors file, the folder holding
 * it), so the adapter finds its base from any working directory — a relative path as typed only
 * works from where it was typed.
 */
import type { Checkpoint } from '../io/checkpoint.js';
import { hubIdOfCachePath } from '../io/hub/index.js';

export function baseModelNameOrPath(model: Pick<Checkpoint, 'dir'>): string {
  return hubIdOfCachePath(model.dir) ?? model.dir;
}
