/**
 * From a checked config and the opened models to the list of output tensors, each with its inputs
 * and fully resolved parameters — before anything is read or written, so every mistake (a missing
 * tensor, a shape mismatch, a missing weight, a layer range out of bounds) surfaces at once.
 *
 * As in mergekit's planner (plan.py): `models:` becomes one slice over all layers of every model
 * (plus base_model when a method needs it and it is not listed); output layers are numbered in
 * slice order; a layer's gradient position is t = offset / (slice length − 1) (1 for a one-layer
 * slice); non-layer tensors use t = 0, embeddings coming from the first slice's models and the
 * final norm / lm_head from the last slice's.
 */
import type { FloatDType, TensorInfo } from '../io/types.js';
import { isFloatDType } from '../tensor/dtype.js';
import type { MergeConfig, SliceSpec, SourceSpec } from './config.js';
import { isPreLayerTensor } from './layers.js';
import { UsageError } from '../errors.js';
import { InputParamError, type MergeMethodDef, type TensorContext } from './methods.js';
import { resolveParameter, type ParameterMap, type Scalar } from './params.js';
import { planInputShapes, shapeNumel, type ShapePlan } from './shapes.js';
import type { OpenedModels, SourceModel } from './sources.js';
import { isEmbeddingLike } from '../delta/targets.js';
import { planRowRemap, type RowRemap } from './embed-rows.js';
import type { OutputVocab } from './vocab.js';

export interface PlannedInput {
  /** index into the opened models */
  model: number;
  tensor: string;
}

export interface PlannedTensor {
  name: string;
  shape: number[];
  /** storage dtype of the output */
  dtype: FloatDType;
  inputs: PlannedInput[];
  context: TensorContext;
  /** embedding rows moved into the output vocabulary as they are read (a tokenizer setting) */
  remap?: RowRemap;
}

export interface MergePlan {
  method: MergeMethodDef;
  tensors: PlannedTensor[];
  /** per output layer, the model and layer it was taken from (the slice's first source) */
  layers: Array<{ model: number; layer: number }>;
  /** the model whose config.json (and, by default, tokenizer) the output takes: base_model, else the first model */
  donor: number;
  /** things worth telling the user (tensors left out of the output) */
  notes: string[];
}

interface PlanSource {
  model: number;
  range: [number, number];
  parameters?: ParameterMap;
  where: string;
}

interface PlanSlice {
  sources: PlanSource[];
  parameters?: ParameterMap;
  /** index of the slice's base model among the opened models */
  base: number | undefined;
  where: string;
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

class Planner {
  private readonly models: SourceModel[];
  private readonly method: MergeMethodDef;
  private readonly tensors: PlannedTensor[] = [];
  private readonly consumed: Array<Set<string>>;
  /** per model, the output tensors it was left out of (a task-vector method and a shape other than base_model's) */
  private readonly dropped: string[][];
  /** embeddings merged at a shape other than some input's */
  private readonly cropped: string[] = [];

  constructor(
    private readonly config: MergeConfig,
    private readonly opened: OpenedModels,
    private readonly vocab?: OutputVocab,
  ) {
    this.models = opened.models;
    this.method = config.method;
    this.consumed = this.models.map(() => new Set());
    this.dropped = this.models.map(() => []);
  }

  private label(model: number): string {
    return this.models[model].name;
  }

  private fullRange(spec: SourceSpec): PlanSource {
    const model = this.opened.indexOf(spec.model);
    return { model, range: [0, this.models[model].layers.count], parameters: spec.parameters, where: spec.where };
  }

  /** `models:` as one slice over all layers, base_model added where the method takes task vectors against it. */
  private slicesFromModels(specs: SourceSpec[]): PlanSlice[] {
    const sources = specs.map((s) => this.fullRange(s));
    const { baseModel } = this.config;
    const base = baseModel ? this.opened.indexOf(baseModel) : undefined;
    if (baseModel && base !== undefined && !sources.some((s) => s.model === base)) {
      if (this.method.base === 'required' || this.method.base === 'added') sources.push(this.fullRange({ model: baseModel, where: baseModel.where }));
      else if (this.method.base === 'optional') {
        throw new UsageError(`${baseModel.where}: ${this.method.name} merges the listed models only, and base_model "${baseModel.name}" is not among them: list it under models with a weight, or drop base_model`);
      }
    }
    const counts = sources.map((s) => this.models[s.model].layers.count);
    const odd = counts.findIndex((c) => c !== counts[0]);
    if (odd > 0) {
      throw new UsageError(
        `${this.config.modelsWhere ?? this.config.file}: the models have different numbers of layers (${this.label(sources[0].model)}: ${counts[0]}, ${this.label(sources[odd].model)}: ${counts[odd]}); use slices with matching layer_range lengths`,
      );
    }
    return [{ sources, base, where: this.config.modelsWhere ?? this.config.file }];
  }

