/**
 * The models a merge config names, resolved to local folders and opened once each (headers only).
 * Paths are relative to the working directory, as in mergekit. Hub ids are recognised and refused
 * with a clear message until downloading is supported.
 */
import { resolve } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import type { MergeConfig, ModelRef } from './config.js';
import { findLayerStack, type LayerStack } from './layers.js';
import { pathExists } from '../io/paths.js';
import { UsageError } from '../errors.js';

export interface SourceModel {
  /** absolute folder (or file) path */
  path: string;
  /** the name as first written in the config */
  name: string;
  checkpoint: Checkpoint;
  layers: LayerStack;
}

/** `org/name` or `org/name@revision`: what a Hugging Face Hub id looks like. */
const HUB_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+(@[\w./-]+)?$/;

/** The absolute path of a model reference, or a UsageError (a mistake in the config, at its line) saying why it cannot be used. */
export async function resolveModelPath(ref: ModelRef, cwd: string): Promise<string> {
  const path = resolve(cwd, ref.name);
  if (await pathExists(path, 'input')) return path;
  if (HUB_ID.test(ref.name)) {
    throw new UsageError(`${ref.where}: "${ref.name}" is not a local folder and looks like a Hugging Face Hub id: Hub ids are not supported yet; download the model and pass a folder`);
  }
  if (ref.name.includes('+')) {
    throw new UsageError(`${ref.where}: "${ref.name}" looks like mergekit's model+LoRA syntax, which is not supported: merge the adapter into the model first`);
  }
  throw new UsageError(`${ref.where}: model folder "${ref.name}" does not exist (looked for ${path})`);
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
      throw new Error(`models have different architectures: ${first.model.path} is ${first.arch} but ${model.path} is ${arch}; merges need models of one architecture and size`);
    }
  }
}

export interface OpenedModels {
  models: SourceModel[];
  /** index into `models` of a model reference of the config */
  indexOf(ref: ModelRef): number;
  close(): Promise<void>;
}

/** Resolves and opens every model of the config (each folder once), closing them all on failure. */
export async function openModels(config: MergeConfig, cwd: string): Promise<OpenedModels> {
  const models: SourceModel[] = [];
  const byPath = new Map<string, number>();
  const close = async () => {
    await Promise.all(models.map((m) => m.checkpoint.close()));
  };
  try {
    for (const ref of referencedModels(config)) {
      const path = await resolveModelPath(ref, cwd);
      if (byPath.has(path)) continue;
      let checkpoint: Checkpoint;
      try {
        checkpoint = await openCheckpoint(path);
      } catch (err) {
        throw new Error(`${ref.where}: ${(err as Error).message}`);
      }
      byPath.set(path, models.length);
      models.push({ path, name: ref.name, checkpoint, layers: findLayerStack(checkpoint.list()) });
    }
    checkSameArchitecture(models);
  } catch (err) {
    await close();
    throw err;
  }
  return {
    models,
    indexOf(ref) {
      const i = byPath.get(resolve(cwd, ref.name));
      if (i === undefined) throw new Error(`${ref.where}: model "${ref.name}" was not opened`);
      return i;
    },
    close,
  };
}
