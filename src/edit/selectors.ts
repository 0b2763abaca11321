/** Which modules `--layers` / `--modules` pick for an edit. */
import { layerIndexOf, moduleTypeOf } from '../lora/module-names.js';

export interface ModuleSelector {
  /** layer indices to edit; undefined = every module (inside the layer stack or not) */
  layers?: ReadonlySet<number>;
  /** module types (last path component) to edit; undefined = every type */
  modules?: ReadonlySet<string>;
}

/** Whether `--layers` / `--modules` pick this module. With --layers, modules outside the layer stack (embeddings, lm_head) are not picked. */
export function isSelected(sel: ModuleSelector, path: string): boolean {
  if (sel.modules && !sel.modules.has(moduleTypeOf(path))) return false;
  if (sel.layers) {
    const layer = layerIndexOf(path);
    if (layer === null || !sel.layers.has(layer)) return false;
  }
  return true;
}