  private sliceFromSpec(spec: SliceSpec): PlanSlice {
    const sources = spec.sources.map((s): PlanSource => ({ model: this.opened.indexOf(s.model), range: s.layerRange as [number, number], parameters: s.parameters, where: s.where }));
    for (const s of sources) {
      const { count } = this.models[s.model].layers;
      if (s.range[1] > count) {
        throw new UsageError(`${s.where}: layer_range [${s.range[0]}, ${s.range[1]}] is out of bounds: ${this.label(s.model)} has ${count} layers (valid ranges lie within [0, ${count}])`);
      }
    }
    const lengths = sources.map((s) => s.range[1] - s.range[0]);
    const odd = lengths.findIndex((n) => n !== lengths[0]);
    if (odd > 0) {
      throw new UsageError(`${spec.where}: all sources of a slice need the same number of layers, but ${fmtShape(sources[0].range)} has ${lengths[0]} and ${fmtShape(sources[odd].range)} has ${lengths[odd]}`);
    }
    const baseRef = spec.baseModel ?? this.config.baseModel;
    return { sources, parameters: spec.parameters, base: baseRef ? this.opened.indexOf(baseRef) : undefined, where: spec.where };
  }

  /** Input counts and base_model presence the method needs, and one layer-naming scheme. */
  private checkSlice(slice: PlanSlice): void {
    const { method } = this;
    const n = slice.sources.length;
    if (method.inputs !== undefined && n !== method.inputs) {
      const what = method.name === 'passthrough' ? 'copies one model per slice (use slices to combine models)' : `merges exactly ${method.inputs} models, one of them base_model`;
      throw new UsageError(`${slice.where}: ${method.name} ${what}, but ${n} are given (${slice.sources.map((s) => this.label(s.model)).join(', ')})`);
    }
    if (method.models) {
      const others = slice.sources.filter((s) => s.model !== slice.base);
      const { min, max } = method.models;
      if (others.length < min || (max !== undefined && others.length > max)) {
        const want = max === min ? `exactly ${min}` : max === undefined ? `at least ${min}` : `${min} to ${max}`;
        const base = method.base === 'required' ? ' and base_model' : method.base === 'added' && slice.base !== undefined ? ' besides base_model' : '';
        const given = others.map((s) => this.label(s.model)).join(', ') || 'none';
        throw new UsageError(`${slice.where}: ${method.name} merges ${want} models${base}, but ${others.length} ${others.length === 1 ? 'is' : 'are'} given (${given})`);
      }
    }
    if (method.base === 'required') {
      if (slice.base === undefined) throw new UsageError(`${slice.where}: ${method.name} needs base_model (task vectors and interpolation are taken from it)`);
      if (!slice.sources.some((s) => s.model === slice.base)) {
        throw new UsageError(`${slice.where}: base_model "${this.label(slice.base)}" is not one of this slice's sources; ${method.name} needs it as one`);
      }
    }
    const prefixes = new Set(slice.sources.filter((s) => s.range[1] > s.range[0]).map((s) => this.models[s.model].layers.prefix));
    if (prefixes.size > 1) {
      throw new Error(`${slice.where}: the models name their layers differently (${[...prefixes].join(' vs ')}): they are not the same architecture`);
    }
  }

  private info(input: PlannedInput, output: string): TensorInfo {
    const { checkpoint, label } = this.models[input.model];
    if (!checkpoint.has(input.tensor)) {
      throw new Error(`${label}: missing tensor "${input.tensor}" (needed for output tensor "${output}"): the models do not share one architecture, or the checkpoint is incomplete`);
    }
    const info = checkpoint.info(input.tensor);
    if (!isFloatDType(info.dtype)) {
      throw new Error(`${label}: tensor "${input.tensor}" is ${info.dtype}; merges read F32, F16 and BF16 tensors (dequantize the checkpoint first)`);
    }
    return info;
  }

