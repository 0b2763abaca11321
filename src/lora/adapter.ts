/**
 * PEFT LoRA adapter folders: `adapter_config.json` + `adapter_model.safetensors`.
 *
 * In memory every module is kept in the orientation of the base weight it changes:
 * ΔW (out × in) = scaling · B (out × r) · A (r × in). PEFT stores embedding LoRA the other
 * way round (`lora_embedding_A` is r × vocab, `lora_embedding_B` is hidden × r, ΔWᵀ = B·A), so
 * reading and writing swap and transpose those, and nothing else in loraforge has to know.
 */
import { access, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { matrix, transpose, type Matrix } from '../tensor/matrix.js';
import type { FloatDType, TensorInfo } from '../io/types.js';
import { openSafetensors, createSafetensorsSink, type SafetensorsFile, type SafetensorsSink } from '../io/safetensors.js';
import { atomicWriteFile } from '../io/atomic.js';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
/** PEFT prefixes every saved key with the wrapper's path to the base model. */
export const PEFT_PREFIX = 'base_model.model.';

export type LoraKind = 'linear' | 'embedding';

export interface LoraModule {
  /** Module path in the base model, e.g. `model.layers.0.self_attn.q_proj` (no PEFT prefix, no `.weight`). */
  name: string;
  kind: LoraKind;
  /** r × in, in the base weight's orientation */
  A: Matrix;
  /** out × r, in the base weight's orientation */
  B: Matrix;
  alpha: number;
  /**
   * DoRA: the magnitude vector. Linear: one per output row of the base weight (`out`); embedding:
   * one per column (`in`, the embedding dim), since PEFT normalises the embedding weight column-wise.
   */
  magnitude?: Float32Array;
  /** EDoRA: the trained r × r latent R; ΔW = s·B·R·A. */
  latent?: Matrix;
}

/** The parts of `adapter_config.json` loraforge reads; everything else is carried through untouched. */
export interface PeftConfig {
  peft_type?: string;
  r: number;
  lora_alpha: number;
  target_modules?: string[] | string | null;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  use_rslora?: boolean;
  use_dora?: boolean;
  modules_to_save?: string[] | null;
  base_model_name_or_path?: string | null;
  task_type?: string | null;
  [key: string]: unknown;
}

export function loraRank(m: LoraModule): number {
  return m.A.rows;
}

/** PEFT's scaling: alpha / r, or alpha / √r with rsLoRA. */
export function loraScaling(alpha: number, rank: number, useRslora = false): number {
  if (rank === 0) return 0;
  return useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
}

/**
 * PEFT's lookup of a per-module override in rank_pattern / alpha_pattern: the first key that,
 * read as a regular expression, matches the end of the module path at a component boundary.
 */
export function lookupPattern(patterns: Record<string, number> | undefined, modulePath: string): number | undefined {
  if (!patterns) return undefined;
  for (const [key, value] of Object.entries(patterns)) {
    if (new RegExp(`^(.*\\.)?(${key})$`).test(modulePath)) return value;
  }
  return undefined;
}

/** How a module is listed in an adapter before its factors are loaded. */
export interface LoraModuleInfo {
  name: string;
  kind: LoraKind;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  alpha: number;
  scaling: number;
  hasMagnitude: boolean;
  hasLatent: boolean;
}

/** Suffixes of the tensors PEFT writes per module, mapped to the role they play. */
const LORA_KEYS: Array<[suffix: string, role: 'A' | 'B' | 'eA' | 'eB' | 'magnitude' | 'latent']> = [
  ['.lora_A.weight', 'A'],
  ['.lora_B.weight', 'B'],
  ['.lora_embedding_A', 'eA'],
  ['.lora_embedding_B', 'eB'],
  ['.lora_magnitude_vector.weight', 'magnitude'],
  ['.lora_magnitude_vector', 'magnitude'],
  // EDoRA / LoRA-XS keep R in an attribute `default_lora_latent_mapping` beside the module, and
  // PEFT's save strips ".default", which leaves `<module>_lora_latent_mapping.weight` in the file.
  // The with-adapter-name form must be tried before the bare `_lora_latent_mapping` suffix.
  ['.default_lora_latent_mapping.weight', 'latent'],
  ['_lora_latent_mapping.weight', 'latent'],
  ['.lora_latent_mapping.weight', 'latent'],
];

type ModuleKeys = Partial<Record<'A' | 'B' | 'eA' | 'eB' | 'magnitude' | 'latent', TensorInfo>>;

/** A PEFT adapter folder opened for streaming: modules are listed at once and loaded one at a time. */
export class PeftAdapter {
  private constructor(
    readonly dir: string,
    readonly config: PeftConfig,
    readonly modules: LoraModuleInfo[],
    /** Full tensors saved beside the LoRA factors (`modules_to_save`), keyed by base-model tensor name. */
    readonly fullTensors: TensorInfo[],
    private readonly keys: Map<string, ModuleKeys>,
    private readonly file: SafetensorsFile,
  ) {}

  static async open(dir: string): Promise<PeftAdapter> {
    const configPath = join(dir, ADAPTER_CONFIG_FILE);
    const config = await readAdapterConfig(configPath);
    const weightsPath = join(dir, ADAPTER_WEIGHTS_FILE);
    try {
      await access(weightsPath);
    } catch {
      const hasBin = await access(join(dir, 'adapter_model.bin')).then(() => true, () => false);
      throw new Error(
        hasBin
          ? `${dir}: only adapter_model.bin (a pickle) is present; loraforge reads adapter_model.safetensors — re-save the adapter with safe_serialization=True`
          : `${dir}: no ${ADAPTER_WEIGHTS_FILE}; is this a PEFT adapter folder?`,
      );
    }
    const file = await openSafetensors(weightsPath);
    try {
      const { keys, fullTensors } = groupAdapterKeys(file);
      const modules = [...keys].map(([name, k]) => describeModule(weightsPath, config, name, k));
      return new PeftAdapter(dir, config, modules, fullTensors, keys, file);
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  module(name: string): LoraModuleInfo {
    const info = this.modules.find((m) => m.name === name);
    if (!info) throw new Error(`${this.dir}: adapter has no LoRA module "${name}"`);
    return info;
  }

  async load(name: string): Promise<LoraModule> {
    const info = this.module(name);
    const k = this.keys.get(name)!;
    const read = async (t: TensorInfo, rows: number, cols: number) => matrix(rows, cols, await this.file.read(t.name));
    let A: Matrix;
    let B: Matrix;
    if (info.kind === 'embedding') {
      // stored A is r × vocab, B is hidden × r; in weight orientation B_w = Aᵀ, A_w = Bᵀ
      B = transpose(await read(k.eA!, info.rank, info.outFeatures));
      A = transpose(await read(k.eB!, info.inFeatures, info.rank));
    } else {
      A = await read(k.A!, info.rank, info.inFeatures);
      B = await read(k.B!, info.outFeatures, info.rank);
    }
    const mod: LoraModule = { name, kind: info.kind, A, B, alpha: info.alpha };
    if (k.magnitude) mod.magnitude = await this.file.read(k.magnitude.name);
    if (k.latent) mod.latent = await read(k.latent, info.rank, info.rank);
    return mod;
  }

  async readFull(name: string): Promise<Float32Array> {
    return this.file.read(PEFT_PREFIX + name);
  }

  close(): Promise<void> {
    return this.file.close();
  }
}

export function openPeftAdapter(dir: string): Promise<PeftAdapter> {
  return PeftAdapter.open(dir);
}

async function readAdapterConfig(path: string): Promise<PeftConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new Error(`${path}: missing; a PEFT adapter folder needs ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}`);
  }
  let config: PeftConfig;
  try {
    config = JSON.parse(text) as PeftConfig;
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
  const type = config.peft_type ?? 'LORA';
  if (type !== 'LORA') throw new Error(`${path}: peft_type is ${type}; loraforge reads LoRA, DoRA and EDoRA adapters (peft_type LORA)`);
  if (typeof config.r !== 'number' || typeof config.lora_alpha !== 'number') {
    throw new Error(`${path}: "r" and "lora_alpha" must be numbers`);
  }
  return config;
}

function groupAdapterKeys(file: SafetensorsFile): { keys: Map<string, ModuleKeys>; fullTensors: TensorInfo[] } {
  const keys = new Map<string, ModuleKeys>();
  const fullTensors: TensorInfo[] = [];
  for (const t of file.list()) {
    const name = t.name.startsWith(PEFT_PREFIX) ? t.name.slice(PEFT_PREFIX.length) : t.name;
    const match = LORA_KEYS.find(([suffix]) => name.endsWith(suffix));
    if (!match) {
      if (name.includes('.lora_')) {
        throw new Error(`${file.path}: tensor "${t.name}" looks like a LoRA tensor loraforge does not know (LoRA bias or a newer PEFT variant?)`);
      }
      fullTensors.push({ ...t, name });
      continue;
    }
    const [suffix, role] = match;
    const moduleName = name.slice(0, -suffix.length);
    const entry = keys.get(moduleName) ?? {};
    entry[role] = t;
    keys.set(moduleName, entry);
  }
  return { keys, fullTensors };
}

function describeModule(path: string, config: PeftConfig, name: string, k: ModuleKeys): LoraModuleInfo {
  const where = `${path}: module "${name}"`;
  let kind: LoraKind;
  let rank: number;
  let inFeatures: number;
  let outFeatures: number;
  if (k.A || k.B) {
    if (!k.A || !k.B) throw new Error(`${where} has lora_${k.A ? 'A' : 'B'} but no lora_${k.A ? 'B' : 'A'}: the adapter is incomplete`);
    if (k.A.shape.length !== 2 || k.B.shape.length !== 2) throw new Error(`${where}: lora_A and lora_B must be 2-D`);
    kind = 'linear';
    [rank, inFeatures] = k.A.shape;
    outFeatures = k.B.shape[0];
    if (k.B.shape[1] !== rank) {
      throw new Error(`${where}: lora_A is ${k.A.shape.join('×')} but lora_B is ${k.B.shape.join('×')}; their ranks differ`);
    }
  } else if (k.eA || k.eB) {
    if (!k.eA || !k.eB) throw new Error(`${where} has only one of lora_embedding_A / lora_embedding_B`);
    kind = 'embedding';
    // stored: A is r × vocab, B is hidden × r; the base weight is vocab × hidden
    rank = k.eA.shape[0];
    outFeatures = k.eA.shape[1];
    inFeatures = k.eB.shape[0];
    if (k.eB.shape[1] !== rank) throw new Error(`${where}: lora_embedding_A and lora_embedding_B ranks differ`);
  } else {
    throw new Error(`${where} has a magnitude or latent tensor but no LoRA factors`);
  }
  const magnitudeLength = kind === 'embedding' ? inFeatures : outFeatures;
  if (k.magnitude && k.magnitude.shape.reduce((a, b) => a * b, 1) !== magnitudeLength) {
    const per = kind === 'embedding' ? 'one per embedding dimension' : 'one per output row';
    throw new Error(`${where}: lora_magnitude_vector has ${k.magnitude.shape.join('×')} entries, expected ${magnitudeLength} (${per})`);
  }
  if (k.latent && (k.latent.shape[0] !== rank || k.latent.shape[1] !== rank)) {
    throw new Error(`${where}: lora_latent_mapping is ${k.latent.shape.join('×')}, expected ${rank}×${rank} (the rank of lora_A/lora_B)`);
  }
  const alpha = lookupPattern(config.alpha_pattern, name) ?? config.lora_alpha;
  return {
    name,
    kind,
    rank,
    inFeatures,
    outFeatures,
    alpha,
    scaling: loraScaling(alpha, rank, config.use_rslora === true),
    hasMagnitude: !!k.magnitude,
    hasLatent: !!k.latent,
  };
}

/** Loads every module of an adapter at once: for small adapters and tests. */
export async function readPeftAdapter(dir: string): Promise<{ config: PeftConfig; modules: LoraModule[] }> {
  const adapter = await openPeftAdapter(dir);
  try {
    const modules: LoraModule[] = [];
    for (const m of adapter.modules) modules.push(await adapter.load(m.name));
    return { config: adapter.config, modules };
  } finally {
    await adapter.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

export interface PeftWriterOptions {
  baseModel?: string;
  dtype?: FloatDType;
  useDora?: boolean;
  useRslora?: boolean;
  /** Extra fields for adapter_config.json (they never override the ones loraforge computes). */
  extraConfig?: Record<string, unknown>;
}

/** The rank_pattern / alpha_pattern key for a module: its path without a leading `model.`, which every PEFT version matches. */
export function patternKey(modulePath: string): string {
  return modulePath.startsWith('model.') ? modulePath.slice('model.'.length) : modulePath;
}

/** Last path component of a module (`q_proj`), which is what PEFT's target_modules lists. */
export function moduleSuffix(modulePath: string): string {
  return modulePath.slice(modulePath.lastIndexOf('.') + 1);
}

/**
 * Streams modules into `<dir>/adapter_model.safetensors` and writes `adapter_config.json` on finish.
 * The config's r / lora_alpha are the most common pair; every module that differs gets explicit
 * rank_pattern and alpha_pattern entries, so PEFT computes the right scale for each.
 */
export class PeftAdapterWriter {
  private readonly ranks = new Map<string, { rank: number; alpha: number; kind: LoraKind }>();
  private readonly saved: string[] = [];

  private constructor(
    private readonly dir: string,
    private readonly sink: SafetensorsSink,
    private readonly opts: PeftWriterOptions,
  ) {}

  static async create(dir: string, opts: PeftWriterOptions = {}): Promise<PeftAdapterWriter> {
    await mkdir(dir, { recursive: true });
    const sink = await createSafetensorsSink(dir, { baseName: 'adapter_model', dtype: opts.dtype ?? 'F32' });
    return new PeftAdapterWriter(dir, sink, opts);
  }

  async addModule(m: LoraModule): Promise<void> {
    if (this.ranks.has(m.name)) throw new Error(`adapter writer: module "${m.name}" added twice`);
    const r = m.A.rows;
    if (m.B.cols !== r) throw new Error(`adapter writer: module "${m.name}" has A ${m.A.rows}×${m.A.cols} and B ${m.B.rows}×${m.B.cols}`);
    const key = PEFT_PREFIX + m.name;
    const dtype = this.opts.dtype;
    if (m.kind === 'embedding') {
      await this.sink.add(`${key}.lora_embedding_A`, [r, m.B.rows], transpose(m.B).data, dtype);
      await this.sink.add(`${key}.lora_embedding_B`, [m.A.cols, r], transpose(m.A).data, dtype);
    } else {
      await this.sink.add(`${key}.lora_A.weight`, [r, m.A.cols], m.A.data, dtype);
      await this.sink.add(`${key}.lora_B.weight`, [m.B.rows, r], m.B.data, dtype);
    }
    // magnitude and latent stay f32: they are tiny and DoRA's normalisation is sensitive to them
    if (m.magnitude) await this.sink.add(`${key}.lora_magnitude_vector`, [m.magnitude.length], m.magnitude, 'F32');
    // the key EDoRA's reference code renames back to `.default_lora_latent_mapping.weight` on load
    if (m.latent) await this.sink.add(`${key}_lora_latent_mapping.weight`, [r, r], m.latent.data, 'F32');
    this.ranks.set(m.name, { rank: r, alpha: m.alpha, kind: m.kind });
  }

  /** A whole tensor saved with the adapter (PEFT modules_to_save), e.g. `lm_head.weight`. */
  async addFull(tensorName: string, shape: number[], data: Float32Array): Promise<void> {
    await this.sink.add(PEFT_PREFIX + tensorName, shape, data, this.opts.dtype);
    this.saved.push(tensorName.replace(/\.(weight|bias)$/, ''));
  }

  get moduleCount(): number {
    return this.ranks.size;
  }

  async finish(): Promise<void> {
    await this.sink.finish();
    await atomicWriteFile(join(this.dir, ADAPTER_CONFIG_FILE), JSON.stringify(this.buildConfig(), null, 2) + '\n');
  }

  abort(): Promise<void> {
    return this.sink.abort();
  }

  private buildConfig(): PeftConfig {
    const counts = new Map<string, number>();
    for (const { rank, alpha } of this.ranks.values()) {
      const k = `${rank}/${alpha}`;
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    // ties go to the pair seen first, so the config does not depend on Map internals
    let common = '0/0';
    let best = 0;
    for (const [k, n] of counts) if (n > best) [common, best] = [k, n];
    const [r, alpha] = common.split('/').map(Number);
    const rankPattern: Record<string, number> = {};
    const alphaPattern: Record<string, number> = {};
    for (const [name, m] of this.ranks) {
      if (m.rank !== r) rankPattern[patternKey(name)] = m.rank;
      if (m.alpha !== alpha) alphaPattern[patternKey(name)] = m.alpha;
    }
    const targets = [...new Set([...this.ranks.keys()].map(moduleSuffix))].sort();
    const saved = [...new Set(this.saved.map(moduleSuffix))].sort();
    return {
      ...this.opts.extraConfig,
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: this.opts.baseModel ?? null,
      r,
      lora_alpha: alpha,
      target_modules: targets,
      rank_pattern: rankPattern,
      alpha_pattern: alphaPattern,
      lora_dropout: 0,
      bias: 'none',
      fan_in_fan_out: false,
      use_rslora: this.opts.useRslora ?? false,
      use_dora: this.opts.useDora ?? false,
      modules_to_save: saved.length ? saved : null,
      inference_mode: true,
    };
  }
}
