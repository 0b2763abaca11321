/**
 * PEFT add_weighted_adapter reference fixtures (test/fixtures/peft-merge, copied with its README, generator and checker):
 * loading, turning fixture inputs into merge terms or PEFT adapter folders, replaying DARE masks,
 * and the comparisons the README prescribes.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openSafetensors } from '../../src/io/safetensors.js';
import { PeftAdapterWriter } from '../../src/lora/adapter.js';
import { matrix, type Matrix } from '../../src/tensor/matrix.js';
import type { MaskSource, MergeTerm } from '../../src/merge-adapters/types.js';
import { REPO_ROOT } from './cli.js';

export const FIXTURE_DIR = join(REPO_ROOT, 'test', 'fixtures', 'peft-merge');

export interface FixtureModule {
  tensors: Record<string, string> & { dare_masks?: Partial<Record<'A' | 'B' | 'delta', string[]>> };
  rel_err_vs_weighted_sum: number;
  clamp_hi?: number;
}

export interface FixtureCase {
  name: string;
  input_set: 'eq' | 'mixed';
  adapters: string[];
  combination_type: string;
  resolved_combination_type: string;
  weights: number[];
  density: number | null;
  majority_sign_method: 'total' | 'frequency' | null;
  svd_rank: number | null;
  svd_clamp: number | null;
  random: boolean;
  result: { r: number; lora_alpha: number; scaling: number };
  modules: Record<string, FixtureModule>;
}

export interface FixtureAdapter {
  name: string;
  r: number;
  lora_alpha: number;
  scaling: number;
}

export interface PeftMergeFixture {
  cases: FixtureCase[];
  errorCases: Array<{ name: string; input_set: 'eq' | 'mixed'; combination_type: string; weights: number[]; density: number | null; message: string }>;
  inputs: Record<'eq' | 'mixed', { adapters: FixtureAdapter[] }>;
  modules: Record<string, { in_features: number; out_features: number }>;
  /** every tensor of inputs.safetensors and expected.safetensors, by name */
  tensor(name: string): Matrix;
}

export async function loadPeftMergeFixture(): Promise<PeftMergeFixture> {
  const json = JSON.parse(await readFile(join(FIXTURE_DIR, 'cases.json'), 'utf8'));
  const tensors = new Map<string, Matrix>();
  for (const file of ['inputs.safetensors', 'expected.safetensors']) {
    const f = await openSafetensors(join(FIXTURE_DIR, file));
    try {
      for (const t of f.list()) {
        const [rows, cols] = t.shape.length === 1 ? [1, t.shape[0]] : t.shape;
        tensors.set(t.name, matrix(rows, cols, await f.read(t.name)));
      }
    } finally {
      await f.close();
    }
  }
  return {
    cases: json.cases,
    errorCases: json.error_cases,
    inputs: json.inputs,
    modules: json.modules,
    tensor(name) {
      const t = tensors.get(name);
      if (!t) throw new Error(`peft-merge fixture has no tensor "${name}"`);
      return t;
    },
  };
}

/** The source adapters of a case as merge terms for one module (fresh copies: merging may prune in place). */
export function fixtureTerms(fx: PeftMergeFixture, set: 'eq' | 'mixed', module: string, adapters: string[], weights: number[]): MergeTerm[] {
  const meta = new Map(fx.inputs[set].adapters.map((a) => [a.name, a]));
  return adapters.map((name, i) => {
    const A = fx.tensor(`${set}/${module}/${name}/lora_A`);
    const B = fx.tensor(`${set}/${module}/${name}/lora_B`);
    return {
      adapter: i,
      A: matrix(A.rows, A.cols, A.data.slice()),
      B: matrix(B.rows, B.cols, B.data.slice()),
      scaling: meta.get(name)!.scaling,
      weight: weights[i],
    };
  });
}

/** Replays the Bernoulli masks PEFT drew for a DARE case (tensor values 0/1). */
export function replayMasks(fx: PeftMergeFixture, c: FixtureCase): MaskSource {
  return ({ module, target, adapter, size }) => {
    const names = c.modules[module]?.tensors.dare_masks?.[target];
    if (!names) throw new Error(`case ${c.name} recorded no ${target} masks for ${module}`);
    const t = fx.tensor(names[adapter]);
    if (t.data.length !== size) throw new Error(`mask ${names[adapter]} has ${t.data.length} entries, expected ${size}`);
    return Uint8Array.from(t.data, (x) => (x === 1 ? 1 : 0));
  };
}

/** Writes a fixture input set as PEFT adapter folders `<dir>/<set>-<adapter>` and returns their paths. */
export async function writeFixtureAdapters(fx: PeftMergeFixture, set: 'eq' | 'mixed', dir: string, names: string[]): Promise<string[]> {
  const paths: string[] = [];
  for (const name of names) {
    const meta = fx.inputs[set].adapters.find((a) => a.name === name)!;
    const path = join(dir, `${set}-${name}`);
    const w = await PeftAdapterWriter.create(path);
    for (const module of Object.keys(fx.modules)) {
      await w.addModule({
        name: module,
        kind: 'linear',
        A: fx.tensor(`${set}/${module}/${name}/lora_A`),
        B: fx.tensor(`${set}/${module}/${name}/lora_B`),
        alpha: meta.lora_alpha,
      });
    }
    await w.finish();
    paths.push(path);
  }
  return paths;
}

/** B·A in f64, as an f32 matrix. */
export function product(B: Matrix, A: Matrix, scale = 1): Matrix {
  const out = matrix(B.rows, A.cols);
  const r = B.cols;
  for (let i = 0; i < B.rows; i++) {
    for (let j = 0; j < A.cols; j++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += B.data[i * r + k] * A.data[k * A.cols + j];
      out.data[i * A.cols + j] = s * scale;
    }
  }
  return out;
}

export function maxAbs(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
}

/** max |got − want| / max |want|: the README's element-wise tolerance measure. */
export function relMaxDiff(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`length ${got.length} vs ${want.length}`);
  let d = 0;
  for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i] - want[i]));
  return d / maxAbs(want);
}
