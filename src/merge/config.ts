/**
 * mergekit-style merge configuration: YAML (or an equivalent plain object) checked and turned into
 * a typed MergeConfig. The subset read here:
 *
 *   merge_method: ties                  # see methods.ts
 *   base_model: ./base                  # a local folder
 *   models:                             # either models ...
 *     - model: ./a
 *       parameters: {weight: 0.5, density: [0.2, 0.8]}
 *   slices:                             # ... or slices (exactly one of the two)
 *     - sources:
 *         - model: ./a
 *           layer_range: [0, 16]
 *           parameters: {...}
 *       parameters: {...}
 *       base_model: ./base              # optional, for this slice
 *   parameters: {normalize: true, t: [{filter: self_attn, value: [0, 1]}, {value: 0.5}]}
 *   dtype: bfloat16                     # output dtype (bfloat16 | float16 | float32)
 *   out_dtype: float16                  # overrides dtype for the output, as in mergekit
 *   tokenizer_source: base
 *
 * Every mistake is reported with the file, line and column (when the config came from YAML), the
 * key path, and what would be valid. Parameter names are checked against the method's table.
 */
import { LineCounter, parseDocument, stringify } from 'yaml';
import { UsageError } from '../errors.js';
import type { FloatDType } from '../io/types.js';
import { MERGE_METHODS, METHOD_NAMES, describeRange, inRange, isMethodName, type MergeMethodDef, type ParamDef } from './methods.js';
import type { ConditionalParameter, ParameterMap, ParameterSetting, Scalar } from './params.js';
import { readInputText } from '../io/inputs.js';

/** A model as named in the config, with where it was named (for messages). */
export interface ModelRef {
  name: string;
  where: string;
}

export interface SourceSpec {
  model: ModelRef;
  /** [first, end) layers; absent for `models:` entries (all layers) */
  layerRange?: [number, number];
  parameters?: ParameterMap;
  where: string;
}

export interface SliceSpec {
  sources: SourceSpec[];
  parameters?: ParameterMap;
  baseModel?: ModelRef;
  where: string;
}

export interface MergeConfig {
  /** where the config came from (a file path, or a label for an object) */
  file: string;
  /** the config as YAML: the text read, or an object config written out (stored with the output) */
  text: string;
  method: MergeMethodDef;
  baseModel?: ModelRef;
  /** exactly one of models / slices is set */
  models?: SourceSpec[];
  /** where models: is, for messages about the list as a whole */
  modelsWhere?: string;
  slices?: SliceSpec[];
  parameters?: ParameterMap;
  dtype?: FloatDType;
  outDtype?: FloatDType;
  tokenizerSource?: 'base';
}

type ConfigPath = ReadonlyArray<string | number>;

const DTYPES: Readonly<Record<string, FloatDType>> = { bfloat16: 'BF16', float16: 'F16', float32: 'F32' };

const TOP_KEYS = ['merge_method', 'base_model', 'models', 'slices', 'parameters', 'dtype', 'out_dtype', 'tokenizer_source'];
const MODEL_KEYS = ['model', 'parameters'];
const SOURCE_KEYS = ['model', 'layer_range', 'parameters'];
const SLICE_KEYS = ['sources', 'parameters', 'base_model'];
const CONDITION_KEYS = ['filter', 'value'];

/** mergekit keys loraforge does not implement yet, with what to do instead. */
const UNSUPPORTED_KEYS: Readonly<Record<string, string>> = {
  modules: 'per-module configs are not supported yet: use models or slices',
  tokenizer: 'tokenizer building is not supported yet: use tokenizer_source: base',
  chat_template: 'chat_template is not supported yet: edit tokenizer_config.json of the output',
  residual_weight: 'residual_weight is not supported yet',
};

function formatPath(path: ConfigPath): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s === '' ? p : `.${p}`;
  return s || '(top level)';
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isScalar(v: unknown): v is Scalar {
  return typeof v === 'number' || typeof v === 'boolean';
}

/** A value as the user wrote it; JSON would print YAML's .nan / .inf as null. */
function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  const nonFinite = (_key: string, x: unknown) => (typeof x === 'number' && !Number.isFinite(x) ? `@@${x}@@` : x);
  return JSON.stringify(v, nonFinite).replace(/"@@(-?\w+)@@"/g, '$1');
}

