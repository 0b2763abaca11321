/**
 * PEFT LoRA adapter folders: `adapter_config.json` + `adapter_model.safetensors`.
 *
 * In memory every module is kept in the orientation of the base weight it changes:
 * ΔW (out × in) = scaling · B (out × r) · A (r × in). PEFT stores embedding LoRA the other
 * way round (`lora_embedding_A` is r × vocab, `lora_embedding_B` is hidden × r, ΔWᵀ = B·A), so
 * reading and writing swap and transpose those, and nothing else in loraforge has to know.
 *
 * LoRA on an nn.Parameter (LoraConfig.target_parameters, PEFT ≥ 0.17; lora.ParamWrapper), used for
 * 3-D MoE expert stacks [E, ·, ·], is read as well; see "Expert stacks" below.
 */
import { access, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { matrix, transpose, type Matrix } from '../tensor/matrix.js';
import type { LowRank } from '../lowrank/low-rank.js';
import type { FloatDType, TensorInfo } from '../io/types.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { openSafetensors, createSafetensorsSink, type SafetensorsFile, type SafetensorsSink } from '../io/safetensors.js';
import { atomicWriteFile } from '../io/atomic.js';
import { BASE_LAYER, declarationOrder, isDownProjection, parametersTargetedOn, splitExpertFactors, wrapperPath, type ExpertLayout } from './expert-stack.js';
import { readJsonFile } from '../io/json-file.js';
import { noteInput } from '../io/inputs.js';
import { InputError } from '../errors.js';

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
/** PEFT prefixes every saved key with the wrapper's path to the base model. */
export const PEFT_PREFIX = 'base_model.model.';

export type LoraKind = 'linear' | 'embedding';

/** A LoRA module: its low-rank factors (in the base weight's orientation) and what PEFT stores beside them. */
export interface LoraModule extends LowRank {
  /** Module path in the base model, e.g. `model.layers.0.self_attn.q_proj` (no PEFT prefix, no `.weight`). */
  name: string;
  kind: LoraKind;
  alpha: number;
  /**
   * DoRA: the magnitude vector. Linear: one per output row of the base weight (`out`); embedding:
   * one per column (`in`, the embedding dim), since PEFT normalises the embedding weight column-wise.
   */
  magnitude?: Float32Array;
  /** EDoRA: the trained r × r latent R; ΔW = s·B·R·A. */
  latent?: Matrix;
  /** A conv LoRA (kohya/diffusers files): A is r × (in·kh·kw), and ΔW reshapes to out × in × kh × kw. */
  conv?: LoraConv;
}

/** A conv layer's kernel: [kh, kw] ([1, 1] for a 1×1 conv, still stored 4-D). */
export interface LoraConv {
  kernel: [number, number];
}

/** The parts of `adapter_config.json` loraforge reads; everything else is carried through untouched. */
export interface PeftConfig {
  peft_type?: string;
  r: number;
  lora_alpha: number;
  target_modules?: string[] | string | null;
  /** PEFT ≥ 0.17: parameters (not modules) given LoRA, e.g. `mlp.experts.gate_up_proj`; matched as path suffixes */
  target_parameters?: string[] | null;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  use_rslora?: boolean;
  use_dora?: boolean;
  modules_to_save?: string[] | null;
  base_model_name_or_path?: string | null;
  task_type?: string | null;
  [key: string]: unknown;
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
  return patternEntry(patterns, modulePath)?.[1];
}

/** The rank_pattern / alpha_pattern entry (key and value) lookupPattern uses for `modulePath`. */
function patternEntry(patterns: Record<string, number> | undefined, modulePath: string): [string, number] | undefined {
  if (!patterns) return undefined;
  for (const [key, value] of Object.entries(patterns)) {
    if (new RegExp(`^(.*\\.)?(${key})$`).test(modulePath)) return [key, value];
  }
  return undefined;
}

/**
 * Refuses a module whose stored rank is not the r its config gives it (rank_pattern entry, else
 * "r"): PEFT builds the layer from the config and fails to load such weights (size mismatch),
 * while computing with them would scale by alpha / (the wrong r).
 */
function checkConfiguredRank(where: string, config: PeftConfig, patternPath: string, stored: number, what: string, file: string): void {
  const entry = patternEntry(config.rank_pattern, patternPath);
  const r = entry ? entry[1] : config.r;
  if (stored === r) return;
  const source = entry ? `rank_pattern entry "${entry[0]}": ${r}` : `"r": ${r}`;
  throw new InputError(
    `${where}: ${ADAPTER_CONFIG_FILE} gives it ${source}, but ${what} (rank ${stored}); PEFT refuses to load such an adapter: ` +
      'the config does not belong to these weights; restore the adapter_config.json saved with them',
    { file },
  );
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
  /** set for a conv LoRA: then `inFeatures` is in·kh·kw */
  conv?: LoraConv;
  /**
   * Set when the module holds the LoRA of a targeted parameter (target_parameters), e.g. a 3-D
   * MoE expert stack. Then `name` is the PEFT wrapper path the factors are stored under,
   * `rank` their stored width r·E, `inFeatures`/`outFeatures` one expert's, and `alpha`/`scaling`
   * PEFT's per expert: ΔW_e (out × in) = scaling · B_e · A_e. Load it with loadExperts() or
   * loadExpertStack(); load() refuses it, since the stacked factors are not one LoRA.
   */
  experts?: LoraExpertsInfo;
}

/** A targeted parameter's LoRA as PEFT's ParamWrapper stores it. */
export interface LoraExpertsInfo {
  /** the base tensor's name, e.g. `model.layers.0.mlp.experts.gate_up_proj` */
  parameter: string;
  /** experts E (1 for a 2-D parameter) */
  count: number;
  /** PEFT's r for the parameter: directions per expert */
  rank: number;
}

/**
 * How a checkpoint stores a 3-D expert tensor: (E, out, in) for F.linear (transformers' default), or
 * (E, in, out) for x @ W (expert modules with is_transposed: gpt-oss, Llama 4). The adapter
 * file does not say; the base tensor's shape does (PeftAdapter.expertLayout).
 */
export type { ExpertLayout } from './expert-stack.js';

/** A targeted parameter's factors exactly as stored (PEFT ParamWrapper). */
export interface LoraExpertStack extends LoraExpertsInfo {
  name: string;
  alpha: number;
  scaling: number;
  /** (r·E) × in: expert e's directions are rows e·r … e·r + r − 1 */
  A: Matrix;
  /** out × (r·E): expert e's direction j is column j·E + e */
  B: Matrix;
}

/** A targeted parameter's LoRA split into one ordinary LoRA per expert. */
export interface LoraExpertsModule {
  /** PEFT wrapper path, as in LoraModuleInfo.name */
  name: string;
  parameter: string;
  alpha: number;
  /** PEFT's scale of every ΔW_e: alpha / r, or alpha / √r with rsLoRA */
  scaling: number;
  /** expert e's LoRA (named `<parameter>[e]`, A r × in, B out × r): ΔW_e = scaling · B · A, out × in */
  experts: LoraModule[];
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
    noteInput(dir);
    const configPath = join(dir, ADAPTER_CONFIG_FILE);
    const config = await readAdapterConfig(configPath);
    const weightsPath = join(dir, ADAPTER_WEIGHTS_FILE);
    const missing = await missingAdapterWeights(dir);
    if (missing) throw missing;
    const targets = targetParameters(configPath, config);
    const file = await openSafetensors(weightsPath);
    try {
      const { keys, fullTensors } = groupAdapterKeys(file);
      const modules = [...keys].map(([name, k]) => describeModule(weightsPath, config, name, k, targetedParameter(weightsPath, config, name, targets)));
      // saved whole tensors (modules_to_save) alone are an update; nothing at all is not
      if (modules.length === 0 && fullTensors.length === 0) {
        throw new Error(`${weightsPath} holds no tensors (no lora_A/lora_B, lora_embedding_A/B or saved modules): there is no update to use; is this the right adapter?`);
      }
      if (config.use_dora === true) checkDoraModules(dir, modules);
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
    if (info.experts) {
      const { parameter, count } = info.experts;
      throw new Error(
        `${this.file.path}: module "${name}" holds the LoRA of parameter "${parameter}" (${count} experts, PEFT target_parameters), ` +
          'not one LoRA; load it with loadExperts() or loadExpertStack()',
      );
    }
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

  /** A targeted parameter's factors as stored: (r·E) × in and out × (r·E). */
  async loadExpertStack(name: string): Promise<LoraExpertStack> {
    const info = this.module(name);
    if (!info.experts) throw new Error(`${this.file.path}: module "${name}" is an ordinary LoRA module, not a targeted parameter; load it with load()`);
    const k = this.keys.get(name)!;
    const A = matrix(info.rank, info.inFeatures, await this.file.read(k.A!.name));
    const B = matrix(info.outFeatures, info.rank, await this.file.read(k.B!.name));
    return { name, ...info.experts, alpha: info.alpha, scaling: info.scaling, A, B };
  }

  /** A targeted parameter's LoRA as one ordinary LoRA per expert, in the weight orientation (out × in). */
  async loadExperts(name: string): Promise<LoraExpertsModule> {
    const stack = await this.loadExpertStack(name);
    return { name, parameter: stack.parameter, alpha: stack.alpha, scaling: stack.scaling, experts: splitExpertStack(stack) };
  }

  /**
   * Which layout the base tensor `baseShape` of this module's parameter has, from its shape. When
   * every expert is square the shape cannot tell; `preferred` decides then (the model's
   * is_transposed, e.g. moe.ts expertLayout), and without it this throws.
   */
  expertLayout(name: string, baseShape: readonly number[], preferred?: ExpertLayout): ExpertLayout {
    const info = this.module(name);
    if (!info.experts) throw new Error(`${this.file.path}: module "${name}" is an ordinary LoRA module, not a targeted parameter`);
    const { parameter, count } = info.experts;
    const { outFeatures: out, inFeatures: inF } = info;
    const where = `${this.file.path}: module "${name}" (parameter "${parameter}")`;
    if (baseShape.length === 2 && count === 1 && baseShape[0] === out && baseShape[1] === inF) return 'out-in';
    const outIn = baseShape.length === 3 && baseShape[0] === count && baseShape[1] === out && baseShape[2] === inF;
    const inOut = baseShape.length === 3 && baseShape[0] === count && baseShape[1] === inF && baseShape[2] === out;
    if (outIn && inOut) {
      if (preferred) return preferred;
      throw new Error(
        `${where}: each expert is ${out}×${inF}, so the base tensor's shape cannot tell (experts, out, in) from (experts, in, out); ` +
          'pass the layout (gpt-oss and Llama 4 store (experts, in, out))',
      );
    }
    if (outIn) return 'out-in';
    if (inOut) return 'in-out';
    throw new Error(
      `${where}: the base tensor is ${baseShape.join('×')}, but the adapter holds ${count} experts of ${out}×${inF} (out × in), ` +
        `so it fits neither ${count}×${out}×${inF} nor ${count}×${inF}×${out}; is this the adapter's base model?`,
    );
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

/**
 * Why `dir` cannot be read as an adapter when adapter_model.safetensors is missing, or undefined
 * when it is there. A PyTorch adapter_model.bin is a pickle (it can run code when loaded), so it is
 * not read: the message gives the one-line conversion.
 */
export async function missingAdapterWeights(dir: string): Promise<Error | undefined> {
  if (await access(join(dir, ADAPTER_WEIGHTS_FILE)).then(() => true, () => false)) return undefined;
  const hasBin = await access(join(dir, 'adapter_model.bin')).then(() => true, () => false);
  return new Error(
    hasBin
      ? `${dir}: only adapter_model.bin (a PyTorch pickle) is present and loraforge reads only ${ADAPTER_WEIGHTS_FILE}; convert it in Python with: ` +
          `python -c "import torch; from safetensors.torch import save_file; save_file(torch.load('adapter_model.bin', map_location='cpu'), '${ADAPTER_WEIGHTS_FILE}')"`
      : `${dir}: no ${ADAPTER_WEIGHTS_FILE}; is this a PEFT adapter folder?`,
  );
}

async function readAdapterConfig(path: string): Promise<PeftConfig> {
  let config: PeftConfig;
  try {
    config = (await readJsonFile(path)) as PeftConfig;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    throw new Error(`${path}: missing; a PEFT adapter folder needs ${ADAPTER_CONFIG_FILE} and ${ADAPTER_WEIGHTS_FILE}`);
  }
  const type = config.peft_type ?? 'LORA';
  if (type !== 'LORA') throw new Error(`${path}: peft_type is ${type}; loraforge reads LoRA, DoRA and EDoRA adapters (peft_type LORA)`);
  if (typeof config.r !== 'number' || typeof config.lora_alpha !== 'number') {
    throw new Error(`${path}: "r" and "lora_alpha" must be numbers`);
  }
  // PEFT refuses r ≤ 0 ("r should be a positive integer"): such a config describes no update
  if (!Number.isInteger(config.r) || config.r <= 0) throw new Error(`${path}: "r" is ${config.r}; a LoRA rank must be a positive integer`);
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

// ---------------------------------------------------------------------------------------------
// Expert stacks: LoRA on parameters (target_parameters, PEFT lora.ParamWrapper)
//
// PEFT wraps the module holding each targeted parameter in a ParamWrapper; several targeted
// parameters of one module nest (expert-stack.ts: the first-declared one innermost, under
// `<module>.base_layer`, for two). For a 3-D parameter with E experts
// and rank r, lora_A is (r·E) × in and lora_B out × (r·E), and expert e's ΔW (out × in) is
// scaling · Σ_j B[:, j·E + e] · A[e·r + j, :] (A read as [E, r, in], B as [out, r, E]); in and out
// are the expert's real input and output whichever way the base tensor stores it (PEFT ≥ 0.19.1;
// 0.17–0.18 assumed (E, in, out) for every 3-D parameter). rank_pattern / alpha_pattern are matched
// against the parameter's path, and the scale is alpha / r (or alpha / √r), r per expert.
// ---------------------------------------------------------------------------------------------

function targetParameters(configPath: string, config: PeftConfig): string[] {
  const t = config.target_parameters;
  if (t === undefined || t === null) return [];
  if (!Array.isArray(t) || t.some((x) => typeof x !== 'string')) {
    throw new Error(`${configPath}: "target_parameters" must be a list of parameter names such as "mlp.experts.gate_up_proj"`);
  }
  return t;
}

/** PEFT's target_modules test for a module path: a listed name equal to it or ending it at a dot, or a full-match regex. */
function matchesTargetModules(targets: PeftConfig['target_modules'], module: string): boolean {
  if (typeof targets === 'string') return targets !== 'all-linear' && new RegExp(`^(?:${targets})$`).test(module);
  return (targets ?? []).some((t) => module === t || module.endsWith(`.${t}`));
}

/**
 * The targeted parameters of one module, innermost wrapper first (declarationOrder), refused where
 * that order is not known: loraforge knows it for one gate/up and one down projection only.
 */
function nestingOrder(path: string, module: string, params: string[]): string[] {
  if (params.length === 1) return params;
  const down = params.filter(isDownProjection);
  if (down.length > 1 || params.length - down.length > 1) {
    throw new Error(
      `${path}: target_parameters selects ${params.join(', ')} of module "${module}"; PEFT nests their LoRA wrappers in the order the model ` +
        'declares those parameters, which the adapter does not record (loraforge knows it only for one gate/up and one down projection)',
    );
  }
  return declarationOrder(params);
}

/**
 * The parameter whose LoRA is saved under `wrapper`, or undefined for an ordinary LoRA module.
 * A module also matched by target_modules is ordinary: PEFT refuses to wrap a parameter of a
 * module that target_modules already gave LoRA.
 */
function targetedParameter(path: string, config: PeftConfig, wrapper: string, targets: readonly string[]): string | undefined {
  if (!targets.length) return undefined;
  let module = wrapper;
  let depth = 0;
  while (module.endsWith(BASE_LAYER)) {
    module = module.slice(0, -BASE_LAYER.length);
    depth++;
  }
  const params = parametersTargetedOn(module, targets);
  if (!params.length || (depth === 0 && matchesTargetModules(config.target_modules, module))) return undefined;
  const order = nestingOrder(path, module, params);
  if (depth >= order.length) {
    throw new Error(
      `${path}: module "${wrapper}" is nested ${depth} wrapper(s) deep, but target_parameters selects only ${order.join(', ')} of "${module}", ` +
        `so PEFT would look for these factors under "${module}${BASE_LAYER.repeat(order.length - 1)}" and ignore them; ` +
        'if a parameter of that module was left out of target_parameters (for instance because it did not change), list it again: PEFT then nests ' +
        'the same way and leaves its LoRA at zero',
    );
  }
  return `${module}.${order[order.length - 1 - depth]}`;
}

/** The per-expert LoRAs of a stack: A_e = rows e·r …, B_e = columns e, E + e, 2E + e, …. */
function splitExpertStack(stack: LoraExpertStack): LoraModule[] {
  return splitExpertFactors(stack.A, stack.B, stack.count).map(({ A, B }, e) => ({ name: `${stack.parameter}[${e}]`, kind: 'linear', A, B, alpha: stack.alpha }));
}

/**
 * The whole ΔW of a targeted parameter as the base tensor stores it: [E, out, in] for 'out-in',
 * [E, in, out] for 'in-out' (each slice the transpose of ΔW_e).
 */
export async function expertDeltaTensor(backend: LinalgBackend, m: LoraExpertsModule, layout: ExpertLayout): Promise<Float32Array> {
  const first = m.experts[0];
  const size = first.B.rows * first.A.cols;
  const out = new Float32Array(m.experts.length * size);
  for (let e = 0; e < m.experts.length; e++) {
    const { A, B } = m.experts[e];
    // (B·A)ᵀ = Aᵀ·Bᵀ gives the in × out slice directly
    const d = layout === 'out-in' ? await backend.gemm(B, A) : await backend.gemm(A, B, { transA: true, transB: true });
    for (let i = 0; i < size; i++) out[e * size + i] = m.scaling * d.data[i];
  }
  return out;
}

/**
 * use_dora: true needs a magnitude vector on every module (PEFT would initialise a missing one from
 * the base weight's norms, a different adapter than the one trained), and is not defined on expert
 * stacks (PEFT's ParamWrapper refuses DoRA). Refused here so that no command reads it as plain LoRA.
 */
function checkDoraModules(dir: string, modules: readonly LoraModuleInfo[]): void {
  const stack = modules.find((m) => m.experts);
  if (stack) {
    const { parameter, count } = stack.experts!;
    throw new Error(
      `${dir}: adapter_config.json has use_dora: true, but module "${stack.name}" holds the LoRA of parameter "${parameter}" ` +
        `(${count} experts, target_parameters); DoRA/EDoRA is not defined on expert stacks (PEFT refuses use_dora there too). ` +
        'Train the expert parameters with plain LoRA, or set use_dora to false if the adapter has no magnitude vectors',
    );
  }
  const bare = modules.find((m) => !m.hasMagnitude);
  if (bare) {
    throw new Error(
      `${dir}: adapter_config.json has use_dora: true but module "${bare.name}" has no tensor "${PEFT_PREFIX}${bare.name}.lora_magnitude_vector": ` +
        'the adapter is incomplete (save it again) or not DoRA (set use_dora to false)',
    );
  }
}

function describeModule(path: string, config: PeftConfig, name: string, k: ModuleKeys, parameter: string | undefined): LoraModuleInfo {
  const where = `${path}: module "${name}"`;
  const at = { file: path };
  let kind: LoraKind;
  let rank: number;
  let inFeatures: number;
  let outFeatures: number;
  if (k.A || k.B) {
    if (!k.A || !k.B) throw new InputError(`${where} has lora_${k.A ? 'A' : 'B'} but no lora_${k.A ? 'B' : 'A'}: the adapter is incomplete`, at);
    if (k.A.shape.length !== 2 || k.B.shape.length !== 2) throw new InputError(`${where}: lora_A and lora_B must be 2-D`, at);
    kind = 'linear';
    [rank, inFeatures] = k.A.shape;
    outFeatures = k.B.shape[0];
    if (k.B.shape[1] !== rank) {
      throw new InputError(`${where}: lora_A is ${k.A.shape.join('×')} but lora_B is ${k.B.shape.join('×')}; their ranks differ`, at);
    }
  } else if (k.eA || k.eB) {
    if (!k.eA || !k.eB) throw new InputError(`${where} has only one of lora_embedding_A / lora_embedding_B`, at);
    kind = 'embedding';
    // stored: A is r × vocab, B is hidden × r; the base weight is vocab × hidden
    rank = k.eA.shape[0];
    outFeatures = k.eA.shape[1];
    inFeatures = k.eB.shape[0];
    if (k.eB.shape[1] !== rank) throw new InputError(`${where}: lora_embedding_A and lora_embedding_B ranks differ`, at);
  } else {
    throw new InputError(`${where} has a magnitude or latent tensor but no LoRA factors`, at);
  }
  const magnitudeLength = kind === 'embedding' ? inFeatures : outFeatures;
  if (k.magnitude && k.magnitude.shape.reduce((a, b) => a * b, 1) !== magnitudeLength) {
    const per = kind === 'embedding' ? 'one per embedding dimension' : 'one per output row';
    throw new InputError(`${where}: lora_magnitude_vector has ${k.magnitude.shape.join('×')} entries, expected ${magnitudeLength} (${per})`, at);
  }
  if (k.latent && (k.latent.shape[0] !== rank || k.latent.shape[1] !== rank)) {
    throw new InputError(`${where}: lora_latent_mapping is ${k.latent.shape.join('×')}, expected ${rank}×${rank} (the rank of lora_A/lora_B)`, at);
  }
  if (parameter !== undefined) return describeWrapper(where, config, { name, kind, rank, inFeatures, outFeatures }, k, parameter);
  const factor = kind === 'embedding' ? `lora_embedding_A is ${k.eA!.shape.join('×')}` : `lora_A is ${k.A!.shape.join('×')}`;
  checkConfiguredRank(where, config, name, rank, factor, path);
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

/** A module that holds a targeted parameter's LoRA: PEFT's rank and scale come from the parameter's path. */
function describeWrapper(
  where: string,
  config: PeftConfig,
  stored: Pick<LoraModuleInfo, 'name' | 'kind' | 'rank' | 'inFeatures' | 'outFeatures'>,
  k: ModuleKeys,
  parameter: string,
): LoraModuleInfo {
  const what = `${where} holds the LoRA of target parameter "${parameter}"`;
  if (stored.kind !== 'linear' || k.magnitude || k.latent) {
    throw new Error(`${what}, but has ${stored.kind === 'embedding' ? 'embedding LoRA' : 'DoRA or latent'} tensors; PEFT's ParamWrapper takes plain LoRA only`);
  }
  const r = lookupPattern(config.rank_pattern, parameter) ?? config.r;
  if (!Number.isInteger(r) || r <= 0 || stored.rank === 0 || stored.rank % r !== 0) {
    throw new Error(
      `${what}: lora_A has ${stored.rank} rows, which is not r rows per expert for its rank r = ${r} (from rank_pattern or r in ${ADAPTER_CONFIG_FILE}); ` +
        'the config does not belong to these weights',
    );
  }
  const count = stored.rank / r;
  const alpha = lookupPattern(config.alpha_pattern, parameter) ?? config.lora_alpha;
  const info: LoraModuleInfo = { ...stored, alpha, scaling: loraScaling(alpha, r, config.use_rslora === true), hasMagnitude: false, hasLatent: false };
  // a 2-D `weight` is PEFT's ordinary LoRA in all but name: keep it an ordinary module
  if (count === 1 && parameter === `${stored.name}.weight`) return info;
  return { ...info, experts: { parameter, count, rank: r } };
}

/** Loads every module of an adapter at once: for small adapters and tests. Targeted parameters come split per expert. */
export async function readPeftAdapter(dir: string): Promise<{ config: PeftConfig; modules: LoraModule[]; experts: LoraExpertsModule[] }> {
  const adapter = await openPeftAdapter(dir);
  try {
    const modules: LoraModule[] = [];
    const experts: LoraExpertsModule[] = [];
    for (const m of adapter.modules) {
      if (m.experts) experts.push(await adapter.loadExperts(m.name));
      else modules.push(await adapter.load(m.name));
    }
    return { config: adapter.config, modules, experts };
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
  /** The parameters that may get expert stacks; without them addExpertStack refuses. */
  experts?: ExpertTargets;
  /**
   * An adapter of a diffusion model's component (a UNet, a text encoder) from a LoRA file:
   * task_type null (no PEFT task wrapper fits it) and target_modules the full module paths, as
   * diffusers derives them from a state dict, so no other module with the same last name is wrapped.
   */
  diffusionComponent?: boolean;
}

/**
 * The parameters a run may write expert stacks for, known before the first one: they decide where
 * each stack is saved (the nesting, expert-stack.ts), before it is known which of them will change.
 */
export interface ExpertTargets {
  /** target_parameters entries as PEFT matches them: parameter paths, or suffixes of paths */
  parameters: readonly string[];
  /**
   * Two cases, because target_parameters decides where PEFT nests each stack's wrapper:
   * 'new' (an adapter made here): `parameters` are the full paths of the expert tensors that may
   * get a stack, and target_parameters is made from them: those of modules that got a stack,
   * sorted. A module's unchanged parameters stay listed, because its stacks were nested counting
   * them (PEFT wraps them too, with zero factors: a missing-keys warning, no effect); a module
   * with no stack is left out.
   * 'kept' (an adapter rewritten from an input adapter): `parameters` are the input's
   * target_parameters, and the config keeps them as they were (from extraConfig): the stacks are
   * saved under the input's nesting, which a different list would move.
   */
  source: 'new' | 'kept';
}

/** An expert stack to write: a targeted parameter's LoRA in PEFT's stacked layout (stackExpertFactors). */
export interface ExpertStackUpdate {
  /** the base tensor's name, e.g. `model.layers.0.mlp.experts.gate_up_proj` */
  parameter: string;
  /** experts E */
  count: number;
  /** (r·E) × in */
  A: Matrix;
  /** out × (r·E) */
  B: Matrix;
  /** PEFT's alpha for the parameter: every expert's scale is alpha / r */
  alpha: number;
}

/** The rank_pattern / alpha_pattern key for a module: its path without a leading `model.`, which every PEFT version matches. */
export function patternKey(modulePath: string): string {
  return modulePath.startsWith('model.') ? modulePath.slice('model.'.length) : modulePath;
}

/** Last path component of a module (`q_proj`), which is what PEFT's target_modules lists. */
export function moduleSuffix(modulePath: string): string {
  return modulePath.slice(modulePath.lastIndexOf('.') + 1);
}

/** One written update, keyed by the module path its factors are saved under. */
interface WrittenUpdate {
  /** stored rank (r·E for a stack) */
  rank: number;
  alpha: number;
  kind: LoraKind;
  /** set for an expert stack: its parameter and PEFT's r (per expert) */
  stack?: { parameter: string; rank: number };
}

/**
 * Streams modules and expert stacks into `<dir>/adapter_model.safetensors` and writes
 * `adapter_config.json` on finish. The config's r / lora_alpha are the most common pair; every
 * update that differs gets explicit rank_pattern and alpha_pattern entries (keyed by a plain
 * module's path, or by a stack's parameter path, which is what PEFT matches), so PEFT computes the
 * right scale for each. target_modules lists the plain modules, target_parameters the stacks'
 * parameters (ExpertTargets).
 */
export class PeftAdapterWriter {
  private readonly updates = new Map<string, WrittenUpdate>();
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
    this.checkNew(m.name);
    const r = m.A.rows;
    if (m.B.cols !== r) throw new Error(`adapter writer: module "${m.name}" has A ${m.A.rows}×${m.A.cols} and B ${m.B.rows}×${m.B.cols}`);
    const key = PEFT_PREFIX + m.name;
    const dtype = this.opts.dtype;
    if (m.kind === 'embedding') {
      await this.sink.add(`${key}.lora_embedding_A`, [r, m.B.rows], transpose(m.B).data, dtype);
      await this.sink.add(`${key}.lora_embedding_B`, [m.A.cols, r], transpose(m.A).data, dtype);
    } else {
      await this.addFactors(m.name, m.A, m.B, m.conv?.kernel);
    }
    // magnitude and latent stay f32: they are tiny and DoRA's normalisation is sensitive to them
    if (m.magnitude) await this.sink.add(`${key}.lora_magnitude_vector`, [m.magnitude.length], m.magnitude, 'F32');
    // the key EDoRA's reference code renames back to `.default_lora_latent_mapping.weight` on load
    if (m.latent) await this.sink.add(`${key}_lora_latent_mapping.weight`, [r, r], m.latent.data, 'F32');
    this.updates.set(m.name, { rank: r, alpha: m.alpha, kind: m.kind });
  }

  /** An expert stack, saved under the module path PEFT nests it at; returns that path. */
  async addExpertStack(s: ExpertStackUpdate): Promise<string> {
    const targets = this.opts.experts;
    const module = s.parameter.slice(0, s.parameter.lastIndexOf('.'));
    const param = s.parameter.slice(module.length + 1);
    const params = targets ? parametersTargetedOn(module, targets.parameters) : [];
    if (!params.includes(param)) throw new Error(`internal error: adapter writer: expert stack "${s.parameter}" was not declared in its experts option; please report it`);
    const rank = s.A.rows / s.count;
    if (!Number.isInteger(rank) || s.B.cols !== s.A.rows) {
      throw new Error(`adapter writer: expert stack "${s.parameter}" has A ${s.A.rows}×${s.A.cols} and B ${s.B.rows}×${s.B.cols}, not r rows per expert for ${s.count} experts`);
    }
    const key = wrapperPath(module, params, param);
    this.checkNew(key);
    await this.addFactors(key, s.A, s.B);
    this.updates.set(key, { rank: s.A.rows, alpha: s.alpha, kind: 'linear', stack: { parameter: s.parameter, rank } });
    return key;
  }

  /** A whole tensor saved with the adapter (PEFT modules_to_save), e.g. `lm_head.weight`. */
  async addFull(tensorName: string, shape: number[], data: Float32Array): Promise<void> {
    await this.sink.add(PEFT_PREFIX + tensorName, shape, data, this.opts.dtype);
    this.saved.push(tensorName.replace(/\.(weight|bias)$/, ''));
  }

  get moduleCount(): number {
    return this.updates.size;
  }

  async finish(): Promise<void> {
    await this.sink.finish();
    await atomicWriteFile(join(this.dir, ADAPTER_CONFIG_FILE), JSON.stringify(this.buildConfig(), null, 2) + '\n');
  }

  abort(): Promise<void> {
    return this.sink.abort();
  }

  private checkNew(key: string): void {
    if (this.updates.has(key)) throw new Error(`adapter writer: module "${key}" added twice`);
  }

  /** A conv LoRA's factors are PEFT's Conv2d weights: lora_A r × in × kh × kw, lora_B out × r × 1 × 1. */
  private async addFactors(name: string, A: Matrix, B: Matrix, kernel?: readonly [number, number]): Promise<void> {
    const key = PEFT_PREFIX + name;
    const aShape = kernel ? [A.rows, A.cols / (kernel[0] * kernel[1]), ...kernel] : [A.rows, A.cols];
    await this.sink.add(`${key}.lora_A.weight`, aShape, A.data, this.opts.dtype);
    await this.sink.add(`${key}.lora_B.weight`, kernel ? [B.rows, B.cols, 1, 1] : [B.rows, B.cols], B.data, this.opts.dtype);
  }

  private buildConfig(): PeftConfig {
    // PEFT's r for a stack is per expert (scale alpha / r), so that is the rank it counts at
    const updates = [...this.updates].map(([name, u]) => ({
      path: u.stack?.parameter ?? name,
      rank: u.stack?.rank ?? u.rank,
      alpha: u.alpha,
      stack: u.stack !== undefined,
    }));
    const counts = new Map<string, number>();
    for (const { rank, alpha } of updates) {
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
    for (const u of updates) {
      if (u.rank !== r) rankPattern[patternKey(u.path)] = u.rank;
      if (u.alpha !== alpha) alphaPattern[patternKey(u.path)] = u.alpha;
    }
    const targetName = this.opts.diffusionComponent ? (path: string) => path : moduleSuffix;
    const targets = [...new Set(updates.filter((u) => !u.stack).map((u) => targetName(u.path)))].sort();
    const saved = [...new Set(this.saved.map(moduleSuffix))].sort();
    const targetParameters = this.opts.experts?.source === 'new' ? this.newTargetParameters() : undefined;
    return {
      ...this.opts.extraConfig,
      peft_type: 'LORA',
      task_type: this.opts.diffusionComponent ? null : 'CAUSAL_LM',
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
      ...(targetParameters ? { target_parameters: targetParameters } : {}),
    };
  }

  /** A new adapter's target_parameters: the declared parameters of the modules that got a stack (none written: no list). */
  private newTargetParameters(): string[] | undefined {
    const modules = new Set<string>();
    for (const u of this.updates.values()) if (u.stack) modules.add(u.stack.parameter.slice(0, u.stack.parameter.lastIndexOf('.')));
    if (!modules.size) return undefined;
    const listed = this.opts.experts!.parameters.filter((p) => modules.has(p.slice(0, p.lastIndexOf('.'))));
    return [...new Set(listed)].sort();
  }
}
