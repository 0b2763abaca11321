/**
 * The merge methods, one table: each names its parameters (with kinds, defaults and which are
 * required) and a per-tensor function. Config validation, parameter resolution, `--help` and the
 * docs all read this table, so a method is added here and nowhere else. Names, parameters and
 * defaults are mergekit's (merge_methods/registry.py).
 *
 * The executor decides what is read and when; a method only sees one output tensor's inputs, in
 * source order, and may overwrite them (it returns the array holding the result, often an input).
 */
import type { Rng } from '../linalg/random.js';
import { dellaParamError } from '../sparsify/della.js';
import { arceeFusionInto } from './arcee-fusion.js';
import { karcherInto } from './karcher.js';
import { mergeLinear } from './linear.js';
import { modelStockInto } from './model-stock.js';
import { multislerpInto } from './multislerp.js';
import { nearswapInto } from './nearswap.js';
import { nuslerpInto, nuslerpT } from './nuslerp.js';
import type { Scalar } from './params.js';
import { passthroughTensor } from './passthrough.js';
import { mergeSce } from './sce.js';
import { slerpInto } from './slerp.js';
import { magnitudeKeepCount } from '../sparsify/sparsify.js';
import { ramInto } from './ram.js';
import { ramplusTlInto } from './ramplus-tl.js';
import type { ShapeMismatchRule } from './shapes.js';
import { mergeTaskVectors, type TaskArithmeticOptions } from './task-arithmetic.js';
import { firstDimVectors, lastDimVectors, wholeTensor } from './vectors.js';

export const METHOD_NAMES = [
  'linear',
  'task_arithmetic',
  'ties',
  'dare_linear',
  'dare_ties',
  'slerp',
  'passthrough',
  // the task-vector family's other sparsifiers, and sce
  'breadcrumbs',
  'breadcrumbs_ties',
  'della',
  'della_linear',
  'sce',
  // geometric and special methods
  'model_stock',
  'nuslerp',
  'multislerp',
  'karcher',
  'nearswap',
  'arcee_fusion',
  'ram',
  'ramplus_tl',
] as const;
export type MethodName = (typeof METHOD_NAMES)[number];

export interface ParamDef {
  name: string;
  kind: 'number' | 'boolean';
  required: boolean;
  /** used when no level sets the parameter (absent: the parameter stays unset) */
  default?: Scalar;
  help: string;
  /** whole numbers only (an iteration count) */
  integer?: boolean;
  /** the values that mean something (numbers only); the config refuses others, naming the YAML line */
  range?: ParamRange;
}

/** [min, max], or (min, max] with minExclusive. */
export interface ParamRange {
  min: number;
  max: number;
  minExclusive?: boolean;
}

export function inRange(v: number, r: ParamRange): boolean {
  return (r.minExclusive ? v > r.min : v >= r.min) && v <= r.max;
}

export function describeRange(r: ParamRange): string {
  return `${r.minExclusive ? '(' : '['}${r.min}, ${r.max}]`;
}

/** What the executor lends a method while it merges one tensor. */
export interface MergeEnv {
  /** the seeded stream for input `input` (DARE and della masks: one next() per entry, in storage order) */
  rng(input: number): Rng;
  /** a working array of the tensor's size, contents undefined; reclaimed after merge() returns */
  scratch(): Float32Array;
}

/** What a method knows about one output tensor: everything resolved, nothing loaded. */
export interface TensorContext {
  /** output tensor name (for messages) */
  tensor: string;
  numel: number;
  /** the output tensor's shape (per-row and per-column methods split it) */
  shape: readonly number[];
  /** index of base_model among the inputs, when it is one */
  base: number | undefined;
  /** merge-wide parameters at this tensor, defaults applied */
  params: Readonly<Record<string, Scalar>>;
  /** per-model parameters at this tensor, one record per input (unset ones absent) */
  inputParams: ReadonlyArray<Readonly<Record<string, Scalar | undefined>>>;
  /** how to name each input in messages */
  inputLabels: readonly string[];
}