/** Walks the raw config, failing with a located message at the first problem. */
class ConfigChecker {
  constructor(
    private readonly file: string,
    private readonly locate: (path: ConfigPath) => { line: number; col: number } | undefined,
    private readonly method?: MergeMethodDef,
  ) {}

  withMethod(method: MergeMethodDef): ConfigChecker {
    return new ConfigChecker(this.file, this.locate, method);
  }

  where(path: ConfigPath): string {
    const pos = this.locate(path);
    const at = pos ? `${this.file}:${pos.line}:${pos.col}` : this.file;
    return path.length ? `${at}: ${formatPath(path)}` : at;
  }

  /** A mistake in the config (a UsageError: the CLI exits with 2), located at its YAML line. */
  fail(path: ConfigPath, message: string): never {
    throw new UsageError(`${this.where(path)}: ${message}`);
  }

  object(raw: unknown, path: ConfigPath, keys: readonly string[]): Record<string, unknown> {
    if (!isPlainObject(raw)) this.fail(path, `expected a mapping with keys ${keys.join(', ')}, got ${describe(raw)}`);
    for (const key of Object.keys(raw)) {
      if (keys.includes(key)) continue;
      if (Object.hasOwn(UNSUPPORTED_KEYS, key)) this.fail([...path, key], UNSUPPORTED_KEYS[key]);
      this.fail([...path, key], `unknown key "${key}"; valid keys here: ${keys.join(', ')}`);
    }
    return raw;
  }

  list(raw: unknown, path: ConfigPath, what: string): unknown[] {
    if (!Array.isArray(raw) || raw.length === 0) this.fail(path, `expected a non-empty list of ${what}, got ${describe(raw)}`);
    return raw;
  }

  string(raw: unknown, path: ConfigPath, what: string): string {
    if (typeof raw !== 'string' || raw.trim() === '') this.fail(path, `expected ${what} (a non-empty string), got ${describe(raw)}`);
    return raw;
  }

  modelRef(raw: unknown, path: ConfigPath): ModelRef {
    const name = this.string(raw, path, 'a model folder');
    return { name, where: this.where(path) };
  }

  dtype(raw: unknown, path: ConfigPath): FloatDType | undefined {
    if (raw === undefined || raw === null) return undefined;
    const name = typeof raw === 'string' ? raw.replace(/^torch\./, '') : '';
    if (!Object.hasOwn(DTYPES, name)) this.fail(path, `unknown dtype ${describe(raw)}; valid: ${Object.keys(DTYPES).join(', ')}`);
    return DTYPES[name];
  }

  layerRange(raw: unknown, path: ConfigPath): [number, number] {
    const ok = Array.isArray(raw) && raw.length === 2 && raw.every((v) => Number.isSafeInteger(v) && (v as number) >= 0);
    if (!ok) this.fail(path, `expected [first, end] layer indices (non-negative integers), got ${describe(raw)}`);
    const [a, b] = raw as [number, number];
    if (a > b) this.fail(path, `layer_range [${a}, ${b}] ends before it starts`);
    // [first, end) is half-open as in mergekit: equal ends select no layer, and a slice of none is a mistake
    if (a === b) this.fail(path, `layer_range [${a}, ${b}] selects no layer (the end is exclusive): use [${a}, ${a + 1}] for layer ${a}`);
    return [a, b];
  }

  private get methodDef(): MergeMethodDef {
    if (!this.method) throw new Error('config: parameters are read after merge_method');
    return this.method;
  }

