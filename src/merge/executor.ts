/**
 * Runs a merge plan out of core: each input tensor is read (and decoded to f32) only when its
 * output tensor is due, a few tensors are read and merged at once by worker threads (see
 * compute.ts) while the main thread writes finished results straight into their place in the
 * output shards (the sink knows the whole layout up front). Memory stays at one merge of the
 * largest tensor plus one result, whatever the model size (mergeBudget; more with maxMemory).
 *
 * The output folder is written atomically: shards (+ index), the donor model's side files with its
 * config.json's layer count updated (io/model-folder.ts), and the merge config as mergekit_config.yml.
 */
import { UsageError } from '../errors.js';
import { assertNotInput } from '../io/atomic.js';
import { createSafetensorsSink } from '../io/safetensors.js';
import { writeModelSideFiles } from '../io/model-folder.js';
import { dtypeByteSize } from '../tensor/dtype.js';
import { createCompute, type MergeInput } from './compute.js';
import type { MergeConfig } from './config.js';
import { planMerge, type MergePlan, type PlannedTensor } from './plan.js';
import { scratchArrays } from './run-method.js';
import { openModels, type SourceModel } from './sources.js';
import { buildOutputVocab, type OutputVocab } from './vocab.js';
import { tokenizerFiles } from './tokenizer-files.js';
import { runCommand } from '../pipeline/run.js';
import type { OnProgress } from '../progress.js';
import type { HubOptions } from '../io/hub/index.js';
import { localizeHubRefs } from './hub-refs.js';
import { freemem } from 'node:os';

/** mergekit's default output shard size (out_shard_size "5B"). */
export const DEFAULT_SHARD_BYTES = 5e9;

/** The merge config, stored with the output under the name the Hub and mergekit use. */
export const CONFIG_COPY_FILE = 'mergekit_config.yml';

/** What a merge run takes besides its config (mergeModels and executeMerge share it). */
export interface MergeRunOptions {
  /** output folder (created atomically) */
  out: string;
  /** largest shard, in bytes; default 5 GB */
  maxShardBytes?: number;
  /** seed of the DARE masks; default 0 */
  seed?: number;
  /** replace a non-empty `out` */
  overwrite?: boolean;
  /** folder model paths are relative to; default process.cwd() */
  cwd?: string;
  /** merge large tensors in worker threads, overlapping reading and writing; default true when there is a second core */
  worker?: boolean;
  /**
   * bytes of tensor data (as f32) held at once: the tensors being read and merged (inputs and
   * working arrays) and the one being written; default: two merges of the largest tensor and one
   * result when there are workers and that takes at most a quarter of the available memory, else
   * one merge. One merge always runs, however large; more lets large tensors merge in parallel.
   */
  maxMemory?: number;
  /** how Hub ids among the models are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
  /** called after each output tensor is written */
  onProgress?: OnProgress;
}

/** executeMerge's params: a config already read and validated (merge/config.ts). */
export interface ExecuteMergeOptions extends MergeRunOptions {
  config: MergeConfig;
}

export interface MergeModelsReport {
  out: string;
  method: string;
  /** the input models, base first: each folder, or `folder+adapter` for a model seen through a PEFT adapter */
  models: string[];
  /** the PEFT adapter folder applied on the fly to each of `models` (MODEL+ADAPTER), else null */
  adapters: Array<string | null>;
  baseModel?: string;
  tensors: number;
  layers: number;
  /** output tensor count by storage dtype */
  dtypes: Record<string, number>;
  shards: number;
  /** bytes of tensor data written */
  bytes: number;
  /** every file written, relative to `out` */
  files: string[];
  seed: number;
  seconds: number;
  notes: string[];
}

/**
 * The memory rule. A tensor being read and merged holds its inputs and the method's working arrays
 * as f32 (`cost`); the tensor being written holds only its result. `maxMemory` bounds the two
 * together: loads start while the costs in flight stay within it, less the largest result, and one
 * always starts however large (prefetch's `always: 1`). Without `maxMemory`, `room` decides: two
 * merges of the largest tensor when there are workers to run them side by side and they take at
 * most a quarter of the available memory (the 2-core bench: 30–40 % faster than one), else one;
 * so peak memory stays at about (inputs + working arrays) × 2 + 1, or × 1 + 1, times the largest
 * tensor as f32 (plus the runtime), flat in the layer count, while small tensors still merge
 * several at a time. The buffer pool keeps no more than that (`poolBytes`).
 */
