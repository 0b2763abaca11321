/**
 * The side files of a model folder a command writes (apply, merge): everything beside the weights
 * that a loader or a user needs, taken from one source model, by one rule:
 *
 * - From a model folder, every file but the weights (safetensors, bin, pt, gguf…, shard indexes,
 *   adapter configs) and hidden files: the config, generation config, tokenizer and chat template,
 *   and also the model's own code (config.json's auto_map names it, so the output loads only with
 *   it) and its LICENSE and README (a derived model keeps its source's terms).
 * - From a lone .safetensors file, only the known model files beside it (MODEL_SIDE_FILE): the
 *   folder around a loose file may hold anything.
 * - config.json is copied byte for byte unless the command rewrites it (merge: the layer count) or
 *   the weights change dtype; then it is written as 2-space JSON, and its dtype follows the weights:
 *   every one of `torch_dtype` and `dtype` it has is set, and `torch_dtype` is added when it has
 *   neither (transformers reads either).
 * - The command's own files (merge: mergekit_config.yml) are written last and win over a copy.
 */
import { copyFile, readdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { readJsonFileIfPresent } from './json-file.js';
import type { FloatDType } from './types.js';

/** Weight files a copied model folder must not carry over (they are what the command writes). */
const WEIGHT_FILE = /\.(safetensors|bin|pt|pth|ckpt|gguf|h5|msgpack)$|\.index\.json$|^adapter_config\.json$/;

/** What is taken from beside a lone .safetensors file: what obviously belongs to a model. */
export const MODEL_SIDE_FILE =
  /^(config\.json|generation_config\.json|tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|chat_template\.(json|jinja)|preprocessor_config\.json)$/;

const CONFIG_FILE = 'config.json';

/** transformers' names of our float dtypes. */
const TORCH_DTYPE: Readonly<Record<FloatDType, string>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

export interface ModelSideFiles {
  /** The source model: a model folder, or a .safetensors file (its folder holds the side files). */
  source: string;
  /** The config.json to write instead of the source's (already rewritten by the command). */
  config?: Record<string, unknown>;
  /** The dtype the weights were converted to, if they were: config.json says so. */
  dtype?: FloatDType;
  /** The command's own files, by name. */
  own?: Readonly<Record<string, string | Uint8Array>>;
  /** Source files not to copy (merge: the donor's tokenizer, when another is written). */
  skip?: (name: string) => boolean;
}

/** `config` with its dtype keys set to `dtype` (a copy). */
export function withConfigDtype(config: Record<string, unknown>, dtype: FloatDType): Record<string, unknown> {
  const out = { ...config };
  const keys = ['torch_dtype', 'dtype'].filter((k) => k in out);
  for (const key of keys.length ? keys : ['torch_dtype']) out[key] = TORCH_DTYPE[dtype];
  return out;
}

/** Writes the side files of `opts.source` into `outDir`; returns the names written, sorted. */
export async function writeModelSideFiles(outDir: string, opts: ModelSideFiles): Promise<string[]> {
  const isFolder = (await stat(opts.source)).isDirectory();
  const sourceDir = isFolder ? opts.source : dirname(opts.source);
  const rewrite = opts.config !== undefined || opts.dtype !== undefined;
  const written = new Set<string>();
  for (const entry of await readdir(sourceDir, { withFileTypes: true })) {
    const name = entry.name;
    if (!entry.isFile() || name.startsWith('.') || WEIGHT_FILE.test(name) || (!isFolder && !MODEL_SIDE_FILE.test(name))) continue;
    if ((name === CONFIG_FILE && rewrite) || opts.own?.[name] !== undefined || opts.skip?.(name)) continue;
    await copyFile(join(sourceDir, name), join(outDir, name));
    written.add(name);
  }
  const config = rewrite ? (opts.config ?? ((await readJsonFileIfPresent(join(sourceDir, CONFIG_FILE))) as Record<string, unknown> | undefined)) : undefined;
  if (config) {
    await writeFile(join(outDir, CONFIG_FILE), `${JSON.stringify(opts.dtype ? withConfigDtype(config, opts.dtype) : config, null, 2)}\n`);
    written.add(CONFIG_FILE);
  }
  for (const [name, text] of Object.entries(opts.own ?? {})) {
    await writeFile(join(outDir, name), text);
    written.add(name);
  }
  return [...written].sort();
}