  /** `scope` model: a model's own parameters (per-model parameters only); merge: top level or a slice. */
  parameters(raw: unknown, path: ConfigPath, scope: 'merge' | 'model'): ParameterMap | undefined {
    if (raw === undefined || raw === null) return undefined;
    const method = this.methodDef;
    const valid = scope === 'model' ? method.tensorParams : [...method.params, ...method.tensorParams];
    if (!isPlainObject(raw)) this.fail(path, `expected a mapping of parameter names to values, got ${describe(raw)}`);
    const out: Record<string, ParameterSetting> = {};
    for (const [name, value] of Object.entries(raw)) {
      const def = valid.find((p) => p.name === name);
      if (!def) {
        if (scope === 'model' && method.params.some((p) => p.name === name)) {
          this.fail([...path, name], `"${name}" applies to the whole merge, not to one model: set it under the top-level (or a slice's) parameters`);
        }
        const names = valid.map((p) => p.name);
        const hint = names.length ? `valid ${scope === 'model' ? 'per-model ' : ''}parameters for ${method.name}: ${names.join(', ')}` : `${method.name} takes no ${scope === 'model' ? 'per-model ' : ''}parameters`;
        this.fail([...path, name], `unknown parameter "${name}"; ${hint}`);
      }
      out[name] = this.setting(value, [...path, name], def);
    }
    return out;
  }

  private scalar(raw: unknown, path: ConfigPath, def: ParamDef): Scalar {
    if (def.kind === 'number' && typeof raw === 'number' && !Number.isFinite(raw)) {
      this.fail(path, `${def.name} must be a finite number, got ${describe(raw)}`);
    }
    if (def.kind === 'number' && !(typeof raw === 'number' && Number.isFinite(raw))) {
      this.fail(path, `${def.name} must be a number, a list of numbers (a gradient) or a list of {filter, value}; got ${describe(raw)}`);
    }
    if (def.integer && !Number.isInteger(raw)) this.fail(path, `${def.name} must be a whole number, got ${describe(raw)}`);
    if (def.kind === 'boolean' && typeof raw !== 'boolean') this.fail(path, `${def.name} must be true or false, got ${describe(raw)}`);
    if (def.range && !inRange(raw as number, def.range)) this.fail(path, `${def.name} must lie in ${describeRange(def.range)}, got ${describe(raw)} (${def.help})`);
    return raw as Scalar;
  }

  private gradient(raw: unknown[], path: ConfigPath, def: ParamDef): Scalar[] {
    return raw.map((v, i) => this.scalar(v, [...path, i], def));
  }

  private setting(raw: unknown, path: ConfigPath, def: ParamDef): ParameterSetting {
    if (isPlainObject(raw)) return [this.condition(raw, path, def)];
    if (!Array.isArray(raw)) return this.scalar(raw, path, def);
    if (raw.length === 0) this.fail(path, `${def.name} is an empty list; give a value, a gradient [v0, …, vn] or [{filter, value}, …]`);
    if (raw.every(isScalar)) return this.gradient(raw, path, def);
    if (raw.every(isPlainObject)) return raw.map((c, i) => this.condition(c, [...path, i], def));
    this.fail(path, `${def.name} mixes plain values and {filter, value} entries; use one kind of list`);
  }

  private condition(raw: Record<string, unknown>, path: ConfigPath, def: ParamDef): ConditionalParameter {
    this.object(raw, path, CONDITION_KEYS);
    if (raw.value === undefined || raw.value === null) this.fail(path, `a {filter, value} entry needs a value`);
    const cond: ConditionalParameter = {
      value: Array.isArray(raw.value) && raw.value.length > 0 ? this.gradient(raw.value, [...path, 'value'], def) : this.scalar(raw.value, [...path, 'value'], def),
    };
    if (raw.filter !== undefined && raw.filter !== null) cond.filter = this.string(raw.filter, [...path, 'filter'], 'a tensor-name substring');
    return cond;
  }
}