  private resolveMergeParams(slice: PlanSlice, tensor: string, t: number): Record<string, Scalar> {
    const params: Record<string, Scalar> = {};
    for (const def of this.method.params) {
      const value = resolveParameter(def.name, [slice.parameters, this.config.parameters], tensor, t) ?? def.default;
      if (value === undefined) {
        if (def.required) throw new UsageError(`${slice.where}: ${this.method.name} needs the parameter "${def.name}", and none applies to tensor "${tensor}": set it under parameters`);
        continue;
      }
      params[def.name] = value;
    }
    return params;
  }

  private resolveModelParams(slice: PlanSlice, source: PlanSource, isBase: boolean, tensor: string, t: number): Record<string, Scalar | undefined> {
    const params: Record<string, Scalar | undefined> = {};
    for (const def of this.method.tensorParams) {
      const value = resolveParameter(def.name, [source.parameters, slice.parameters, this.config.parameters], tensor, t) ?? def.default;
      // task vectors are differences from the base: its own weight is never used
      if (value === undefined && def.required && !(isBase && (this.method.base === 'required' || this.method.base === 'added'))) {
        throw new UsageError(`${source.where}: ${this.method.name} needs the parameter "${def.name}" for model "${this.label(source.model)}" (tensor "${tensor}"): set it under the model's parameters or the top-level parameters`);
      }
      if (value !== undefined) params[def.name] = value;
    }
    return params;
  }

  private addTensor(slice: PlanSlice, output: string, inputNames: string[], t: number): void {
    const all = slice.sources.map((s, i): PlannedInput => ({ model: s.model, tensor: inputNames[i] }));
    const infos = all.map((inp) => this.info(inp, output));
    const baseIndex = slice.base === undefined ? -1 : slice.sources.findIndex((s) => s.model === slice.base);
    const remapped = this.vocab && isEmbeddingLike(output, infos[0].shape) ? this.remapRows(output, all, infos, baseIndex) : undefined;
    const shapes = remapped?.shapes ?? planInputShapes({
      tensor: output,
      method: this.method.name,
      rule: this.method.shapeMismatch,
      shapes: infos.map((info) => info.shape),
      base: baseIndex >= 0 ? baseIndex : undefined,
      labels: all.map((inp) => this.models[inp.model].label),
    });
    for (const i of shapes.dropped) this.dropped[all[i].model].push(output);
    if (shapes.cropped) this.cropped.push(`${output}: the models' shapes differ (${infos.map((x) => fmtShape(x.shape)).join(', ')}); merged as ${fmtShape(shapes.shape)}, as mergekit does`);
    const sources = shapes.keep.map((i) => slice.sources[i]);
    // an input stored larger than the output is cropped as it is read (compute.ts, worker.ts)
    const inputs = shapes.keep.map((i) => all[i]);
    // a model left out of a tensor is reported as such (shapeNotes), not as an unused tensor
    all.forEach((inp) => this.consumed[inp.model].add(inp.tensor));
    const kept = sources.findIndex((s) => s.model === slice.base);
    const base = slice.base !== undefined && kept >= 0 ? kept : undefined;
    const context: TensorContext = {
      tensor: output,
      numel: shapeNumel(shapes.shape),
      shape: shapes.shape,
      base,
      params: this.resolveMergeParams(slice, output, t),
      inputParams: shapes.keep.map((i) => this.resolveModelParams(slice, slice.sources[i], i === baseIndex, inputNames[i], t)),
      inputLabels: sources.map((s) => `"${this.label(s.model)}"`),
    };
    try {
      this.method.check?.(context);
    } catch (err) {
      // the parameters of one model are at fault: name its place in the config
      const where = err instanceof InputParamError ? sources[err.input].where : slice.where;
      throw new UsageError(`${where}: ${(err as Error).message}`);
    }
    const dtype = this.config.outDtype ?? this.config.dtype ?? (infos[baseIndex >= 0 ? baseIndex : 0].dtype as FloatDType);
    this.tensors.push({ name: output, shape: shapes.shape, dtype, inputs, context, remap: remapped?.remap });
  }

