/** Which modules `--layers` / `--modules` pick for an edit. */
import { layerIndexOf, moduleTypeOf } from '../lora/module-names.js';

export interface ModuleSelector {
  /** layer indices to edit; undefined = every module (inside the layer stack or not) */
  layers?: ReadonlySet<number>;
  /** module types (last path component) to edit; undefined = every type */
  modules?: ReadonlySet<string>;
}

/** How a module path gives its layer and type: LLM paths by default, image-model LoRA files by their own rule. */
export interface ModuleNaming {
  layerOf(path: string): number | null;
  typeOf(path: string): string;
}

const LLM_NAMING: ModuleNaming = { layerOf: layerIndexOf, typeOf: moduleTypeOf };

/** Whether `--layers` / `--modules` pick this module. With --layers, modules outside the layer stack (embeddings, lm_head) are not picked. */
export function isSelected(sel: ModuleSelector, path: string, naming: ModuleNaming = LLM_NAMING): boolean {
  if (sel.modules && !sel.modules.has(naming.typeOf(path))) return false;
  if (sel.layers) {
    const layer = naming.layerOf(path);
    if (layer === null || !sel.layers.has(layer)) return false;
  }
  return true;
}