function checkConfig(raw: unknown, base: ConfigChecker, file: string, text: string): MergeConfig {
  if (raw === undefined || raw === null) base.fail([], 'the config is empty; it needs at least merge_method and models (or slices)');
  const top = base.object(raw, [], TOP_KEYS);
  if (top.merge_method === undefined) base.fail([], `merge_method is missing; valid methods: ${METHOD_NAMES.join(', ')}`);
  const methodName = base.string(top.merge_method, ['merge_method'], 'a method name');
  if (!isMethodName(methodName)) base.fail(['merge_method'], `unknown or unsupported merge_method "${methodName}"; valid: ${METHOD_NAMES.join(', ')}`);
  const method = MERGE_METHODS[methodName];
  const c = base.withMethod(method);

  const config: MergeConfig = { file, text, method };
  if (top.base_model !== undefined && top.base_model !== null) config.baseModel = c.modelRef(top.base_model, ['base_model']);
  config.parameters = c.parameters(top.parameters, ['parameters'], 'merge');
  config.dtype = c.dtype(top.dtype, ['dtype']);
  config.outDtype = c.dtype(top.out_dtype, ['out_dtype']);

  if (top.tokenizer_source !== undefined && top.tokenizer_source !== null) {
    if (top.tokenizer_source !== 'base') {
      c.fail(['tokenizer_source'], `only tokenizer_source: base is supported (the base model's tokenizer is copied as is); "union" and other models need vocabulary merging, which is not supported yet`);
    }
    if (!config.baseModel) c.fail(['tokenizer_source'], 'tokenizer_source: base needs a base_model');
    config.tokenizerSource = 'base';
  }

  const hasModels = top.models !== undefined && top.models !== null;
  const hasSlices = top.slices !== undefined && top.slices !== null;
  if (hasModels === hasSlices) c.fail([], hasModels ? 'give either models or slices, not both' : 'give the models to merge under models (or slices)');
  if (hasModels) {
    config.modelsWhere = c.where(['models']);
    config.models = c.list(top.models, ['models'], 'models ({model, parameters})').map((entry, i) => {
      const at = ['models', i];
      const m = c.object(entry, at, MODEL_KEYS);
      if (m.model === undefined) c.fail(at, 'each entry of models needs a model: key');
      return { model: c.modelRef(m.model, [...at, 'model']), parameters: c.parameters(m.parameters, [...at, 'parameters'], 'model'), where: c.where(at) };
    });
  } else {
    config.slices = c.list(top.slices, ['slices'], 'slices ({sources, parameters})').map((entry, i) => {
      const at = ['slices', i];
      const s = c.object(entry, at, SLICE_KEYS);
      const sources = c.list(s.sources, [...at, 'sources'], 'sources ({model, layer_range})').map((src, j) => {
        const sat = [...at, 'sources', j];
        const o = c.object(src, sat, SOURCE_KEYS);
        if (o.model === undefined) c.fail(sat, 'each source needs a model: key');
        if (o.layer_range === undefined) c.fail(sat, 'each source needs a layer_range: [first, end]');
        return {
          model: c.modelRef(o.model, [...sat, 'model']),
          layerRange: c.layerRange(o.layer_range, [...sat, 'layer_range']),
          parameters: c.parameters(o.parameters, [...sat, 'parameters'], 'model'),
          where: c.where(sat),
        };
      });
      const slice: SliceSpec = { sources, parameters: c.parameters(s.parameters, [...at, 'parameters'], 'merge'), where: c.where(at) };
      if (s.base_model !== undefined && s.base_model !== null) slice.baseModel = c.modelRef(s.base_model, [...at, 'base_model']);
      return slice;
    });
  }
  return config;
}

/** Checks a config given as a plain object (the YAML's data model); `file` labels messages. */
export function validateMergeConfig(raw: unknown, file = 'merge config'): MergeConfig {
  return checkConfig(raw, new ConfigChecker(file, () => undefined), file, stringify(raw));
}

/** Parses and checks mergekit-style YAML; errors carry `file:line:col`. */
export function parseMergeConfig(text: string, file = 'merge config'): MergeConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true });
  if (doc.errors.length > 0) throw new UsageError(`${file}: not valid YAML: ${doc.errors[0].message}`);
  const locate = (path: ConfigPath) => {
    const node = doc.getIn(path, true) as { range?: [number, number, number] } | undefined;
    return node?.range ? lineCounter.linePos(node.range[0]) : undefined;
  };
  let raw: unknown;
  try {
    raw = doc.toJS();
  } catch (err) {
    // the yaml package refuses to expand more than maxAliasCount aliases (a "billion laughs" file)
    if (/alias/i.test((err as Error).message)) {
      throw new UsageError(`${file}: too many YAML aliases (*name) to expand: the file would grow too large; write the config out without nested aliases`);
    }
    throw new UsageError(`${file}: not valid YAML: ${(err as Error).message}`);
  }
  return checkConfig(raw, new ConfigChecker(file, locate), file, text);
}

/** Reads and checks a YAML config file. */
export async function readMergeConfig(path: string): Promise<MergeConfig> {
  return parseMergeConfig(await readInputText(path), path);
}
