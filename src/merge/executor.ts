/**
 * Runs a merge plan out of core: one output tensor at a time, each input read (and decoded to f32)
 * only when its tensor is due, the next tensor's inputs read while this one is computed, and the
 * result streamed straight into its place in the output shards (the sink knows the whole layout
 * up front). Peak memory is about two tensors per input plus one being written, whatever the
 * model size. Buffers are recycled: touching fresh memory costs as much as decoding into it.
 *
 * The output folder is written atomically: shards (+ index), config.json from the donor model with
 * the layer count updated, the tokenizer files, and the merge config as mergekit_config.yml.
 */
import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertNotInput, atomicOutputDir } from '../io/atomic.js';
import { createSafetensorsSink, type SafetensorsSink } from '../io/safetensors.js';
import type { FloatDType } from '../io/types.js';
import { createRng, type Rng } from '../linalg/random.js';
import { prefetch } from '../pipeline/prefetch.js';
import { dtypeByteSize } from '../tensor/dtype.js';
import type { MergeConfig } from './config.js';
import { planMerge, type MergePlan, type PlannedTensor } from './plan.js';
import { openModels, type SourceModel } from './sources.js';

/** mergekit's default output shard size (out_shard_size "5B"). */
export const DEFAULT_SHARD_BYTES = 5e9;

/** Files copied from the tokenizer's source model when present (what mergekit copies). */
export const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'added_tokens.json',
  'vocab.json',
  'merges.txt',
  'chat_template.jinja',
  'chat_template.json',
  'generation_config.json',
];

/** The merge config, stored with the output under the name the Hub and mergekit use. */
export const CONFIG_COPY_FILE = 'mergekit_config.yml';

const DTYPE_NAMES: Readonly<Record<FloatDType, string>> = { BF16: 'bfloat16', F16: 'float16', F32: 'float32' };

export interface MergeModelsOptions {
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
  onProgress?: (done: number, total: number, tensor: string) => void;
}

export interface MergeModelsReport {
  out: string;
  method: string;
  /** the input model folders, base first */
  models: string[];
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

/** Smallest buffer worth recycling; smaller ones are cheap to allocate. */
const MIN_POOLED_BYTES = 1 << 20;

/** Recycled f32 buffers: the smallest free one that fits, or a new one. */
class BufferPool {
  private readonly free: ArrayBuffer[] = [];

  acquire(n: number): Float32Array {
    const bytes = n * 4;
    if (bytes < MIN_POOLED_BYTES) return new Float32Array(n);
    let best = -1;
    this.free.forEach((b, i) => {
      if (b.byteLength >= bytes && (best < 0 || b.byteLength < this.free[best].byteLength)) best = i;
    });
    const buffer = best >= 0 ? this.free.splice(best, 1)[0] : new ArrayBuffer(bytes);
    return new Float32Array(buffer, 0, n);
  }

  release(a: Float32Array): void {
    if (a.buffer.byteLength >= MIN_POOLED_BYTES) this.free.push(a.buffer as ArrayBuffer);
  }
}

/** FNV-1a, 32 bits: a fixed way to turn a mask's identity into an RNG seed. */
function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * The DARE stream for input `input` of output tensor `tensor`: seeded by fnv1a32("seed/tensor/input"),
 * so a mask depends on nothing but the seed, the tensor and the input's position in its slice.
 */
export function maskRng(seed: number, tensor: string, input: number): Rng {
  return createRng(fnv1a32(`${seed}/${tensor}/${input}`));
}

async function streamTensors(plan: MergePlan, models: SourceModel[], sink: SafetensorsSink, seed: number, onProgress?: MergeModelsOptions['onProgress']): Promise<void> {
  const pool = new BufferPool();
  const load = (t: PlannedTensor) => Promise.all(t.inputs.map((inp) => models[inp.model].checkpoint.readInto(inp.tensor, pool.acquire(t.context.numel))));
  let writing: Promise<void> = Promise.resolve();
  let written: Float32Array | undefined;
  for await (const { item, value: inputs, index } of prefetch(plan.tensors, load, 1)) {
    const out = plan.method.merge(item.context, inputs, (input) => maskRng(seed, item.name, input));
    for (const x of inputs) if (x !== out) pool.release(x);
    await writing;
    if (written) pool.release(written);
    writing = sink.add(item.name, item.shape, out, item.dtype);
    // surfaced by the await above or below; this keeps Node from calling it unhandled meanwhile
    writing.catch(() => {});
    written = out;
    onProgress?.(index + 1, plan.tensors.length, item.name);
  }
  await writing;
}

/** The donor's config.json with the output's layer count (and per-layer lists) and dtype. */
function outputModelConfig(config: MergeConfig, plan: MergePlan, models: SourceModel[]): Record<string, unknown> | undefined {
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
  const dtype = config.outDtype ?? config.dtype;
  if (dtype) {
    if ('dtype' in out) out.dtype = DTYPE_NAMES[dtype];
    else out.torch_dtype = DTYPE_NAMES[dtype];
  }
  return out;
}

/** config.json, tokenizer files and the merge config, into `dir`; returns the names written. */
async function writeSideFiles(dir: string, config: MergeConfig, plan: MergePlan, models: SourceModel[]): Promise<string[]> {
  const written: string[] = [];
  const modelConfig = outputModelConfig(config, plan, models);
  if (modelConfig) {
    await writeFile(join(dir, 'config.json'), `${JSON.stringify(modelConfig, null, 2)}\n`);
    written.push('config.json');
  }
  // tokenizer_source: base and the default both take the donor's (base_model, else the first model)
  const tokenizerDir = models[plan.donor].checkpoint.dir;
  for (const name of TOKENIZER_FILES) {
    try {
      await copyFile(join(tokenizerDir, name), join(dir, name));
      written.push(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  await writeFile(join(dir, CONFIG_COPY_FILE), config.text);
  written.push(CONFIG_COPY_FILE);
  return written;
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

/** Opens the models, plans, streams every tensor into `opts.out` and commits it. */
export async function executeMerge(config: MergeConfig, opts: MergeModelsOptions): Promise<MergeModelsReport> {
  const started = performance.now();
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed)) throw new Error(`merge: the seed must be an integer, got ${seed}`);
  const opened = await openModels(config, opts.cwd ?? process.cwd());
  try {
    const { models } = opened;
    const plan = planMerge(config, opened);
    assertNotInput(opts.out, models.map((m) => m.path));
    const outDir = await atomicOutputDir(opts.out, { overwrite: opts.overwrite });
    try {
      const sink = await createSafetensorsSink(outDir.tmpPath, {
        maxShardBytes: opts.maxShardBytes ?? DEFAULT_SHARD_BYTES,
        plan: plan.tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype })),
      });
      try {
        await streamTensors(plan, models, sink, seed, opts.onProgress);
        await sink.finish();
      } catch (err) {
        await sink.abort();
        throw err;
      }
      const shards = sink.writtenFiles();
      const side = await writeSideFiles(outDir.tmpPath, config, plan, models);
      await outDir.commit();
      return {
        out: opts.out,
        method: plan.method.name,
        models: models.map((m) => m.path),
        baseModel: config.baseModel ? models[opened.indexOf(config.baseModel)].path : undefined,
        tensors: plan.tensors.length,
        layers: plan.layers.length,
        ...countDtypes(plan),
        shards: shards.filter((f) => f.endsWith('.safetensors')).length,
        files: [...shards, ...side],
        seed,
        seconds: (performance.now() - started) / 1000,
        notes: plan.notes,
      };
    } catch (err) {
      await outDir.abort();
      throw err;
    }
  } finally {
    await opened.close();
  }
}
