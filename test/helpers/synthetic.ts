/**
 * Tiny synthetic Hugging Face model folders for tests: safetensors written by our own sink plus a
 * config.json. Callers choose the tensors (and their seeded values); this only lays out the files.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { createSafetensorsSink } from '../../src/io/safetensors.js';
import type { FloatDType } from '../../src/io/types.js';

/** A fresh directory under the OS temp dir; the caller removes it (fs.rm recursive). */
export function makeTempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/**
 * One temporary root for a test file, made before its tests and removed after them; the function
 * returned makes a new named folder in it.
 */
export function tempFolders(prefix: string): (name: string) => Promise<string> {
  let root: string;
  before(async () => {
    root = await makeTempDir(prefix);
  });
  after(() => rm(root, { recursive: true, force: true }));
  return async (name) => {
    const dir = join(root, name);
    await mkdir(dir);
    return dir;
  };
}

export interface ModelFolderOptions {
  /** Storage dtype of every tensor; default F32. */
  dtype?: FloatDType;
  /** config.json contents; default a minimal Llama config. */
  config?: object;
  /** Shard like save_pretrained: model-0000i-of-0000N.safetensors + model.safetensors.index.json. */
  maxShardBytes?: number;
}

const DEFAULT_CONFIG = { architectures: ['LlamaForCausalLM'], model_type: 'llama' };

/**
 * Writes `tensors` (in the given order) as a model folder in `dir` (created if missing) and
 * returns the safetensors/index file names written.
 */
export async function writeModelFolder(
  dir: string,
  tensors: Record<string, { shape: number[]; data: Float32Array }>,
  opts: ModelFolderOptions = {},
): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const sink = await createSafetensorsSink(dir, { dtype: opts.dtype, maxShardBytes: opts.maxShardBytes });
  try {
    for (const [name, t] of Object.entries(tensors)) await sink.add(name, t.shape, t.data);
    await sink.finish();
  } catch (err) {
    await sink.abort();
    throw err;
  }
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(opts.config ?? DEFAULT_CONFIG, null, 2)}\n`);
  return sink.writtenFiles();
}
