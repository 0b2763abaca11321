/**
 * Hub ids in a merge config, brought into the shared Hub cache before the merge opens anything:
 * every model reference (models, slices, base_model, tokenizer sources) that names nothing local
 * and is a Hub id, or `MODEL+ADAPTER` with a Hub id on either side (mergekit's syntax), is
 * downloaded and its name replaced by the local snapshot folder(s). The rest of the merge then sees
 * local paths only; a name that is neither stays as written for sources.ts to explain.
 */
import { resolve } from 'node:path';
import { parseHubRef } from '../io/hub/index.js';
import { localInput, type LocalInputOptions } from '../io/local-inputs.js';
import { pathExists } from '../io/paths.js';
import type { MergeConfig, ModelRef } from './config.js';
import { referencedModels } from './sources.js';

/** Every model reference of the config, tokenizer sources included. */
function allRefs(config: MergeConfig): ModelRef[] {
  const refs = referencedModels(config);
  const tok = config.tokenizer;
  if (tok && typeof tok.source === 'object') refs.push(tok.source);
  for (const setting of tok?.tokens.values() ?? []) if ('model' in setting.source) refs.push(setting.source.model);
  return refs;
}

/** Whether `text` names something on the Hub: a Hub id naming nothing local (relative to `cwd`, as the config's paths are). */
async function onHub(text: string, cwd: string): Promise<boolean> {
  return parseHubRef(text) !== undefined && !(await pathExists(resolve(cwd, text), 'input'));
}

/**
 * How a reference names the Hub: whole (`org/name`), or as MODEL+ADAPTER split at the last "+"
 * with a Hub id on a side and the other side a Hub id or local; undefined when it does not.
 */
async function hubForm(name: string, cwd: string): Promise<{ whole: string } | { model: string; adapter: string; hub: [boolean, boolean] } | undefined> {
  if (await onHub(name, cwd)) return { whole: name };
  if (await pathExists(resolve(cwd, name), 'input')) return undefined;
  for (let i = name.lastIndexOf('+'); i > 0; i = name.lastIndexOf('+', i - 1)) {
    const [model, adapter] = [name.slice(0, i), name.slice(i + 1)];
    if (adapter === '') continue;
    const hub: [boolean, boolean] = [await onHub(model, cwd), await onHub(adapter, cwd)];
    const local = async (side: string) => pathExists(resolve(cwd, side), 'input');
    if ((hub[0] || hub[1]) && (hub[0] || (await local(model))) && (hub[1] || (await local(adapter)))) return { model, adapter, hub };
  }
  return undefined;
}

/** Whether a reference names something on the Hub (a Hub id, or MODEL+ADAPTER with one on either side): it is not a local input. */
export async function isHubReference(name: string, cwd: string): Promise<boolean> {
  return (await hubForm(name, cwd)) !== undefined;
}

/** The local name for one reference, downloading what it names on the Hub. */
async function localName(name: string, cwd: string, opts: LocalInputOptions): Promise<string> {
  const form = await hubForm(name, cwd);
  if (!form) return name;
  if ('whole' in form) return localInput(form.whole, 'model', opts);
  const [model, adapter] = form.hub;
  return `${model ? await localInput(form.model, 'model', opts) : form.model}+${adapter ? await localInput(form.adapter, 'adapter', opts) : form.adapter}`;
}

/** `config` with every model reference passed through `map` (a copy; the method and parameters are shared). */
function mapRefs(config: MergeConfig, map: (ref: ModelRef) => ModelRef): MergeConfig {
  const out: MergeConfig = { ...config };
  if (config.baseModel) out.baseModel = map(config.baseModel);
  if (config.models) out.models = config.models.map((m) => ({ ...m, model: map(m.model) }));
  if (config.slices) {
    out.slices = config.slices.map((s) => {
      const slice = { ...s, sources: s.sources.map((src) => ({ ...src, model: map(src.model) })) };
      if (s.baseModel) slice.baseModel = map(s.baseModel);
      return slice;
    });
  }
  const tok = config.tokenizer;
  if (tok) {
    const tokens = new Map([...tok.tokens].map(([text, t]) => [text, 'model' in t.source ? { ...t, source: { ...t.source, model: map(t.source.model) } } : t]));
    out.tokenizer = { ...tok, source: typeof tok.source === 'object' ? map(tok.source) : tok.source, tokens };
  }
  return out;
}

/** `config` with its Hub references replaced by local paths (a copy), downloading each distinct one once. */
export async function localizeHubRefs(config: MergeConfig, cwd: string, opts: LocalInputOptions): Promise<MergeConfig> {
  const local = new Map<string, string>();
  for (const ref of allRefs(config)) {
    if (local.has(ref.name)) continue;
    try {
      local.set(ref.name, await localName(ref.name, cwd, opts));
    } catch (err) {
      // a Hub failure names the config line that asked for the model
      if (err instanceof Error) err.message = `${ref.where}: ${err.message}`;
      throw err;
    }
  }
  return mapRefs(config, (ref) => ({ ...ref, name: local.get(ref.name) ?? ref.name }));
}
