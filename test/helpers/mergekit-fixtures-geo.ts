/**
 * mergekit merge-method reference fixtures (test/fixtures/mergekit-merge, copied with its README,
 * generator and checker): loading, and running one method's per-tensor function on a case's tensor
 * with the parameters and model order mergekit recorded, plus the README's comparison.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openSafetensors } from '../../src/io/safetensors.js';
import { MERGE_METHODS, type MergeEnv, type MethodName, type TensorContext } from '../../src/merge/methods.js';
import type { Scalar } from '../../src/merge/params.js';
import { REPO_ROOT } from './cli.js';

export const MERGEKIT_FIXTURE_DIR = join(REPO_ROOT, 'test', 'fixtures', 'mergekit-merge');

/** The README's element-wise bound, relative to max |expected|. */
export const MERGEKIT_REL_TOL = 2e-5;

export interface FixtureTensorInfo {
  expected: string;
  shape: number[];
  is_embed: boolean;
  model_order: string[];
  base_model: string | null;
  parameters: Record<string, Scalar>;
  tensor_parameters: Record<string, Record<string, Scalar | null>>;
  /** arcee_fusion: the recorded float32 scores and mergekit's threshold */
  importance?: string;
  fusion_threshold?: number;
  [extra: string]: unknown;
}

export interface FixtureCase {
  name: string;
  method: string;
  config: Record<string, unknown>;
  nonfinite: boolean;
  tensors: Record<string, FixtureTensorInfo>;
}

export interface FixtureErrorCase {
  name: string;
  method: string;
  config: Record<string, unknown>;
  tensor: string;
  error: string;
  message: string;
}

export interface MergekitFixture {
  cases: FixtureCase[];
  errorCases: FixtureErrorCase[];
  registry: Record<string, { parameters: Array<{ name: string; required: boolean; default: Scalar | null }>; tensor_parameters: Array<{ name: string; required: boolean; default: Scalar | null }> }>;
  /** a fresh copy of a tensor of inputs.safetensors (`<model>/<tensor>`) or expected.safetensors */
  tensor(name: string): Float32Array;
}

export async function loadMergekitFixture(): Promise<MergekitFixture> {
  const json = JSON.parse(await readFile(join(MERGEKIT_FIXTURE_DIR, 'cases.json'), 'utf8'));
  const tensors = new Map<string, Float32Array>();
  for (const file of ['inputs.safetensors', 'expected.safetensors']) {
    // linear_zero_weight_sum is ±inf by design
    const f = (await openSafetensors(join(MERGEKIT_FIXTURE_DIR, file))).allowNonFinite();
    try {
      for (const t of f.list()) tensors.set(t.name, await f.read(t.name));
    } finally {
      await f.close();
    }
  }
  return {
    cases: json.cases,
    errorCases: json.error_cases,
    registry: json.registry,
    tensor(name) {
      const t = tensors.get(name);
      if (!t) throw new Error(`mergekit-merge fixture has no tensor "${name}"`);
      return t.slice();
    },
  };
}

/** The method's context for one fixture tensor: mergekit's resolved parameters, in its model order. */
export function fixtureContext(tensor: string, info: FixtureTensorInfo): TensorContext {
  const base = info.base_model === null ? -1 : info.model_order.indexOf(info.base_model);
  const drop = (p: Record<string, Scalar | null>) => Object.fromEntries(Object.entries(p).filter(([, v]) => v !== null)) as Record<string, Scalar>;
  return {
    tensor,
    numel: info.shape.reduce((a, b) => a * b, 1),
    shape: info.shape,
    base: base >= 0 ? base : undefined,
    params: info.parameters,
    inputParams: info.model_order.map((m) => drop(info.tensor_parameters[m] ?? {})),
    inputLabels: info.model_order.map((m) => `"${m}"`),
  };
}

const env = (numel: number): MergeEnv => ({
  rng: () => {
    throw new Error('a deterministic method drew random numbers');
  },
  scratch: () => new Float32Array(numel),
});

/** Runs `method`'s per-tensor function on a fixture tensor; returns the result. */
export function runFixtureTensor(fx: MergekitFixture, method: MethodName, tensor: string, info: FixtureTensorInfo): Float32Array {
  const ctx = fixtureContext(tensor, info);
  const inputs = info.model_order.map((m) => fx.tensor(`${m}/${tensor}`));
  MERGE_METHODS[method].check?.(ctx);
  return MERGE_METHODS[method].merge(ctx, inputs, env(ctx.numel));
}

/** max |got − want| / max |want|, the README's measure. */
export function relError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) return Infinity;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return diff / Math.max(scale, 1e-30);
}
