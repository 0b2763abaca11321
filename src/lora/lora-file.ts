/**
 * Reading a kohya or diffusers LoRA `.safetensors` file (layouts and naming: lora-file-format.ts)
 * with the reading surface merge-adapters uses from PeftAdapter: modules listed at once, each
 * loaded on demand in the base weight's orientation, A r × in (a conv's r × (in·kh·kw)), B out × r.
 */
import { stat } from 'node:fs/promises';
import { matrix } from '../tensor/matrix.js';
import type { TensorInfo } from '../io/types.js';
import { openSafetensors, type SafetensorsFile } from '../io/safetensors.js';
import { noteInput } from '../io/inputs.js';
import { InputError } from '../errors.js';
import { assertFinite } from '../tensor/finite.js';
import { isFloatDType } from '../tensor/dtype.js';
import { loraScaling, lookupPattern, type LoraConv, type LoraModule, type LoraModuleInfo } from './adapter.js';
import { detectLoraFileFormat, parseLoraKey, type LoraFileFormat, type LoraKeyRole } from './lora-file-format.js';
import { parseJsonText } from '../io/json-file.js';

/** The header key under which diffusers stores the PEFT LoraConfig of the saved adapter(s). */
export const DIFFUSERS_METADATA_KEY = 'lora_adapter_metadata';

type ModuleKeys = Partial<Record<LoraKeyRole, TensorInfo>>;

/** The parts of a PEFT config diffusers' header carries that change a module's scale. */
interface HeaderConfig {
  lora_alpha?: number;
  alpha_pattern?: Record<string, number>;
  use_rslora?: boolean;
}

export class LoraFile {
  /** no saved whole tensors in these formats; kept so merge-adapters treats every input alike */
  readonly fullTensors: TensorInfo[] = [];

  private constructor(
    readonly path: string,
    readonly format: LoraFileFormat,
    /** the safetensors `__metadata__` (kohya's ss_* training facts, diffusers' adapter config) */
    readonly metadata: Record<string, string>,
    readonly modules: LoraModuleInfo[],
    private readonly keys: Map<string, ModuleKeys>,
    private readonly file: SafetensorsFile,
  ) {}

  /** The path, for messages written for PEFT folders (`adapter.dir`). */
  get dir(): string {
    return this.path;
  }

  static async open(path: string): Promise<LoraFile> {
    noteInput(path);
    const file = await openSafetensors(path);
    try {
      const format = detectLoraFileFormat(path, file.list().map((t) => t.name));
      const keys = new Map<string, ModuleKeys>();
      for (const t of file.list()) {
        const { stem, role } = parseLoraKey(format, t.name)!;
        const k = keys.get(stem) ?? {};
        if (k[role]) throw new InputError(`${path}: module "${stem}" has two ${role} tensors ("${k[role]!.name}", "${t.name}")`, { file: path, tensor: t.name });
        k[role] = t;
        keys.set(stem, k);
      }
      const header = format === 'diffusers' ? headerConfigs(path, file.metadata) : undefined;
      const modules: LoraModuleInfo[] = [];
      for (const [stem, k] of keys) modules.push(await describe(file, format, stem, k, header));
      return new LoraFile(path, format, file.metadata, modules, keys, file);
    } catch (err) {
      await file.close();
      throw err;
    }
  }

  module(name: string): LoraModuleInfo {
    const info = this.modules.find((m) => m.name === name);
    if (!info) throw new Error(`${this.path}: LoRA file has no module "${name}"`);
    return info;
  }

  /** One module's factors (NaN/±Inf refused by the reader, naming the file and tensor). */
  async load(name: string): Promise<LoraModule> {
    const info = this.module(name);
    const k = this.keys.get(name)!;
    const A = matrix(info.rank, info.inFeatures, await this.file.read(k.down!.name));
    const B = matrix(info.outFeatures, info.rank, await this.file.read(k.up!.name));
    const m: LoraModule = { name, kind: 'linear', A, B, alpha: info.alpha };
    if (info.conv) m.conv = info.conv;
    return m;
  }

  close(): Promise<void> {
    return this.file.close();
  }
}

/** Whether `path` names a LoRA single file (an existing `.safetensors` file) rather than a PEFT folder. */
export async function isLoraFile(path: string): Promise<boolean> {
  return /\.safetensors$/i.test(path) && (await stat(path).catch(() => undefined))?.isFile() === true;
}

export function openLoraFile(path: string): Promise<LoraFile> {
  return LoraFile.open(path);
}

