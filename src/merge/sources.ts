/**
 * The models a merge config names, resolved to local folders and opened once each (headers only).
 * Paths are relative to the working directory, as in mergekit. Hub ids were already replaced by
 * their local snapshot folders (hub-refs.ts) when the merge began.
 *
 * `MODEL+ADAPTER` (mergekit's syntax) is the model with a PEFT adapter applied on the fly
 * (adapted-source.ts). A name that exists as a path, as given, is that path, `+` and all; otherwise
 * it splits at the last `+` whose right side is a folder holding adapter_config.json (so a model
 * folder may contain `+`, an adapter folder may not).
 */
import { join, resolve } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { getBackend } from '../linalg/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { ADAPTER_CONFIG_FILE } from '../lora/adapter.js';
import type { MergeConfig, ModelRef } from './config.js';
import { AdaptedCheckpoint } from './adapted-source.js';
import { findLayerStack, type LayerStack } from './layers.js';
import { pathExists } from '../io/paths.js';
import { isHubReference } from './hub-refs.js';
import { UsageError } from '../errors.js';

export interface SourceModel {
  /** absolute folder (or file) path of the model (for MODEL+ADAPTER: of the model) */
  path: string;
  /** absolute folder of the PEFT adapter seen through, for MODEL+ADAPTER */
  adapter?: string;
  /** how messages and the report name it: `path`, or `path+adapter` */
  label: string;
  /** the name as first written in the config */
  name: string;
  /** for MODEL+ADAPTER, the adapted view (AdaptedCheckpoint) */
  checkpoint: Checkpoint;
  layers: LayerStack;
}

/** The absolute path of a plain model reference, or a UsageError (a mistake in the config, at its line) saying why it cannot be used. */
export async function resolveModelPath(ref: ModelRef, cwd: string): Promise<string> {
  const path = resolve(cwd, ref.name);
  if (await pathExists(path, 'input')) return path;
  throw new UsageError(`${ref.where}: model folder "${ref.name}" does not exist (looked for ${path})`);
}

/** A model reference resolved: the model's absolute path and, for MODEL+ADAPTER, the adapter folder's. */
export interface ResolvedModelRef {
  path: string;
  adapter?: string;
}

/** Resolves a reference, splitting MODEL+ADAPTER as the module comment says; mistakes are UsageErrors at the reference's line. */
export async function resolveModelRef(ref: ModelRef, cwd: string): Promise<ResolvedModelRef> {
  const { name } = ref;
  const last = name.lastIndexOf('+');
  if (last < 0 || (await pathExists(resolve(cwd, name), 'input'))) return { path: await resolveModelPath(ref, cwd) };
  for (let i = last; i > 0; i = name.lastIndexOf('+', i - 1)) {
    const right = name.slice(i + 1);
    const adapter = resolve(cwd, right);
    if (right !== '' && (await pathExists(join(adapter, ADAPTER_CONFIG_FILE), 'input'))) {
      return { path: await resolveModelPath({ ...ref, name: name.slice(0, i) }, cwd), adapter };
    }
  }
  const right = name.slice(last + 1);
  const config = join(resolve(cwd, right), ADAPTER_CONFIG_FILE);
  throw new UsageError(
    `${ref.where}: "${name}" is neither a model folder nor MODEL+ADAPTER: "${right}" after its last "+" is not a PEFT adapter folder (no ${config}); ` +
      'write a model folder, or a model folder, "+" and a PEFT adapter folder',
  );
}

/** Every path the config reads from (models and adapters), for the output-safety check; mistakes as resolveModelRef's. */
export async function referencedPaths(config: MergeConfig, cwd: string): Promise<string[]> {
  const paths: string[] = [];
  for (const ref of referencedModels(config)) {
    // read from the Hub cache, which no --out can be inside by accident; checked again once local
    if (await isHubReference(ref.name, cwd)) continue;
    const { path, adapter } = await resolveModelRef(ref, cwd);
    paths.push(path, ...(adapter ? [adapter] : []));
  }
  return paths;
}

/** Every model reference of the config, in first-mention order (base first). */
export function referencedModels(config: MergeConfig): ModelRef[] {
  const refs: ModelRef[] = [];
  if (config.baseModel) refs.push(config.baseModel);
  for (const m of config.models ?? []) refs.push(m.model);
  for (const s of config.slices ?? []) {
    if (s.baseModel) refs.push(s.baseModel);
    for (const src of s.sources) refs.push(src.model);
  }
  return refs;
}

function describeArchitecture(config: Record<string, unknown> | undefined): string | undefined {
  if (!config) return undefined;
  const arch = Array.isArray(config.architectures) ? config.architectures.join(',') : undefined;
  return arch ?? (typeof config.model_type === 'string' ? config.model_type : undefined);
}

/** Refuses models whose config.json names different architectures (shapes are checked per tensor later). */
function checkSameArchitecture(models: readonly SourceModel[]): void {
  let first: { model: SourceModel; arch: string } | undefined;
  for (const model of models) {
    const arch = describeArchitecture(model.checkpoint.config);
    if (arch === undefined) continue;
    if (!first) first = { model, arch };
    else if (arch !== first.arch) {
      throw new Error(`models have different architectures: ${first.model.label} is ${first.arch} but ${model.label} is ${arch}; merges need models of one architecture and size`);
    }
  }
}

export interface OpenedModels {
  models: SourceModel[];
  /** index into `models` of a model reference of the config */
  indexOf(ref: ModelRef): number;
  close(): Promise<void>;
}

/** Resolves and opens every model of the config (each reference once), closing them all on failure. */
export async function openModels(config: MergeConfig, cwd: string): Promise<OpenedModels> {
  const models: SourceModel[] = [];
  const byLabel = new Map<string, number>();
  const byName = new Map<string, number>();
  // every base and adapter opened, each closed once (an adapted view's base is also in here)
  const resources: Array<{ close(): Promise<void> }> = [];
  const keep = <C extends { close(): Promise<void> }>(r: C): C => {
    resources.push(r);
    return r;
  };
  let backend: Promise<LinalgBackend> | undefined;
  const close = async () => {
    await Promise.all(resources.map((r) => r.close()));
  };
  try {
    for (const ref of referencedModels(config)) {
      const { path, adapter } = await resolveModelRef(ref, cwd);
      const label = adapter ? `${path}+${adapter}` : path;
      const known = byLabel.get(label);
      if (known !== undefined) {
        byName.set(resolve(cwd, ref.name), known);
        continue;
      }
      let checkpoint: Checkpoint;
      try {
        checkpoint = keep(await openCheckpoint(path));
        if (adapter) checkpoint = await AdaptedCheckpoint.open(checkpoint, adapter, await (backend ??= getBackend()), keep);
      } catch (err) {
        throw new Error(`${ref.where}: ${(err as Error).message}`);
      }
      byLabel.set(label, models.length);
      byName.set(resolve(cwd, ref.name), models.length);
      models.push({ path, ...(adapter ? { adapter } : {}), label, name: ref.name, checkpoint, layers: findLayerStack(checkpoint.list()) });
    }
    checkSameArchitecture(models);
  } catch (err) {
    await close();
    throw err;
  }
  return {
    models,
    indexOf(ref) {
      const i = byName.get(resolve(cwd, ref.name));
      if (i === undefined) throw new Error(`${ref.where}: model "${ref.name}" was not opened`);
      return i;
    },
    close,
  };
}
