/**
 * What is inside a file or folder: tensors, dtypes, shapes, bytes, parameter count, metadata.
 * Works on safetensors (single or sharded model folders), GGUF files and PEFT adapter folders,
 * reading headers only; Hub ids too (inspect-hub.ts), without downloading weights.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { TensorInfo } from '../io/types.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { openGguf } from '../io/gguf.js';
import { openSafetensors } from '../io/safetensors.js';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, missingAdapterWeights } from '../lora/adapter.js';
import { pathExists } from '../io/paths.js';
import { withPath } from '../io/os-error.js';
import { readJsonFile } from '../io/json-file.js';
import type { HubOptions } from '../io/hub/index.js';
import { isHubInput } from '../io/local-inputs.js';
import { expertModules } from './expert-modules.js';
import { inspectHeaders } from './headers.js';
import { inspectHub } from './inspect-hub.js';

export type InspectKind = 'safetensors' | 'checkpoint' | 'gguf' | 'peft-adapter';

export interface InspectResult {
  path: string;
  kind: InspectKind;
  tensors: TensorInfo[];
  totalParameters: number;
  totalBytes: number;
  /** dtype → tensor count */
  dtypes: Record<string, number>;
  /** safetensors __metadata__, GGUF key/values (long arrays summarised), or adapter_config.json */
  metadata: Record<string, unknown>;
  config?: Record<string, unknown>;
  /** PEFT adapters with target_parameters: one entry per targeted parameter (MoE expert stacks) */
  experts?: InspectExperts[];
}

/** A targeted parameter's LoRA in an adapter: what its stacked lora_A / lora_B tensors mean. */
export interface InspectExperts {
  /** the base tensor, e.g. `model.layers.0.mlp.experts.gate_up_proj` */
  parameter: string;
  /** the PEFT wrapper path its lora_A / lora_B are saved under */
  module: string;
  count: number;
  /** r per expert (the stored factors are r·count wide) */
  rank: number;
  alpha: number;
  scaling: number;
  /** one expert's ΔW, out × in */
  outFeatures: number;
  inFeatures: number;
}

/** GGUF arrays such as a 150k-token vocabulary are summarised, not printed. */
const MAX_ARRAY_SHOWN = 16;

export interface InspectOptions {
  /** a model folder or file, a PEFT adapter folder, a GGUF file, or a Hub id (a local path that exists wins) */
  path: string;
  /** how Hub ids are reached (offline, cache folder, endpoint, token) */
  hub?: HubOptions;
}

/** What is at `params.path`: its kind, tensors, metadata and (adapters) modules. */
export async function inspectPath(params: InspectOptions): Promise<InspectResult> {
  const { path } = params;
  if (await isHubInput(path)) return inspectHub(path, params.hub ?? {});
  // an OS error (missing, dangling link, loop) is explained by the CLI with this path
  const s = await stat(path).catch((err: unknown) => {
    throw withPath(err, path);
  });
  if (s.isDirectory()) {
    if (await pathExists(join(path, ADAPTER_CONFIG_FILE), 'input')) return inspectAdapter(path);
    const gguf = await loneGguf(path);
    if (gguf) return inspectPath({ path: gguf });
    const ckpt = await openCheckpoint(path);
    try {
      return inspectHeaders({ path, kind: 'checkpoint', headers: [{ tensors: ckpt.list(), metadata: {} }], config: ckpt.config });
    } finally {
      await ckpt.close();
    }
  }
  if (path.endsWith('.gguf') || (await hasGgufMagic(path))) {
    const g = await openGguf(path);
    try {
      const metadata: Record<string, unknown> = {};
      for (const [k, v] of g.kv) metadata[k] = Array.isArray(v) && v.length > MAX_ARRAY_SHOWN ? `[${v.length} items]` : v;
      return inspectHeaders({ path, kind: 'gguf', headers: [{ tensors: g.list(), metadata }] });
    } finally {
      await g.close();
    }
  }
  const f = await openSafetensors(path);
  try {
    return inspectHeaders({ path, kind: 'safetensors', headers: [{ tensors: f.list(), metadata: f.metadata }] });
  } finally {
    await f.close();
  }
}

/**
 * The folder's one .gguf file when it holds no safetensors weights (an adapter.gguf saved on its
 * own): inspect shows what is there rather than asking for a conversion.
 */
async function loneGguf(dir: string): Promise<string | undefined> {
  const names = await readdir(dir);
  if (names.some((n) => n.endsWith('.safetensors') || n.endsWith('.safetensors.index.json'))) return undefined;
  const ggufs = names.filter((n) => n.endsWith('.gguf'));
  return ggufs.length === 1 ? join(dir, ggufs[0]!) : undefined;
}

async function inspectAdapter(dir: string): Promise<InspectResult> {
  const config = (await readJsonFile(join(dir, ADAPTER_CONFIG_FILE))) as Record<string, unknown>;
  const missing = await missingAdapterWeights(dir);
  if (missing) throw missing;
  const f = await openSafetensors(join(dir, ADAPTER_WEIGHTS_FILE));
  let result: InspectResult;
  try {
    result = inspectHeaders({ path: dir, kind: 'peft-adapter', headers: [{ tensors: f.list(), metadata: f.metadata }], config });
  } finally {
    await f.close();
  }
  // only then do the stacked tensors need PEFT's reading; an adapter that does not parse is an error worth seeing
  if (Array.isArray(config['target_parameters']) && config['target_parameters'].length) result.experts = await expertModules(dir);
  return result;
}

async function hasGgufMagic(path: string): Promise<boolean> {
  const { open } = await import('node:fs/promises');
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(4);
    await fh.read(buf, 0, 4, 0);
    return buf.toString('latin1') === 'GGUF';
  } finally {
    await fh.close();
  }
}
