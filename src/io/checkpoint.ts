/**
 * A model checkpoint as one TensorSource: a Hugging Face folder (sharded with
 * model.safetensors.index.json, or a single model.safetensors; diffusers' model folders name them
 * diffusion_pytorch_model.safetensors[.index.json]) or a lone .safetensors file.
 */
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, normalize, resolve } from 'node:path';
import { matrix, type Matrix } from '../tensor/matrix.js';
import { openSafetensors, type SafetensorsFile } from './safetensors.js';
import type { TensorInfo, TensorLocation, TensorSource } from './types.js';
import { readJsonFile } from './json-file.js';
import { noteInput } from './inputs.js';

const INDEX_FILE = 'model.safetensors.index.json';
const SINGLE_FILE = 'model.safetensors';
const ADAPTER_FILE = 'adapter_model.safetensors';
/** A whole diffusers pipeline: one folder per component (unet/ or transformer/, text_encoder/, vae/, …). */
const PIPELINE_FILE = 'model_index.json';
const DENOISER_FOLDERS = ['unet', 'transformer'];

/**
 * The weight files of one model folder, as its library names them. When both the index and the
 * single file are present, transformers loads the single file but diffusers the shards
 * (ModelMixin.from_pretrained looks for the index first): the refusal says which one they would use.
 */
const FOLDER_LAYOUTS = [
  { index: INDEX_FILE, single: SINGLE_FILE, loader: 'transformers', loads: 'single' },
  { index: 'diffusion_pytorch_model.safetensors.index.json', single: 'diffusion_pytorch_model.safetensors', loader: 'diffusers', loads: 'index' },
] as const;

export interface Checkpoint extends TensorSource {
  /** The folder holding the checkpoint (for a lone file: the folder it is in). */
  readonly dir: string;
  /** config.json from `dir`, when present. */
  readonly config?: Record<string, unknown>;
  /** The .safetensors files, absolute, in shard order. */
  readonly files: string[];
  /** read() into a caller-owned array of exactly the tensor's element count (buffer reuse). */
  readInto(name: string, out: Float32Array): Promise<Float32Array>;
  /** Which file holds the tensor, and where: for errors that name the file, and for readers on other threads. */
  locate(name: string): TensorLocation;
}

class ShardedCheckpoint implements Checkpoint {
  private readonly owner: Map<string, SafetensorsFile>;

  constructor(
    readonly path: string,
    readonly dir: string,
    readonly config: Record<string, unknown> | undefined,
    private readonly shards: SafetensorsFile[],
    private readonly keep: (name: string) => boolean = () => true,
  ) {
    this.owner = new Map();
    for (const shard of shards) {
      for (const t of shard.list()) {
        if (!keep(t.name)) continue;
        const other = this.owner.get(t.name);
        if (other) throw new Error(`${path}: tensor "${t.name}" is stored twice, in ${other.path} and in ${shard.path}: corrupt checkpoint`);
        this.owner.set(t.name, shard);
      }
    }
  }

  get files(): string[] {
    return this.shards.map((s) => s.path);
  }

  /** Tensors shard by shard, each shard in data order (sequential reads when iterated). */
  list(): TensorInfo[] {
    return this.shards.flatMap((s) => s.list().filter((t) => this.keep(t.name)));
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  info(name: string): TensorInfo {
    return this.shardOf(name).info(name);
  }

  async read(name: string): Promise<Float32Array> {
    return this.shardOf(name).read(name);
  }

  async readInto(name: string, out: Float32Array): Promise<Float32Array> {
    return this.shardOf(name).readInto(name, out);
  }

  locate(name: string): TensorLocation {
    return this.shardOf(name).locate(name);
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((s) => s.close()));
  }

  private shardOf(name: string): SafetensorsFile {
    const shard = this.owner.get(name);
    if (!shard) throw new Error(`${this.path}: no tensor named "${name}"`);
    return shard;
  }
}

async function kindOf(path: string): Promise<'file' | 'dir' | 'missing'> {
  try {
    return (await stat(path)).isDirectory() ? 'dir' : 'file';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw err;
  }
}

