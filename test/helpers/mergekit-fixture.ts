/**
 * Replays the mergekit reference cases (test/fixtures/mergekit-merge, README there) through our
 * per-tensor method functions: each case's tensors with the parameters exactly as mergekit
 * resolved them (cases.json), the inputs in mergekit's model order, inputs of different shapes
 * through the planner's shape rules and the readers' crop (src/merge/shapes.ts), and the recorded
 * Bernoulli masks of the random methods fed through the method's RNG hook (one next() per entry:
 * 0 keeps, 1 drops, whatever the keep probability).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Rng } from '../../src/linalg/random.js';
import { MERGE_METHODS, isMethodName, type MergeEnv, type TensorContext } from '../../src/merge/methods.js';
import type { Scalar } from '../../src/merge/params.js';
import { cropTopLeft, planInputShapes, sameShape, shapeNumel } from '../../src/merge/shapes.js';
import { REPO_ROOT } from './cli.js';

export const MERGEKIT_FIXTURE = join(REPO_ROOT, 'test', 'fixtures', 'mergekit-merge');

/** The README's tolerance: |got − expected| ≤ 2e-5 · max|expected|. */
export const MERGEKIT_TOLERANCE = 2e-5;

type Json = Scalar | null;

export interface FixtureTensor {
  expected: string;
  shape: number[];
  input_shapes: Record<string, number[]>;
  is_embed: boolean;
  model_order: string[];
  base_model: string | null;
  parameters: Record<string, Json>;
  tensor_parameters: Record<string, Record<string, Json>>;
  /** arcee_fusion: the recorded float32 scores, mergekit's threshold and how many entries it kept */
  importance?: string;
  fusion_threshold?: number;
  fusion_kept?: number;
}

export interface FixtureCase {
  name: string;
  method: string;
  registered: boolean;
  random: boolean;
  nonfinite: boolean;
  note: string | null;
  tensors: Record<string, FixtureTensor>;
}

export interface FixtureErrorCase {
  name: string;
  method: string;
  config: Record<string, unknown>;
  tensor: string;
  error: string;
  message: string;
}

export interface RegistryEntry {
  parameters: Array<{ name: string; required: boolean; default: Json }>;
  tensor_parameters: Array<{ name: string; required: boolean; default: Json }>;
}

export interface Fixture {
  cases: FixtureCase[];
  error_cases: FixtureErrorCase[];
  registry: Record<string, RegistryEntry>;
}

/** The tensors of a safetensors file the fixture wrote (F32, contiguous; linear_zero_weight_sum is ±inf by design). */
function readSafetensors(path: string): Map<string, Float32Array> {
  const bytes = readFileSync(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const start = 8 + headerLength;
  const out = new Map<string, Float32Array>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (t.dtype !== 'F32') throw new Error(`${path}: ${name} is ${t.dtype}, expected F32`);
    const [a, b] = t.data_offsets;
    // a copy: aligned, and free to be overwritten by a method
    out.set(name, new Float32Array(bytes.buffer.slice(bytes.byteOffset + start + a, bytes.byteOffset + start + b)));
  }
  return out;
}

export interface LoadedFixture {
  fixture: Fixture;
  inputs: Map<string, Float32Array>;
  expected: Map<string, Float32Array>;
  /** a fresh copy of a tensor of inputs.safetensors (`<model>/<tensor>`) or expected.safetensors */
  tensor(name: string): Float32Array;
}

let loaded: LoadedFixture | undefined;

export function loadMergekitFixture(): LoadedFixture {
  if (loaded) return loaded;
  const inputs = readSafetensors(join(MERGEKIT_FIXTURE, 'inputs.safetensors'));
  const expected = readSafetensors(join(MERGEKIT_FIXTURE, 'expected.safetensors'));
  loaded = {
    fixture: JSON.parse(readFileSync(join(MERGEKIT_FIXTURE, 'cases.json'), 'utf8')) as Fixture,
    inputs,
    expected,
    tensor(name) {
      const t = inputs.get(name) ?? expected.get(name);
      if (!t) throw new Error(`mergekit-merge fixture has no tensor "${name}"`);
      return t.slice();
    },
  };
  return loaded;
}

