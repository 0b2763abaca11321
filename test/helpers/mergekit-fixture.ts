/**
 * Replays the mergekit reference cases (test/fixtures/mergekit-merge, README there) through our
 * per-tensor method functions: each case's tensors with the parameters exactly as mergekit
 * resolved them (cases.json), the inputs in mergekit's model order, and the recorded Bernoulli
 * masks of the random methods fed through the method's RNG hook (one next() per entry: 0 keeps,
 * 1 drops, whatever the keep probability).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Rng } from '../../src/linalg/random.js';
import { MERGE_METHODS, isMethodName, type MergeMethodDef, type TensorContext } from '../../src/merge/methods.js';
import type { Scalar } from '../../src/merge/params.js';
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

/** The tensors of a safetensors file the fixture wrote (F32, contiguous). */
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

let loaded: { fixture: Fixture; inputs: Map<string, Float32Array>; expected: Map<string, Float32Array> } | undefined;

export function loadMergekitFixture(): { fixture: Fixture; inputs: Map<string, Float32Array>; expected: Map<string, Float32Array> } {
  loaded ??= {
    fixture: JSON.parse(readFileSync(join(MERGEKIT_FIXTURE, 'cases.json'), 'utf8')) as Fixture,
    inputs: readSafetensors(join(MERGEKIT_FIXTURE, 'inputs.safetensors')),
    expected: readSafetensors(join(MERGEKIT_FIXTURE, 'expected.safetensors')),
  };
  return loaded;
}

/** An Rng whose next() replays a recorded 0/1 keep mask, entry by entry. */
export function replayMask(mask: Float32Array, label: string): Rng {
  let i = 0;
  const refuse = () => {
    throw new Error(`${label}: a replayed mask only answers next()`);
  };
  return {
    next() {
      if (i >= mask.length) throw new Error(`${label}: more draws than the ${mask.length} recorded mask entries`);
      return mask[i++] === 1 ? 0 : 1;
    },
    normal: refuse,
    fillNormal: refuse,
    fillSigns: refuse,
    nextUint32: refuse,
  };
}

/** The top-left `shape` block of a row-major tensor of `from` shape (mergekit's embedding submatrix). */
function topLeft(x: Float32Array, from: number[], shape: number[]): Float32Array {
  if (from.every((d, i) => d === shape[i])) return x;
  const cols = from[1];
  const out = new Float32Array(shape[0] * shape[1]);
  for (let r = 0; r < shape[0]; r++) out.set(x.subarray(r * cols, r * cols + shape[1]), r * shape[1]);
  return out;
}

export interface ReplayedTensor {
  name: string;
  got: Float32Array;
  expected: Float32Array;
}

/** Whether the fixture case is one of our methods' (the unregistered `count` consensus is not selectable in mergekit either). */
export function replayable(c: FixtureCase): boolean {
  return c.registered && isMethodName(c.method);
}

/**
 * Runs one tensor of a case through its method: check() as the planner would, then merge().
 * Embedding tensors whose inputs differ in rows are first cut to the output's shape, as mergekit's
 * GTA methods (to the base's) and linear (to the common submatrix) do before merging.
 */
export function replayTensor(c: FixtureCase, name: string): ReplayedTensor {
  const { inputs, expected } = loadMergekitFixture();
  const method: MergeMethodDef = MERGE_METHODS[c.method as keyof typeof MERGE_METHODS];
  const t = c.tensors[name];
  const order = t.model_order;
  const defined = (r: Record<string, Json>) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== null)) as Record<string, Scalar>;
  const base = t.base_model === null ? -1 : order.indexOf(t.base_model);
  const context: TensorContext = {
    tensor: name,
    shape: t.shape,
    numel: t.shape.reduce((a, b) => a * b, 1),
    base: base < 0 ? undefined : base,
    params: defined(t.parameters),
    inputParams: order.map((m) => defined(t.tensor_parameters[m] ?? {})),
    inputLabels: order.map((m) => `"${m}"`),
  };
  method.check?.(context);
  const data = order.map((m) => {
    const x = inputs.get(`${m}/${name}`);
    if (!x) throw new Error(`fixture: no input ${m}/${name}`);
    return topLeft(x.slice(), t.input_shapes[m], t.shape);
  });
  const env = {
    rng: (i: number) => {
      const key = `${c.name}/${name}/mask/${order[i]}`;
      const mask = expected.get(key);
      if (!mask) throw new Error(`fixture: no recorded mask ${key}`);
      return replayMask(mask, key);
    },
    scratch: () => new Float32Array(context.numel),
  };
  const want = expected.get(t.expected);
  if (!want) throw new Error(`fixture: no expected tensor ${t.expected}`);
  return { name, got: method.merge(context, data, env), expected: want };
}

/** max|got − expected| / max|expected| (Infinity on a length mismatch). */
export function relativeError(got: Float32Array, expected: Float32Array): number {
  if (got.length !== expected.length) return Infinity;
  let scale = 0;
  let err = 0;
  for (let i = 0; i < got.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]));
    err = Math.max(err, Math.abs(got[i] - expected[i]));
  }
  return scale === 0 ? err : err / scale;
}