export function mergeBudget(
  tensors: readonly PlannedTensor[],
  scratch: number,
  maxMemory?: number,
  room?: { workers: number; availableBytes: number },
): { cost(t: PlannedTensor): number; bytes: number; always: number; poolBytes: number } {
  const cost = (t: PlannedTensor) => t.context.numel * 4 * (t.inputs.length + scratch);
  const largest = tensors.reduce((m, t) => Math.max(m, cost(t)), 0);
  const output = tensors.reduce((m, t) => Math.max(m, t.context.numel * 4), 0);
  const merges = room && room.workers >= 2 && 2 * largest + output <= room.availableBytes / 4 ? 2 : 1;
  const bytes = Math.max(0, (maxMemory ?? merges * largest + output) - output);
  return { cost, bytes, always: 1, poolBytes: Math.max(bytes, largest) + output };
}

/** The donor's config.json with the output's layer count (and per-layer lists). */
function outputModelConfig(plan: MergePlan, models: SourceModel[]): Record<string, unknown> | undefined {
  const donor = models[plan.donor];
  if (!donor.checkpoint.config) return undefined;
  const out = structuredClone(donor.checkpoint.config);
  if (donor.layers.count > 0) {
    const n = plan.layers.length;
    const text = out.text_config as Record<string, unknown> | undefined;
    for (const key of ['num_hidden_layers', 'n_layer', 'num_layers']) {
      if (typeof out[key] === 'number') out[key] = n;
      if (text && typeof text[key] === 'number') text[key] = n;
    }
    // per-layer settings (sliding vs full attention) follow the layers they describe
    if (Array.isArray(out.layer_types) && out.layer_types.length === donor.layers.count) {
      out.layer_types = plan.layers.map(({ model, layer }) => {
        const own = models[model].checkpoint.config?.layer_types;
        return Array.isArray(own) && own.length === models[model].layers.count ? own[layer] : (out.layer_types as unknown[])[layer];
      });
    }
  }
  // embeddings cut to a common size or built for a new vocabulary: config.json must say the size the tensors have, or the output does not load
  const embed = plan.tensors.find((t) => t.remap) ?? plan.tensors.find((t) => /(^|\.)embed_tokens\.weight$/.test(t.name));
  const rows = embed?.shape[0];
  const text = out.text_config as Record<string, unknown> | undefined;
  const holder = text && typeof text.vocab_size === 'number' ? text : out;
  if (rows !== undefined && typeof holder.vocab_size === 'number' && holder.vocab_size !== rows) {
    if (!embed?.remap) {
    plan.notes.push(
      `config.json vocab_size set to ${rows}, the merged embedding rows (${models[plan.donor].path} says ${holder.vocab_size}); ` +
        `its tokenizer is copied as it is: ids from ${rows} on have no row — make the model with the fewest tokens base_model (or list it first)`,
    );
    }
    holder.vocab_size = rows;
  }
  return out;
}

/**
 * The donor's side files (io/model-folder.ts: tokenizer_source base and the default both take the
 * donor's, i.e. base_model's, else the first model's), its config.json rewritten, and the merge
 * config, into `dir`; returns the names written.
 */
async function writeSideFiles(dir: string, config: MergeConfig, plan: MergePlan, models: SourceModel[], vocab: OutputVocab | undefined): Promise<string[]> {
  const tokenizer = await tokenizerFiles({
    vocab,
    chatTemplate: config.chatTemplate === undefined ? undefined : { value: config.chatTemplate, where: config.chatTemplateWhere ?? config.file },
    donor: models[plan.donor].path,
    models: models.map((m) => m.path),
  });
  plan.notes.push(...tokenizer.notes);
  return writeModelSideFiles(dir, {
    source: models[plan.donor].path,
    config: outputModelConfig(plan, models),
    dtype: config.outDtype ?? config.dtype,
    own: { ...tokenizer.own, [CONFIG_COPY_FILE]: config.text },
    skip: tokenizer.skip,
  });
}

