/**
 * inspect on a Hub id without downloading weights: the small JSON files (config.json, the
 * safetensors index, adapter_config.json) come into the cache, and each safetensors file's header
 * is read by HTTP range requests (or from the cache when the file is there), so a model of many
 * gigabytes costs a few kilobytes. The folder is read the way inspect reads a local one.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError } from '../errors.js';
import { downloadSnapshot, parseHubRef, readRemoteSafetensorsHeader, type HubOptions, type HubRef } from '../io/hub/index.js';
import { isSafetensorsIndex, shardsFor } from '../io/hub/index-shards.js';
import { readJsonFile } from '../io/json-file.js';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../lora/adapter.js';
import { expertModules } from './expert-modules.js';
import { headerTensors, inspectHeaders, type InspectHeader } from './headers.js';
import type { InspectResult } from './inspect.js';

const INDEX_FILE = 'model.safetensors.index.json';
const SINGLE_FILE = 'model.safetensors';
const SIDE_FILES = new Set(['config.json', ADAPTER_CONFIG_FILE, INDEX_FILE]);

async function readObject(path: string): Promise<Record<string, unknown>> {
  const json = await readJsonFile(path);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new InputError(`${path}: expected a JSON object`, { file: path });
  return json as Record<string, unknown>;
}

/** The weights a model folder is read from, as openCheckpoint picks them: the index's shards, model.safetensors, or the one .safetensors file. */
function modelWeights(text: string, names: string[], indexText: string | undefined): string[] {
  const hasIndex = indexText !== undefined;
  if (hasIndex && names.includes(SINGLE_FILE)) {
    throw new InputError(`${text} has both ${SINGLE_FILE} and ${INDEX_FILE}: transformers would load ${SINGLE_FILE} and ignore the shards; name the file to inspect, e.g. ${text}/${SINGLE_FILE}`);
  }
  if (hasIndex) return shardsFor(INDEX_FILE, indexText);
  if (names.includes(SINGLE_FILE)) return [SINGLE_FILE];
  const files = names.filter((n) => n.endsWith('.safetensors'));
  if (files.length === 1) return files;
  if (files.length > 1) throw new InputError(`${text} has ${files.length} .safetensors files and no ${INDEX_FILE}: name the one to inspect, e.g. ${text}/${files[0]}`);
  throw new InputError(`${text} holds no .safetensors weights${names.some((n) => n.endsWith('.gguf')) ? ' (its .gguf files are not read from the Hub: download one and inspect it)' : ''}; is this a model or PEFT adapter repo?`);
}

export async function inspectHub(text: string, hub: HubOptions): Promise<InspectResult> {
  const ref = parseHubRef(text)!;
  if (ref.path?.endsWith('.safetensors')) {
    const header = await readRemoteSafetensorsHeader({ ...hub, ref, path: ref.path });
    return inspectHeaders({ path: text, kind: 'safetensors', headers: [headerTensors(`${ref.repo}/${ref.path}`, header)] });
  }
  const folder = ref.path === undefined ? '' : `${ref.path}/`;
  // downloadSnapshot asks this predicate about every file of the repo (offline: of the cached
  // snapshot), so it also tells which weights there are; it chooses only the small JSON files
  const names: string[] = [];
  const snapshot = await downloadSnapshot({
    ...hub,
    ref,
    files: (p) => {
      const name = p.slice(folder.length);
      if (!p.startsWith(folder) || name.includes('/')) return false;
      names.push(name);
      return SIDE_FILES.has(name);
    },
    tensors: () => false, // the index comes down, none of its shards
  });
  const dir = join(snapshot.dir, ...folder.split('/').filter(Boolean));
  // by commit: one revision throughout, and no further revision lookups
  const atCommit: HubRef = { repo: ref.repo, revision: snapshot.commit };
  const read = async (name: string): Promise<InspectHeader> =>
    headerTensors(`${ref.repo}/${folder}${name}`, await readRemoteSafetensorsHeader({ ...hub, ref: atCommit, path: folder + name }));
  const has = (name: string): boolean => snapshot.files.includes(folder + name);

  if (has(ADAPTER_CONFIG_FILE)) {
    const config = await readObject(join(dir, ADAPTER_CONFIG_FILE));
    if (!names.includes(ADAPTER_WEIGHTS_FILE)) throw new InputError(`${text}: no ${ADAPTER_WEIGHTS_FILE} next to ${ADAPTER_CONFIG_FILE}; is this a PEFT adapter (loraforge reads only safetensors weights)?`);
    const result = inspectHeaders({ path: text, kind: 'peft-adapter', headers: [await read(ADAPTER_WEIGHTS_FILE)], config });
    if (Array.isArray(config['target_parameters']) && config['target_parameters'].length) {
      // expert stacks need PEFT's reading of the weights, and an adapter is small: it comes down
      await downloadSnapshot({ ...hub, ref: atCommit, files: (p) => p === folder + ADAPTER_WEIGHTS_FILE });
      result.experts = await expertModules(dir);
    }
    return result;
  }
  const indexText = has(INDEX_FILE) ? await readFile(join(dir, INDEX_FILE), 'utf8') : undefined;
  const headers: InspectHeader[] = [];
  for (const name of modelWeights(text, names.filter((n) => !isSafetensorsIndex(n)), indexText)) headers.push(await read(name));
  const config = has('config.json') ? await readObject(join(dir, 'config.json')) : undefined;
  return inspectHeaders({ path: text, kind: 'checkpoint', headers, config });
}