async function readConfig(dir: string): Promise<Record<string, unknown> | undefined> {
  const path = join(dir, 'config.json');
  if ((await kindOf(path)) !== 'file') return undefined;
  const json = await readJsonFile(path);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${path}: expected a JSON object`);
  return json as Record<string, unknown>;
}

function adapterError(path: string): Error {
  return new Error(`${path} is a LoRA adapter (${ADAPTER_FILE}), not a model checkpoint: pass it where an adapter is expected, and a full model here`);
}

/**
 * Shard files named by the index, in first-mention order, each checked to exist inside `dir`; with
 * `keep`, only the shards holding a tensor it accepts (the others may be absent).
 */
async function shardsFromIndex(indexPath: string, dir: string, keep?: (name: string) => boolean): Promise<{ files: string[]; weightMap: Record<string, string> }> {
  const index = await readJsonFile(indexPath);
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new Error(`${indexPath}: no "weight_map" object: not a safetensors index`);
  }
  const files: string[] = [];
  for (const [tensor, file] of Object.entries(weightMap)) {
    // Shards live beside the index; a path leaving the folder would read files the user never named.
    if (typeof file !== 'string' || file === '' || isAbsolute(file) || normalize(file).split(/[/\\]/).includes('..')) {
      throw new Error(`${indexPath}: tensor "${tensor}" maps to ${JSON.stringify(file)}, which is not a file name inside ${dir}`);
    }
    if ((!keep || keep(tensor)) && !files.includes(file)) files.push(file);
  }
  for (const file of files) {
    if ((await kindOf(join(dir, file))) !== 'file') {
      throw new Error(`${indexPath} names shard ${file}, which is missing from ${dir}: the download is incomplete; fetch that file again`);
    }
  }
  return { files, weightMap: weightMap as Record<string, string> };
}

async function openShards(paths: string[]): Promise<SafetensorsFile[]> {
  const shards: SafetensorsFile[] = [];
  try {
    // Lazy handles: a large model has dozens of shards and we read from one at a time.
    for (const p of paths) shards.push(await openSafetensors(p, { lazyHandle: paths.length > 1 }));
    return shards;
  } catch (err) {
    await Promise.all(shards.map((s) => s.close()));
    throw err;
  }
}

/** Which .safetensors files make up the model in `dir` (without an index). */
async function pickSingleFile(dir: string): Promise<string> {
  for (const { single } of FOLDER_LAYOUTS) if ((await kindOf(join(dir, single))) === 'file') return join(dir, single);
  const names = await readdir(dir);
  const candidates = names.filter((n) => n.endsWith('.safetensors') && n !== ADAPTER_FILE);
  if (candidates.length === 1) return join(dir, candidates[0]);
  if (candidates.length > 1) {
    throw new Error(`${dir} has several .safetensors files (${candidates.join(', ')}) but no ${INDEX_FILE}: pass the one file to use`);
  }
  if (names.includes(ADAPTER_FILE) || names.includes('adapter_config.json')) throw adapterError(dir);
  const other = names.filter((n) => /\.(bin|pt|pth|gguf)$/.test(n));
  const hint = other.length > 0 ? ` (found ${other.join(', ')}: loraforge reads safetensors checkpoints; convert first)` : '';
  throw new Error(`${dir} has no ${INDEX_FILE}, ${SINGLE_FILE} or other .safetensors file${hint}`);
}

/**
 * A diffusers pipeline folder is refused rather than read through its denoiser: which component
 * the user means (and whether the top-level single-file checkpoint some repos also carry is the one
 * they want, as kohya's SDXL names need) is theirs to say; the message gives the exact paths.
 */
async function pipelineError(path: string, abs: string): Promise<Error> {
  const choices: string[] = [];
  for (const d of DENOISER_FOLDERS) if ((await kindOf(join(abs, d))) === 'dir') choices.push(join(path, d));
  for (const n of (await readdir(abs)).sort()) if (n.endsWith('.safetensors')) choices.push(join(path, n));
  const what = choices.length > 0 ? `pass its denoiser folder or a single-file checkpoint: ${choices.join(', ')}` : 'it has no unet/ or transformer/ folder: pass the folder of the model to read';
  return new Error(`${path} is a whole diffusers pipeline (${PIPELINE_FILE}), not one model: ${what}`);
}

export interface OpenCheckpointOptions {
  /**
   * Only these tensors are listed, and of a sharded checkpoint only the shards holding one are
   * opened (the rest may be missing): a Hub snapshot downloaded for these tensors alone.
   */
  tensors?: (name: string) => boolean;
}

/**
 * Opens a model checkpoint: a folder (sharded via model.safetensors.index.json or diffusers'
 * diffusion_pytorch_model.safetensors.index.json, else model.safetensors or
 * diffusion_pytorch_model.safetensors, else its only .safetensors file) or a single .safetensors
 * file. A diffusers pipeline folder (model_index.json) is refused naming the component folders.
 * Reads headers and config.json only; tensors are read on demand.
 */
export async function openCheckpoint(path: string, opts: OpenCheckpointOptions = {}): Promise<Checkpoint> {
  const keep = opts.tensors;
  const abs = resolve(path);
  noteInput(abs);
  const kind = await kindOf(abs);
  if (kind === 'missing') throw new Error(`${path}: no such file or folder`);
  if (kind === 'file') {
    if (basename(abs) === ADAPTER_FILE) throw adapterError(abs);
    if (!abs.endsWith('.safetensors')) throw new Error(`${path}: expected a model folder or a .safetensors file`);
    const dir = dirname(abs);
    return new ShardedCheckpoint(abs, dir, await readConfig(dir), await openShards([abs]), keep);
  }
  if ((await kindOf(join(abs, PIPELINE_FILE))) === 'file') throw await pipelineError(path, abs);
  const config = await readConfig(abs);
  let layout: (typeof FOLDER_LAYOUTS)[number] | undefined;
  for (const l of FOLDER_LAYOUTS) {
    if ((await kindOf(join(abs, l.index))) !== 'file') continue;
    layout = l;
    break;
  }
  if (!layout) {
    return new ShardedCheckpoint(abs, abs, config, await openShards([await pickSingleFile(abs)]), keep);
  }
  const indexPath = join(abs, layout.index);
  if ((await kindOf(join(abs, layout.single))) === 'file') {
    // which one is stale only the user knows
    const loads = layout.loads === 'single' ? `load ${layout.single} and ignore the shards` : `load the shards and ignore ${layout.single}`;
    throw new Error(
      `${path} has both ${layout.single} and ${layout.index}: ${layout.loader} would ${loads}, so one of them is probably left over; ` +
        `remove the stale one, or pass ${join(path, layout.single)} itself`,
    );
  }
  const { files, weightMap } = await shardsFromIndex(indexPath, abs, keep);
  const shards = await openShards(files.map((f) => join(abs, f)));
  try {
    for (const [tensor, file] of Object.entries(weightMap)) {
      if (keep && !keep(tensor)) continue;
      const shard = shards[files.indexOf(file)];
      if (!shard.has(tensor)) throw new Error(`${indexPath} places tensor "${tensor}" in ${file}, but that file does not contain it: corrupt checkpoint`);
    }
    return new ShardedCheckpoint(abs, abs, config, shards, keep);
  } catch (err) {
    await Promise.all(shards.map((s) => s.close()));
    throw err;
  }
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/**
 * Matches tensors by name. A common name with different shapes throws (both sides would need the
 * same layout for any per-tensor operation); dtypes may differ since both are read as f32.
 */
export function pairTensors(
  a: TensorSource,
  b: TensorSource,
): { pairs: Array<{ name: string; a: TensorInfo; b: TensorInfo }>; onlyInA: string[]; onlyInB: string[] } {
  const pairs: Array<{ name: string; a: TensorInfo; b: TensorInfo }> = [];
  const onlyInA: string[] = [];
  for (const ta of a.list()) {
    if (!b.has(ta.name)) {
      onlyInA.push(ta.name);
      continue;
    }
    const tb = b.info(ta.name);
    if (ta.shape.length !== tb.shape.length || ta.shape.some((d, i) => d !== tb.shape[i])) {
      throw new Error(`tensor "${ta.name}" has shape ${fmtShape(ta.shape)} in ${a.path} but ${fmtShape(tb.shape)} in ${b.path}: the checkpoints are not the same architecture/size`);
    }
    pairs.push({ name: ta.name, a: ta, b: tb });
  }
  const onlyInB = b.list().filter((t) => !a.has(t.name)).map((t) => t.name);
  return { pairs, onlyInA, onlyInB };
}

/** Reads a 1-D tensor as a 1×n matrix or a 2-D tensor as rows×cols; other ranks are refused. */
export async function readMatrix(src: TensorSource, name: string): Promise<Matrix> {
  const { shape } = src.info(name);
  if (shape.length === 1) return matrix(1, shape[0], await src.read(name));
  if (shape.length === 2) return matrix(shape[0], shape[1], await src.read(name));
  throw new Error(`${src.path}: tensor "${name}" has shape ${fmtShape(shape)}; readMatrix handles 1-D and 2-D tensors only (slice higher-rank tensors first)`);
}