/** An Rng whose next() (and fillUniform, fillKeepMask) replays a recorded 0/1 keep mask, entry by entry. */
export function replayMask(mask: Float32Array, label: string): Rng {
  let i = 0;
  const refuse = () => {
    throw new Error(`${label}: a replayed mask only answers next(), fillUniform() and fillKeepMask()`);
  };
  const next = (): number => {
    if (i >= mask.length) throw new Error(`${label}: more draws than the ${mask.length} recorded mask entries`);
    return mask[i++] === 1 ? 0 : 1;
  };
  return {
    next,
    fillUniform(out) {
      for (let j = 0; j < out.length; j++) out[j] = next();
    },
    fillKeepMask(out, p) {
      for (let j = 0; j < out.length; j++) out[j] = next() < p ? -1 : 0;
    },
    normal: refuse,
    fillNormal: refuse,
    fillSigns: refuse,
    nextUint32: refuse,
  };
}

/** Whether the fixture case is one of our methods' (the unregistered `count` consensus is not selectable in mergekit either). */
export function replayable(c: FixtureCase): boolean {
  return c.registered && isMethodName(c.method);
}

export interface TensorRun {
  /** the input tensor of a model (default: the fixture's `<model>/<tensor>`) */
  read?: (model: string) => Float32Array;
  /** the RNG of a model (default: refuse, for deterministic methods) */
  rng?: (model: string) => Rng;
}

/**
 * Runs one tensor through `method` as a merge would: the planner's shape rules (a model may be left
 * out, embeddings cut to a common shape), the method's plan-time check, the readers' crop, merge().
 * Returns the result and the models the merge used.
 */
export function runFixtureTensor(method: string, tensor: string, t: Omit<FixtureTensor, 'expected'>, run: TensorRun = {}): { got: Float32Array; used: string[] } {
  if (!isMethodName(method)) throw new Error(`fixture: no method ${method}`);
  const def = MERGE_METHODS[method];
  const read = run.read ?? ((m: string) => loadMergekitFixture().tensor(`${m}/${tensor}`));
  const order = t.model_order;
  const shapes = order.map((m) => t.input_shapes[m]);
  const base = t.base_model === null ? undefined : order.indexOf(t.base_model);
  const plan = planInputShapes({ tensor, method, rule: def.shapeMismatch, shapes, base, labels: order.map((m) => `"${m}"`), embedding: t.is_embed });
  const used = plan.keep.map((i) => order[i]);
  const defined = (r: Record<string, Json>) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== null)) as Record<string, Scalar>;
  const context: TensorContext = {
    tensor,
    shape: plan.shape,
    numel: shapeNumel(plan.shape),
    base: t.base_model === null ? undefined : used.indexOf(t.base_model),
    params: defined(t.parameters),
    inputParams: used.map((m) => defined(t.tensor_parameters[m] ?? {})),
    inputLabels: used.map((m) => `"${m}"`),
  };
  def.check?.(context);
  const data = used.map((m) => {
    const x = read(m);
    const from = t.input_shapes[m];
    return sameShape(from, plan.shape) ? x : cropTopLeft(x, from, new Float32Array(context.numel), plan.shape);
  });
  const env: MergeEnv = {
    rng: (i) => {
      if (!run.rng) throw new Error('a deterministic method drew random numbers');
      return run.rng(used[i]);
    },
    scratch: () => new Float32Array(context.numel),
  };
  return { got: def.merge(context, data, env), used };
}

export interface ReplayedTensor {
  name: string;
  got: Float32Array;
  expected: Float32Array;
}

/** One tensor of a case, with the case's recorded masks for the random methods. */
export function replayTensor(c: FixtureCase, name: string): ReplayedTensor {
  const { expected } = loadMergekitFixture();
  const t = c.tensors[name];
  const rng = (model: string) => {
    const key = `${c.name}/${name}/mask/${model}`;
    const mask = expected.get(key);
    if (!mask) throw new Error(`fixture: no recorded mask ${key}`);
    return replayMask(mask, key);
  };
  const want = expected.get(t.expected);
  if (!want) throw new Error(`fixture: no expected tensor ${t.expected}`);
  return { name, got: runFixtureTensor(c.method, name, t, { rng }).got, expected: want };
}

/** max|got − expected| / max|expected| (Infinity on a length mismatch). */
export function relativeError(got: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (got.length !== expected.length) return Infinity;
  let scale = 0;
  let err = 0;
  for (let i = 0; i < got.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]));
    err = Math.max(err, Math.abs(got[i] - expected[i]));
  }
  return scale === 0 ? err : err / scale;
}