  /** An embedding under a tokenizer setting: every input's rows moved into the output vocabulary (embed-rows.ts). */
  private remapRows(output: string, all: PlannedInput[], infos: TensorInfo[], baseIndex: number): { shapes: ShapePlan; remap: RowRemap } {
    const vocab = this.vocab as OutputVocab;
    const spec = this.config.tokenizer!;
    const cols = infos[0].shape[1];
    const odd = infos.findIndex((x) => x.shape.length !== 2 || x.shape[1] !== cols);
    if (odd >= 0) {
      throw new Error(`tensor "${output}" has shape ${fmtShape(infos[0].shape)} in ${this.models[all[0].model].path} but ${fmtShape(infos[odd].shape)} in ${this.models[all[odd].model].path}: embeddings need one width to be merged into one vocabulary`);
    }
    const { remap, notes } = planRowRemap({
      vocab,
      tokens: spec.tokens,
      padToMultipleOf: spec.padToMultipleOf,
      tensor: output,
      models: all.map((inp) => inp.model),
      base: baseIndex >= 0 ? baseIndex : undefined,
      storedRows: infos.map((x) => x.shape[0]),
      labels: all.map((inp) => this.models[inp.model].path),
      indexOf: (ref) => this.opened.indexOf(ref),
    });
    this.cropped.push(...notes);
    const keep = all.map((_, i) => i);
    return { shapes: { shape: [remap.rows, cols], keep, dropped: [], cropped: false }, remap };
  }

  private addNonLayer(slice: PlanSlice, pre: boolean): void {
    const lead = this.models[slice.sources[0].model];
    for (const name of lead.layers.nonLayer) {
      if (isPreLayerTensor(name) === pre) this.addTensor(slice, name, slice.sources.map(() => name), 0);
    }
  }

  plan(): MergePlan {
    const { config } = this;
    const slices = config.models ? this.slicesFromModels(config.models) : (config.slices as SliceSpec[]).map((s) => this.sliceFromSpec(s));
    slices.forEach((s) => this.checkSlice(s));

    const first = slices[0];
    const outLayers = this.models[first.sources[0].model].layers;
    const layers: MergePlan['layers'] = [];
    this.addNonLayer(first, true);
    for (const slice of slices) {
      const lead = slice.sources[0];
      const length = lead.range[1] - lead.range[0];
      for (let offset = 0; offset < length; offset++) {
        const t = length > 1 ? offset / (length - 1) : 1;
        const outIndex = layers.length;
        for (const suffix of this.models[lead.model].layers.suffixes(lead.range[0] + offset)) {
          const names = slice.sources.map((s) => this.models[s.model].layers.tensorName(s.range[0] + offset, suffix));
          this.addTensor(slice, outLayers.tensorName(outIndex, suffix), names, t);
        }
        layers.push({ model: lead.model, layer: lead.range[0] + offset });
      }
    }
    this.addNonLayer(slices[slices.length - 1], false);

    const donorRef = config.baseModel ?? (config.models ? config.models[0].model : (config.slices as SliceSpec[])[0].sources[0].model);
    return { method: this.method, tensors: this.tensors, layers, donor: this.opened.indexOf(donorRef), notes: [...this.shapeNotes(), ...this.leftOut()] };
  }

  /** Embeddings merged at a common shape, and models left out of tensors, as mergekit warns about them. */
  private shapeNotes(): string[] {
    const notes = [...this.cropped];
    this.dropped.forEach((tensors, i) => {
      if (tensors.length === 0) return;
      const some = `${tensors.slice(0, 3).join(', ')}${tensors.length > 3 ? ', …' : ''}`;
      notes.push(`${this.label(i)}: left out of ${tensors.length} tensor(s) whose shape differs from base_model's, as mergekit does (${some}); the output has base_model's shapes`);
    });
    return notes;
  }

  /** Non-layer tensors of an input that no output tensor uses (layers left out by slices are intended). */
  private leftOut(): string[] {
    const notes: string[] = [];
    this.models.forEach((m, i) => {
      const unused = m.layers.nonLayer.filter((n) => !this.consumed[i].has(n));
      if (unused.length > 0 && this.consumed[i].size > 0) {
        notes.push(`${m.name}: ${unused.length} tensor(s) outside the layers are not in the output (${unused.slice(0, 3).join(', ')}${unused.length > 3 ? ', …' : ''})`);
      }
    });
    return notes;
  }
}

/** Plans the merge: every output tensor with its inputs and resolved parameters, checked. */
export function planMerge(config: MergeConfig, opened: OpenedModels, vocab?: OutputVocab): MergePlan {
  return new Planner(config, opened, vocab).plan();
}