export interface MergeMethodDef {
  name: MethodName;
  title: string;
  reference?: string;
  summary: string;
  /**
   * required: task vectors are taken against base_model (added as an input when not listed);
   * optional: base_model, when given, must be one of the merged models; added: base_model is optional and, when
   * given, added as an input when not listed (its task vectors or one more point); unused: only its config and
   * tokenizer are used.
   */
  base: 'required' | 'optional' | 'added' | 'unused';
  /** exact number of inputs per output tensor, base included, when the method fixes it */
  inputs?: number;
  /** how many models besides base_model the method takes, when it limits them */
  models?: { min: number; max?: number };
  /** how inputs of different shapes are merged (shapes.ts; mergekit's rules); absent: refused */
  shapeMismatch?: ShapeMismatchRule;
  /** draws from the --seed RNG */
  randomized: boolean;
  /** most working arrays merge() takes from env.scratch() per tensor (default 0): the executor budgets memory by it */
  scratch?: number;
  /** merge-wide: set at the top level or per slice */
  params: readonly ParamDef[];
  /** per model: set under a model (or at the top level / per slice as a default for all models) */
  tensorParams: readonly ParamDef[];
  /** plan-time checks that need the tensor's size (throws a message without location, or an InputParamError) */
  check?(ctx: TensorContext): void;
  merge(ctx: TensorContext, inputs: Float32Array[], env: MergeEnv): Float32Array;
}

const num = (v: Scalar | undefined): number => v as number;

/** A check's complaint about the parameters of one input: the planner names that model's place in the config. */
export class InputParamError extends Error {
  constructor(
    readonly input: number,
    message: string,
  ) {
    super(message);
  }
}

const WEIGHT: ParamDef = { name: 'weight', kind: 'number', required: true, help: "the model's weight" };

const GAMMA: ParamDef = {
  name: 'gamma',
  kind: 'number',
  required: false,
  default: 0.01,
  // mergekit's [n_bot:-n_top] slice: ⌊gamma·n⌋ = 0 keeps nothing
  help: 'fraction of largest-magnitude entries dropped as outliers; ⌊gamma·entries⌋ = 0 drops the whole task vector, as in mergekit (gamma 0, or tensors under 1/gamma entries)',
  range: { min: 0, max: 1 },
};

const EPSILON: ParamDef = {
  name: 'epsilon',
  kind: 'number',
  required: false,
  default: 0.15,
  help: 'keep probabilities run from density − epsilon (smallest |δ| along dim 1) to density + epsilon (largest); both must lie inside (0, 1)',
  range: { min: 0, max: 1 },
};
/** The inputs other than base_model, in model order, with their indices. */
function othersOf(ctx: TensorContext, inputs: Float32Array[]): { data: Float32Array[]; index: number[] } {
  const index = inputs.flatMap((_, i) => (i === ctx.base ? [] : [i]));
  return { data: index.map((i) => inputs[i]), index };
}

const baseOf = (ctx: TensorContext, inputs: Float32Array[]): Float32Array | undefined => (ctx.base === undefined ? undefined : inputs[ctx.base]);