function countDtypes(plan: MergePlan): { dtypes: Record<string, number>; bytes: number } {
  const dtypes: Record<string, number> = {};
  let bytes = 0;
  for (const t of plan.tensors) {
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    bytes += t.context.numel * (dtypeByteSize(t.dtype) as number);
  }
  return { dtypes, bytes };
}

/**
 * Opens the models, plans, streams every tensor into `opts.out` and commits it. Tensors are read
 * and merged (in workers) up to `compute.concurrency` at a time within mergeBudget, and
 * written in order as they finish: the main thread encodes and writes tensor i while workers read
 * and merge i+1, i+2.
 */
export async function executeMerge(params: ExecuteMergeOptions): Promise<MergeModelsReport> {
  const { config: given, ...opts } = params;
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed)) throw new UsageError(`merge: the seed must be an integer, got ${seed}`);
  if (opts.maxMemory !== undefined && !(opts.maxMemory > 0)) throw new UsageError(`merge: the memory budget must be a positive number of bytes, got ${opts.maxMemory}`);
  // Hub ids become local snapshot folders, once the options are known to be good; the caller's config is left as it was
  const config = await localizeHubRefs(given, opts.cwd ?? process.cwd(), opts);
  const started = performance.now();
  // starts nothing until prepare(): the workers then load while the first tensors are read
  const compute = createCompute(config.method, seed, { worker: opts.worker });
  // set once the plan knows the largest tensor
  const inFlight = { bytes: Infinity, always: 1, cost: mergeBudget([], scratchArrays(config.method)).cost };
  return runCommand({
    // the models are known once the config's paths are resolved: the plan checks the output against them
    inputs: [],
    open: async (keep) => {
      keep(compute);
      return keep(await openModels(config, opts.cwd ?? process.cwd()));
    },
    plan: async (opened) => {
      const vocab = await buildOutputVocab(config, opened, opts.cwd ?? process.cwd());
      const plan = planMerge(config, opened, vocab);
      if (vocab) plan.notes.push(...vocab.notes);
      assertNotInput(opts.out, opened.models.flatMap((m) => (m.adapter ? [m.path, m.adapter] : [m.path])));
      compute.prepare(plan.tensors.map((t) => t.context));
      const budget = mergeBudget(plan.tensors, scratchArrays(plan.method), opts.maxMemory, { workers: compute.concurrency, availableBytes: freemem() });
      inFlight.bytes = budget.bytes;
      compute.pool.limit = budget.poolBytes;
      return { ...plan, vocab, items: plan.tensors };
    },
    output: {
      dir: opts.out,
      overwrite: opts.overwrite,
      sink: (tmpPath, { plan }) =>
        createSafetensorsSink(tmpPath, {
          maxShardBytes: opts.maxShardBytes ?? DEFAULT_SHARD_BYTES,
          plan: plan.tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype })),
        }),
    },
    load: (t, { res }) => compute.merge(t.context, t.inputs.map((inp): MergeInput => ({ checkpoint: res.models[inp.model].checkpoint, tensor: inp.tensor })), t.remap),
    // one more than the workers can take, queued so that a worker that finishes goes on at once
    readAhead: { depth: compute.concurrency, budget: inFlight },
    overlap: true,
    each: async (t, out, { sink }) => {
      await sink.add(t.name, t.shape, out, t.dtype);
      compute.pool.release(out);
    },
    finish: async (_rows, { res: opened, plan, sink, tmpPath }) => {
      const { models } = opened;
      await sink.finish();
      const shards = sink.writtenFiles();
      const side = await writeSideFiles(tmpPath, config, plan, models, plan.vocab);
      return {
        out: opts.out,
        method: plan.method.name,
        models: models.map((m) => m.label),
        adapters: models.map((m) => m.adapter ?? null),
        baseModel: config.baseModel ? models[opened.indexOf(config.baseModel)].label : undefined,
        tensors: plan.tensors.length,
        layers: plan.layers.length,
        ...countDtypes(plan),
        shards: shards.filter((f) => f.endsWith('.safetensors')).length,
        files: [...shards, ...side],
        seed,
        seconds: (performance.now() - started) / 1000,
        notes: plan.notes,
      };
    },
    onProgress: opts.onProgress,
  });
}
