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
 *   tokenizer_source: union             # base | union | a model; or the tokenizer: block:
 *   tokenizer: {source: union, tokens: {"<|im_end|>": {source: ./a, force: true}}, pad_to_multiple_of: 64}
 *   chat_template: auto                 # auto | chatml | … | a Jinja template
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
import { checkChatTemplateSetting } from './chat-templates.js';

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
  /** tokenizer_source or the tokenizer: block: the output vocabulary is built (merge/vocab.ts) */
  tokenizer?: TokenizerSpec;
  /** chat_template: "auto", a built-in name or a template (merge/tokenizer-files.ts) */
  chatTemplate?: string;
  chatTemplateWhere?: string;
}

/** Where one token's embedding row comes from (mergekit's tokens: entries). */
export type TokenSource =
  | { kind: 'model'; model: ModelRef }
  | { kind: 'zero' }
  | { kind: 'model_token'; model: ModelRef; tokenId?: number; token?: string };

export interface TokenSetting {
  source: TokenSource;
  /** use the source's row even in models that have the token */
  force: boolean;
  where: string;
}

export interface TokenizerSpec {
  /** whose vocabulary the output has: base_model's, the union of all, or one model's */
  source: 'base' | 'union' | ModelRef;
  /** per-token row sources, by token text; tokens not in the vocabulary are added */
  tokens: Map<string, TokenSetting>;
  padToMultipleOf?: number;
  where: string;
}

type ConfigPath = ReadonlyArray<string | number>;

const DTYPES: Readonly<Record<string, FloatDType>> = { bfloat16: 'BF16', float16: 'F16', float32: 'F32' };

const TOP_KEYS = ['merge_method', 'base_model', 'models', 'slices', 'parameters', 'dtype', 'out_dtype', 'tokenizer_source', 'tokenizer', 'chat_template'];
const TOKENIZER_KEYS = ['source', 'tokens', 'pad_to_multiple_of'];
const TOKEN_KEYS = ['source', 'force'];
const TOKEN_SOURCE_KEYS = ['kind', 'model', 'token_id', 'token'];
const MODEL_KEYS = ['model', 'parameters'];
const SOURCE_KEYS = ['model', 'layer_range', 'parameters'];
const SLICE_KEYS = ['sources', 'parameters', 'base_model'];
const CONDITION_KEYS = ['filter', 'value'];

/** mergekit keys loraforge does not implement yet, with what to do instead. */
const UNSUPPORTED_KEYS: Readonly<Record<string, string>> = {
  modules: 'per-module configs are not supported yet: use models or slices',
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

  /** base | union | a model folder */
  tokenizerSource(raw: unknown, path: ConfigPath): TokenizerSpec['source'] {
    const name = this.string(raw, path, 'base, union or a model folder');
    return name === 'base' || name === 'union' ? name : this.modelRef(name, path);
  }

  /** mergekit's TokenizerConfig: source (default union), tokens, pad_to_multiple_of. */
  tokenizerBlock(raw: unknown, path: ConfigPath): TokenizerSpec {
    const o = this.object(raw, path, TOKENIZER_KEYS);
    const spec: TokenizerSpec = { source: 'union', tokens: new Map(), where: this.where(path) };
    if (o.source !== undefined && o.source !== null) spec.source = this.tokenizerSource(o.source, [...path, 'source']);
    if (o.pad_to_multiple_of !== undefined && o.pad_to_multiple_of !== null) {
      const n = o.pad_to_multiple_of;
      if (!Number.isSafeInteger(n) || (n as number) < 1) this.fail([...path, 'pad_to_multiple_of'], `expected a positive whole number, got ${describe(n)}`);
      spec.padToMultipleOf = n as number;
    }
    if (o.tokens !== undefined && o.tokens !== null) {
      const at = [...path, 'tokens'];
      if (!isPlainObject(o.tokens)) this.fail(at, `expected a mapping of token text to {source, force}, got ${describe(o.tokens)}`);
      for (const [token, entry] of Object.entries(o.tokens)) spec.tokens.set(token, this.tokenSetting(entry, [...at, token]));
    }
    return spec;
  }

  private tokenSetting(raw: unknown, path: ConfigPath): TokenSetting {
    const o = this.object(raw, path, TOKEN_KEYS);
    // mergekit accepts a missing source but then fails when the row is built: say so here
    if (o.source === undefined || o.source === null) this.fail(path, 'each token needs a source: a model folder, {kind: zero} or {kind: model_token, model, token | token_id}');
    if (o.force !== undefined && typeof o.force !== 'boolean') this.fail([...path, 'force'], `force must be true or false, got ${describe(o.force)}`);
    return { source: this.tokenSource(o.source, [...path, 'source']), force: o.force === true, where: this.where(path) };
  }

  private tokenSource(raw: unknown, path: ConfigPath): TokenSource {
    if (typeof raw === 'string') return { kind: 'model', model: this.modelRef(raw, path) };
    const o = this.object(raw, path, TOKEN_SOURCE_KEYS);
    if (o.kind === 'zero') {
      if (Object.keys(o).length > 1) this.fail(path, '{kind: zero} takes no other keys');
      return { kind: 'zero' };
    }
    if (o.kind !== 'model_token') this.fail([...path, 'kind'], `expected kind: zero or kind: model_token, got ${describe(o.kind)}`);
    const model = this.modelRef(o.model, [...path, 'model']);
    const hasId = o.token_id !== undefined && o.token_id !== null;
    const hasToken = o.token !== undefined && o.token !== null;
    if (hasId === hasToken) this.fail(path, 'a model_token source needs exactly one of token (its text) or token_id');
    if (hasId && !(Number.isSafeInteger(o.token_id) && (o.token_id as number) >= 0)) this.fail([...path, 'token_id'], `expected a non-negative whole number, got ${describe(o.token_id)}`);
    return hasId ? { kind: 'model_token', model, tokenId: o.token_id as number } : { kind: 'model_token', model, token: this.string(o.token, [...path, 'token'], 'the token text') };
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

  const hasSource = top.tokenizer_source !== undefined && top.tokenizer_source !== null;
  const hasBlock = top.tokenizer !== undefined && top.tokenizer !== null;
  if (hasSource && hasBlock) c.fail(['tokenizer'], 'give either tokenizer_source or a tokenizer: block, not both (as in mergekit)');
  if (hasSource) config.tokenizer = { source: c.tokenizerSource(top.tokenizer_source, ['tokenizer_source']), tokens: new Map(), where: c.where(['tokenizer_source']) };
  if (hasBlock) config.tokenizer = c.tokenizerBlock(top.tokenizer, ['tokenizer']);
  if (top.chat_template !== undefined && top.chat_template !== null) {
    config.chatTemplate = c.string(top.chat_template, ['chat_template'], 'auto, a template name or a Jinja template');
    config.chatTemplateWhere = c.where(['chat_template']);
    checkChatTemplateSetting(config.chatTemplate, config.chatTemplateWhere);
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