/** A module's shape, rank and scale from its tensors' headers (and its alpha, a single value). */
async function describe(file: SafetensorsFile, format: LoraFileFormat, stem: string, k: ModuleKeys, header: HeaderLookup | undefined): Promise<LoraModuleInfo> {
  const where = `${file.path}: module "${stem}"`;
  const at = { file: file.path, tensor: (k.down ?? k.up ?? k.alpha)!.name };
  if (!k.down || !k.up) {
    throw new InputError(`${where} has no ${k.down ? 'up' : 'down'} factor (only ${Object.keys(k).join(', ')}): the file is incomplete`, at);
  }
  const down = k.down.shape;
  const up = k.up.shape;
  const conv = down.length === 4 && up.length === 4 && up[2] === 1 && up[3] === 1;
  if (!conv && !(down.length === 2 && up.length === 2)) {
    throw new InputError(`${where}: down ${down.join('×')} and up ${up.join('×')} are neither a linear LoRA (2-D) nor a conv LoRA (r×in×kh×kw and out×r×1×1)`, at);
  }
  const rank = down[0];
  if (up[1] !== rank || rank === 0) throw new InputError(`${where}: down has rank ${rank} but up has ${up[1]} columns`, at);
  const inFeatures = conv ? down[1] * down[2] * down[3] : down[1];
  let alpha = k.alpha ? await readScalar(file, k.alpha) : undefined;
  // kohya's LoRAModule: no alpha, or 0, means alpha = r (scale 1)
  if (format === 'kohya' && !alpha) alpha = rank;
  const config = header?.(stem);
  alpha ??= lookupPattern(config?.alpha_pattern, stem.slice(stem.indexOf('.') + 1)) ?? config?.lora_alpha ?? rank;
  const info: LoraModuleInfo = {
    name: stem,
    kind: 'linear',
    rank,
    inFeatures,
    outFeatures: up[0],
    alpha,
    scaling: loraScaling(alpha, rank, config?.use_rslora === true),
    hasMagnitude: false,
    hasLatent: false,
  };
  if (conv) info.conv = { kernel: [down[2], down[3]] } satisfies LoraConv;
  return info;
}

/** A 0-d (or 1-element) tensor's value: float dtypes through the checked reader; kohya's svd merge writes I64. */
async function readScalar(file: SafetensorsFile, t: TensorInfo): Promise<number> {
  const where = `${file.path}: tensor "${t.name}"`;
  if (t.shape.reduce((a, b) => a * b, 1) !== 1) throw new InputError(`${where} has shape ${t.shape.join('×')}; alpha is one value`, { file: file.path, tensor: t.name });
  if (isFloatDType(t.dtype)) return (await file.read(t.name))[0];
  const raw = await file.readRaw(t.name);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const value = t.dtype === 'I64' ? Number(view.getBigInt64(0, true)) : t.dtype === 'I32' ? view.getInt32(0, true) : t.dtype === 'F64' ? view.getFloat64(0, true) : undefined;
  if (value === undefined) throw new InputError(`${where} has dtype ${t.dtype}; alpha must be a float or integer`, { file: file.path, tensor: t.name });
  assertFinite(Float32Array.of(value), where, { file: file.path, tensor: t.name });
  return value;
}

type HeaderLookup = (stem: string) => HeaderConfig | undefined;

/**
 * diffusers' stored config: the whole pipeline's, with each component's keys prefixed
 * (`unet.lora_alpha`), or one model's, unprefixed. Without it: undefined (alpha = r).
 */
function headerConfigs(path: string, metadata: Record<string, string>): HeaderLookup | undefined {
  const text = metadata[DIFFUSERS_METADATA_KEY];
  if (text === undefined) return undefined;
  let raw: unknown;
  try {
    raw = parseJsonText(path, text);
  } catch {
    throw new InputError(`${path}: header entry "${DIFFUSERS_METADATA_KEY}" is not valid JSON; remove it or restore the file`, { file: path });
  }
  if (typeof raw !== 'object' || raw === null) throw new InputError(`${path}: header entry "${DIFFUSERS_METADATA_KEY}" is not a JSON object`, { file: path });
  const all = raw as Record<string, unknown>;
  return (stem) => {
    const prefix = stem.slice(0, stem.indexOf('.') + 1);
    const own = Object.entries(all).filter(([key]) => key.startsWith(prefix));
    const config = (own.length ? Object.fromEntries(own.map(([key, v]) => [key.slice(prefix.length), v])) : all) as HeaderConfig;
    return typeof config.lora_alpha === 'number' ? config : undefined;
  };
}