function taskArithmeticMethod(spec: {
  name: MethodName;
  title: string;
  reference: string;
  summary: string;
  sparsification: TaskArithmeticOptions['sparsification'];
  consensus: boolean;
  normalize: boolean;
  rescale: boolean;
}): MergeMethodDef {
  const sparsifies = spec.sparsification !== undefined;
  const outliers = spec.sparsification === 'magnitude_outliers';
  const della = spec.sparsification === 'della_magprune';
  return {
    name: spec.name,
    title: spec.title,
    reference: spec.reference,
    summary: spec.summary,
    base: 'required',
    shapeMismatch: 'base-shape',
    randomized: spec.sparsification === 'random' || della,
    // della's keep probabilities; the sums (and TIES' sign election) run chunk by chunk in small arrays of their own
    scratch: della ? 1 : 0,
    params: [
      { name: 'normalize', kind: 'boolean', required: false, default: spec.normalize, help: 'divide the summed task vectors by the sum of the (agreeing) weights' },
      { name: 'lambda', kind: 'number', required: false, default: 1, help: 'scale of the merged task vector' },
      { name: 'rescale', kind: 'boolean', required: false, default: spec.rescale, help: 'after sparsifying, scale each task vector back to its L1 norm' },
      { name: 'int8_mask', kind: 'boolean', required: false, default: false, help: 'accepted for mergekit compatibility; no effect (no masks are stored)' },
    ],
    tensorParams: [
      { ...WEIGHT, help: "weight of the model's task vector" },
      {
        name: 'density',
        kind: 'number',
        required: false,
        default: 1,
        help: sparsifies ? 'fraction of task-vector entries kept' : 'accepted for mergekit compatibility; no effect without sparsification',
        // 0 keeps nothing (mergekit's ties asserts; its dare silently returns the base model); above 1 means 1
        ...(sparsifies ? { range: { min: 0, max: 1, minExclusive: true } } : {}),
      },
      ...(outliers ? [GAMMA] : []),
      ...(della ? [EPSILON] : []),
    ],
    check(ctx) {
      if (della) {
        ctx.inputParams.forEach((p, i) => {
          const problem = i === ctx.base ? undefined : dellaParamError(num(p.density), num(p.epsilon));
          if (problem) throw new InputParamError(i, `${problem} (tensor "${ctx.tensor}")`);
        });
      }
      if (spec.sparsification !== 'magnitude') return;
      ctx.inputParams.forEach((p, i) => {
        if (i === ctx.base) return;
        const density = num(p.density);
        if (density < 1 && magnitudeKeepCount(density, ctx.numel) <= 0) {
          throw new Error(`density ${density} of ${ctx.inputLabels[i]} keeps none of the ${ctx.numel} entries of tensor "${ctx.tensor}": use a density ≥ ${1 / ctx.numel}`);
        }
      });
    },
    merge(ctx, inputs, env) {
      const base = inputs[ctx.base as number];
      const tvs = inputs.flatMap((data, i) =>
        i === ctx.base
          ? []
          : [{ data, weight: num(ctx.inputParams[i].weight), density: num(ctx.inputParams[i].density), gamma: num(ctx.inputParams[i].gamma), epsilon: num(ctx.inputParams[i].epsilon), rng: () => env.rng(i) }],
      );
      const opts = {
        sparsification: spec.sparsification,
        shape: ctx.shape,
        consensus: spec.consensus,
        normalize: ctx.params.normalize as boolean,
        lambda: num(ctx.params.lambda),
        rescale: ctx.params.rescale as boolean,
      };
      return mergeTaskVectors(base, tvs, opts, env.scratch);
    },
  };
}

