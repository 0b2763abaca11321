/**
 * Model and adapter arguments made local: a path that exists is used as it is (a local path always
 * wins over a Hub id); otherwise a Hugging Face Hub id (`org/name`, `org/name@revision`,
 * `org/name/sub/folder` or `org/name/file.safetensors`) is brought into the shared Hub cache
 * (io/hub) and its snapshot folder, or the folder or file inside it, stands in for the argument.
 * Anything else passes through unchanged, so the reader's own "does not exist" error names it.
 *
 * Each kind of input brings only what its readers open: a model its config, generation config,
 * tokenizer and small side files plus the safetensors shards holding the tensors the command
 * reads; an adapter its config and weights (or the one LoRA file named); a config only config.json.
 */
import { join } from 'node:path';
import { ADAPTER_FILES, MODEL_FILES, downloadSnapshot, inFolder, parseHubRef, type HubOptions } from './hub/index.js';
import { pathExists } from './paths.js';
import type { OnProgress } from '../progress.js';

export type InputKind = 'model' | 'adapter' | 'config';

export interface LocalInputOptions {
  /** how the Hub is reached (offline, cache folder, endpoint, token) */
  hub?: HubOptions;
  /** download progress, when `hub` brings no onProgress of its own (phase 'download') */
  onProgress?: OnProgress;
  /** a model's tensors the command reads (default: all): of a sharded model only the shards holding one are downloaded */
  tensors?: (name: string) => boolean;
}

const CHOOSE: Readonly<Record<InputKind, (path: string) => boolean>> = {
  model: MODEL_FILES,
  adapter: ADAPTER_FILES,
  config: (path) => path === 'config.json',
};

/** Whether `text` will be read from the Hub: it names nothing local and is a Hub id. */
export async function isHubInput(text: string): Promise<boolean> {
  return parseHubRef(text) !== undefined && !(await pathExists(text, 'input'));
}

/** The local path standing for `text` (see the module comment). */
export async function localInput(text: string, kind: InputKind, opts: LocalInputOptions = {}): Promise<string> {
  if (!(await isHubInput(text))) return text;
  const ref = parseHubRef(text)!;
  const hub = { ...opts.hub, onProgress: opts.hub?.onProgress ?? opts.onProgress };
  const inside = ref.path;
  // a single file in the repo (a lone .safetensors model or LoRA): it, plus a model's top-level side files
  const single = inside !== undefined && /\.safetensors$/.test(inside);
  const files = single
    ? (p: string) => p === inside || (kind === 'model' && MODEL_FILES(p) && !p.endsWith('.safetensors') && !p.endsWith('.index.json'))
    : inside !== undefined
      ? inFolder(inside, CHOOSE[kind])
      : CHOOSE[kind];
  const snapshot = await downloadSnapshot({ ...hub, ref, files, tensors: kind === 'model' && !single ? opts.tensors : undefined });
  return inside === undefined ? snapshot.dir : join(snapshot.dir, inside);
}

/** Adapter arguments (`{ dir }`, with a weight or scale) with each folder made local. */
export async function localAdapters<T extends { dir: string }>(specs: readonly T[], opts: LocalInputOptions = {}): Promise<T[]> {
  const out: T[] = [];
  for (const s of specs) out.push({ ...s, dir: await localInput(s.dir, 'adapter', opts) });
  return out;
}