export const MERGE_METHODS: Readonly<Record<MethodName, MergeMethodDef>> = {
  linear: {
    name: 'linear',
    title: 'Linear',
    reference: 'https://arxiv.org/abs/2203.05482',
    summary: 'weighted average of the models: Σ w·x (/ Σ w with normalize)',
    base: 'optional',
    shapeMismatch: 'common-submatrix',
    randomized: false,
    params: [{ name: 'normalize', kind: 'boolean', required: false, default: true, help: 'divide by the sum of the weights' }],
    tensorParams: [WEIGHT],
    check(ctx) {
      if (!ctx.params.normalize) return;
      const total = ctx.inputParams.reduce((s, p) => s + num(p.weight), 0);
      if (total === 0) throw new Error(`the weights of tensor "${ctx.tensor}" sum to 0, so normalize would divide by 0: change the weights or set normalize: false`);
    },
    merge: (ctx, inputs) =>
      mergeLinear(
        inputs,
        ctx.inputParams.map((p) => num(p.weight)),
        ctx.params.normalize as boolean,
      ),
  },
  task_arithmetic: taskArithmeticMethod({
    name: 'task_arithmetic',
    title: 'Task Arithmetic',
    reference: 'https://arxiv.org/abs/2212.04089',
    summary: 'base + λ·Σ w·(x − base)',
    sparsification: undefined,
    consensus: false,
    normalize: false,
    rescale: false,
  }),
  ties: taskArithmeticMethod({
    name: 'ties',
    title: 'TIES',
    reference: 'https://arxiv.org/abs/2306.01708',
    summary: 'task vectors trimmed to their largest entries (density), majority sign elected by the sum, agreeing entries averaged',
    sparsification: 'magnitude',
    consensus: true,
    normalize: true,
    rescale: false,
  }),
  dare_linear: taskArithmeticMethod({
    name: 'dare_linear',
    title: 'Linear DARE',
    reference: 'https://arxiv.org/abs/2311.03099',
    summary: 'task vectors randomly dropped (keep probability density, seeded) and rescaled, then summed',
    sparsification: 'random',
    consensus: false,
    normalize: false,
    rescale: true,
  }),
  dare_ties: taskArithmeticMethod({
    name: 'dare_ties',
    title: 'DARE TIES',
    reference: 'https://arxiv.org/abs/2311.03099',
    summary: 'DARE drop and rescale, then TIES sign election',
    sparsification: 'random',
    consensus: true,
    normalize: false,
    rescale: true,
  }),
  slerp: {
    name: 'slerp',
    title: 'SLERP',
    reference: 'https://en.wikipedia.org/wiki/Slerp',
    summary: 'spherical interpolation from base_model (t = 0) to the other model (t = 1); lerp when near-parallel',
    base: 'required',
    inputs: 2,
    shapeMismatch: 'common-submatrix',
    randomized: false,
    // mergekit does not clamp t, so t outside [0, 1] extrapolates past both models: refused as a typo rather than followed
    params: [{ name: 't', kind: 'number', required: true, help: 'interpolation position: 0 = base_model, 1 = the other model', range: { min: 0, max: 1 } }],
    tensorParams: [],
    merge(ctx, inputs) {
      const b = ctx.base as number;
      return slerpInto(num(ctx.params.t), inputs[b], inputs[1 - b]);
    },
  },
  passthrough: {
    name: 'passthrough',
    title: 'Passthrough',
    summary: 'copies one model per slice (stack or drop layers with slices); optional per-model scale',
    base: 'unused',
    inputs: 1,
    randomized: false,
    params: [],
    tensorParams: [{ name: 'scale', kind: 'number', required: false, help: 'multiply the tensor by this factor' }],
    merge: (ctx, inputs) => passthroughTensor(inputs[0], ctx.inputParams[0].scale as number | undefined),
  },
  // the task-vector family's other sparsifiers (breadcrumbs.ts, della.ts), and sce (sce.ts)
  breadcrumbs: taskArithmeticMethod({
    name: 'breadcrumbs',
    title: 'Model Breadcrumbs',
    reference: 'https://arxiv.org/abs/2312.06795',
    summary: 'task vectors without their largest (gamma) and smallest entries (density kept), then summed',
    sparsification: 'magnitude_outliers',
    consensus: false,
    normalize: false,
    rescale: false,
  }),
  breadcrumbs_ties: taskArithmeticMethod({
    name: 'breadcrumbs_ties',
    title: 'Model Breadcrumbs with TIES',
    reference: 'https://arxiv.org/abs/2312.06795',
    summary: 'breadcrumbs sparsification, then TIES sign election',
    sparsification: 'magnitude_outliers',
    consensus: true,
    normalize: false,
    rescale: false,
  }),
  della: taskArithmeticMethod({
    name: 'della',
    title: 'DELLA',
    reference: 'https://arxiv.org/abs/2406.11617',
    summary: 'task vectors randomly dropped with keep probabilities ranked by magnitude along dim 1 (seeded), rescaled, then TIES sign election',
    sparsification: 'della_magprune',
    consensus: true,
    normalize: true,
    rescale: true,
  }),
  della_linear: taskArithmeticMethod({
    name: 'della_linear',
    title: 'Linear DELLA',
    reference: 'https://arxiv.org/abs/2406.11617',
    summary: 'DELLA drop and rescale, then summed',
    sparsification: 'della_magprune',
    consensus: false,
    normalize: false,
    rescale: true,
  }),
  sce: {
    name: 'sce',
    title: 'SCE',
    reference: 'https://arxiv.org/abs/2408.07990',
    summary: 'task-vector entries of largest variance across models kept (select_topk), weighted by mean square, TIES sign election',
    base: 'required',
    randomized: false,
    scratch: 3,
    params: [
      { name: 'select_topk', kind: 'number', required: false, default: 1, help: 'fraction of entries (of those whose task vectors differ) kept, by variance across the models', range: { min: 0, max: 1, minExclusive: true } },
      { name: 'int8_mask', kind: 'boolean', required: false, default: false, help: 'accepted for mergekit compatibility; no effect (no masks are stored)' },
    ],
    // mergekit's sce takes no per-model parameters and ignores a weight given anyway; so do we, rather than refuse its configs
    tensorParams: [{ name: 'weight', kind: 'number', required: false, help: 'accepted for mergekit compatibility; ignored (sce weights each task vector by its mean square)' }],
    merge(ctx, inputs, env) {
      const b = ctx.base as number;
      return mergeSce(
        inputs[b],
        inputs.filter((_, i) => i !== b),
        num(ctx.params.select_topk),
        env.scratch,
      );
    },
  },
  // geometric and special methods
  model_stock: {
    name: 'model_stock',
    title: 'Model Stock',
    reference: 'https://arxiv.org/abs/2403.19522',
    summary: 't·mean(models) + (1 − t)·base, t = N·cos/(1 + (N − 1)·cos) from the mean pairwise cosine of the task vectors',
    base: 'required',
    models: { min: 2 },
    shapeMismatch: 'common-submatrix',
    randomized: false,
    params: [{ name: 'filter_wise', kind: 'boolean', required: false, default: false, help: 'one t per last-dim vector (row) instead of one per tensor' }],
    tensorParams: [],
    merge(ctx, inputs) {
      const layout = ctx.params.filter_wise ? lastDimVectors(ctx.shape) : wholeTensor(ctx.numel);
      return modelStockInto(inputs[ctx.base as number], othersOf(ctx, inputs).data, layout);
    },
  },
  nuslerp: {
    name: 'nuslerp',
    title: 'NuSLERP',
    summary: 'slerp of two models (of their task vectors with base_model) at t = w₂/(w₁ + w₂), per tensor, row or column',
    base: 'added',
    models: { min: 2, max: 2 },
    shapeMismatch: 'common-submatrix',
    randomized: false,
    params: [
      // mergekit's names: with flatten off, row_wise=false interpolates W[i,:] (last dim) and row_wise=true W[:,j] (dim 0)
      { name: 'nuslerp_row_wise', kind: 'boolean', required: false, default: false, help: 'without flatten: interpolate along dim 0 (a weight\'s columns) instead of the last dim (its rows)' },
      { name: 'nuslerp_flatten', kind: 'boolean', required: false, default: true, help: 'interpolate the whole tensor as one vector' },
    ],
    tensorParams: [{ ...WEIGHT, help: "the model's weight; only the ratio of the two matters" }],
    merge(ctx, inputs) {
      const others = othersOf(ctx, inputs);
      const [w1, w2] = others.index.map((i) => num(ctx.inputParams[i].weight));
      const layout = ctx.params.nuslerp_flatten ? wholeTensor(ctx.numel) : ctx.params.nuslerp_row_wise ? firstDimVectors(ctx.shape) : lastDimVectors(ctx.shape);
      return nuslerpInto(nuslerpT(w1, w2), others.data[0], others.data[1], baseOf(ctx, inputs), layout);
    },
  },
  multislerp: {
    name: 'multislerp',
    title: 'Multi-SLERP',
    reference: 'https://goddard.blog/posts/multislerp-wow-what-a-cool-idea',
    summary: 'weighted spherical mean of any number of models (of their task vectors with base_model), scaled by the weighted mean norm',
    base: 'added',
    randomized: false,
    params: [
      { name: 'normalize_weights', kind: 'boolean', required: false, default: true, help: 'divide the weights by their sum' },
      { name: 'eps', kind: 'number', required: false, default: 1e-8, help: 'added to norms before dividing by them', range: { min: 0, max: 1 } },
    ],
    tensorParams: [WEIGHT],
    check(ctx) {
      if (!ctx.params.normalize_weights) return;
      const total = ctx.inputParams.reduce((s, p, i) => (i === ctx.base ? s : s + num(p.weight)), 0);
      if (total === 0) throw new Error(`the weights of tensor "${ctx.tensor}" sum to 0, so normalize_weights would divide by 0: change the weights or set normalize_weights: false`);
    },
    merge(ctx, inputs) {
      const others = othersOf(ctx, inputs);
      const weights = others.index.map((i) => num(ctx.inputParams[i].weight));
      const opts = { normalizeWeights: ctx.params.normalize_weights as boolean, eps: num(ctx.params.eps), tensor: ctx.tensor };
      return multislerpInto(others.data, weights, baseOf(ctx, inputs), opts);
    },
  },
  karcher: {
    name: 'karcher',
    title: 'Karcher Mean',
    reference: 'https://en.wikipedia.org/wiki/Karcher_mean',
    summary: 'Riemannian mean of all models (base_model too, when given) on the sphere, equal weights, scaled by their mean norm',
    base: 'added',
    shapeMismatch: 'common-submatrix',
    randomized: false,
    params: [
      // the mean converges in a few steps; a bound keeps a typo from spinning for hours
      { name: 'max_iter', kind: 'number', required: false, default: 10, integer: true, help: 'most gradient steps', range: { min: 0, max: 1000 } },
      { name: 'tol', kind: 'number', required: false, default: 1e-5, help: 'stop when the step is shorter than this', range: { min: 0, max: 1, minExclusive: true } },
    ],
    tensorParams: [],
    merge: (ctx, inputs) => karcherInto(inputs, num(ctx.params.max_iter), num(ctx.params.tol)),
  },
  nearswap: {
    name: 'nearswap',
    title: 'NearSwap',
    reference: 'https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001',
    summary: 'each entry moves from base_model toward the other model by at most t',
    base: 'required',
    inputs: 2,
    randomized: false,
    params: [{ name: 't', kind: 'number', required: true, help: 'largest change of an entry' }],
    tensorParams: [],
    merge(ctx, inputs) {
      const b = ctx.base as number;
      return nearswapInto(num(ctx.params.t), inputs[b], inputs[1 - b]);
    },
  },
  arcee_fusion: {
    name: 'arcee_fusion',
    title: 'Arcee Fusion',
    reference: 'https://arcee.ai',
    summary: 'the other model\'s entries whose |Δ|·KL(softmax) importance is at least median + 1.5·IQR replace base_model\'s',
    base: 'required',
    inputs: 2,
    shapeMismatch: 'common-submatrix',
    randomized: false,
    scratch: 2,
    params: [],
    tensorParams: [],
    merge(ctx, inputs, env) {
      const b = ctx.base as number;
      return arceeFusionInto(inputs[b], inputs[1 - b], lastDimVectors(ctx.shape), env.scratch);
    },
  },
  ram: {
    name: 'ram',
    title: 'Reinforced Agent Merging',
    reference: 'https://arxiv.org/abs/2601.13572',
    summary: 'per entry: the one active task vector whole, the mean of several, else base (active: |Δ| > epsilon)',
    base: 'required',
    randomized: false,
    params: [{ name: 'epsilon', kind: 'number', required: false, default: 1e-5, help: 'a task-vector entry counts as active above this magnitude' }],
    tensorParams: [],
    merge: (ctx, inputs) => ramInto(inputs[ctx.base as number], othersOf(ctx, inputs).data, num(ctx.params.epsilon)),
  },
  ramplus_tl: {
    name: 'ramplus_tl',
    title: 'Reinforced Agent Merging Plus (Tensor-Local)',
    reference: 'https://arxiv.org/abs/2601.13572',
    summary: "ram with each model's unique entries scaled by 1 + r·clamp(shared/unique, 0, alpha)",
    base: 'required',
    randomized: false,
    params: [
      { name: 'r', kind: 'number', required: false, default: 0.1, help: 'strength of the rescaling of unique entries' },
      { name: 'alpha', kind: 'number', required: false, default: 0.2, help: 'cap on the shared/unique ratio' },
      { name: 'epsilon', kind: 'number', required: false, default: 1e-5, help: 'a task-vector entry counts as active above this magnitude' },
    ],
    tensorParams: [],
    merge: (ctx, inputs) => ramplusTlInto(inputs[ctx.base as number], othersOf(ctx, inputs).data, num(ctx.params.epsilon), num(ctx.params.r), num(ctx.params.alpha)),
  },
};

export function isMethodName(name: string): name is MethodName {
  return (METHOD_NAMES as readonly string[]).includes(name);
}

function describeParam(p: ParamDef): string {
  if (p.required) return `${p.name} (required)`;
  return p.default === undefined ? p.name : `${p.name}=${p.default}`;
}

/** One line per method with its parameters, for --help. */
export function describeMethods(): string {
  return METHOD_NAMES.map((name) => {
    const m = MERGE_METHODS[name];
    const parts = [
      m.tensorParams.length ? `per model: ${m.tensorParams.map(describeParam).join(', ')}` : '',
      m.params.length ? `merge-wide: ${m.params.map(describeParam).join(', ')}` : '',
      m.base === 'required' ? 'needs base_model' : m.base === 'added' ? 'base_model optional' : '',
    ].filter(Boolean);
    return `  ${name.padEnd(16)} ${m.summary}\n  ${''.padEnd(16)} ${parts.join('; ')}`;
  }).join('\n');
}
