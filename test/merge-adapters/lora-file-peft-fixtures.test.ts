/**
 * PEFT's add_weighted_adapter fixtures (test/fixtures/peft-merge) replayed through kohya LoRA files:
 * each source adapter is written as a kohya file (lora_down = lora_A, lora_up = lora_B, alpha =
 * lora_alpha, stems lora_unet_lin1 / lora_unet_lin2) and merged by mergeAdapters.
 *
 * On paper, with s_i = alpha_i/r_i read from the file:
 * - cat and the factor-wise family (linear, ties, magnitude_prune, dare_*) get s_i as PEFT gets
 *   lora_alpha/r, so they are PEFT's formulas on PEFT's numbers: same factors, same delta. (These
 *   terms once entered as √s·A and √s·B with scaling 1: the products agree, and pruning and DARE
 *   commute with a positive scale, but TIES' 'total' election sums the *unweighted* factors, which
 *   were then √s_i·A_i, not PEFT's A_i: eq_ties_total and eq_dare_ties_total were 65–75% off.)
 * - the svd family: PEFT weights s_i·B_i·A_i by w_i·s_i (its double scaling); for files the
 *   documented formula is w_i alone (√s_i folded into each factor, scaling 1), so the fixture's delta
 *   is not the target: the result is checked against the rank-r truncation of the single-scaled
 *   combination, re-derived here from the fixture's inputs.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { join } from 'node:path';
import { openSafetensors } from '../../src/io/safetensors.js';
import { getBackend } from '../../src/linalg/index.js';
import { MERGE_METHODS, mergeAdapters, type MethodName } from '../../src/merge-adapters/index.js';
import { clampFactors } from '../../src/merge-adapters/combine-svd.js';
import { combineTaskTensors } from '../../src/merge-adapters/prune.js';
import type { MaskSource } from '../../src/merge-adapters/types.js';
import { matrix, type Matrix } from '../../src/tensor/matrix.js';
import { loadPeftMergeFixture, product, relMaxDiff, replayMasks, type FixtureCase } from '../helpers/merge-adapters.js';
import { kohyaName, truncationOf, writeLoraFactors } from '../helpers/lora-file.js';
import { tempFolders } from '../helpers/synthetic.js';

const backend = await getBackend({ threads: 2 });
const fx = await loadPeftMergeFixture();
const folder = tempFolders('lora-file-peft-');
const MODULES = Object.keys(fx.modules);
const stemOf = (module: string) => kohyaName('lora_unet', module);

/** `<set>/<adapter>` → its kohya file, written key by key by the test helper. */
const files = new Map<string, string>();
let dir: string;

/** PEFT's recorded DARE masks, asked for by kohya stem. */
function kohyaMasks(c: FixtureCase): MaskSource {
  const replay = replayMasks(fx, c);
  const byStem = new Map(MODULES.map((m) => [stemOf(m), m]));
  return (req) => replay({ ...req, module: byStem.get(req.module)! });
}

/** mergeAdapters on the case's kohya files, with only the settings the case (and so its method) has. */
function merge(c: FixtureCase, out: string, clamp = c.svd_clamp) {
  return mergeAdapters({
    adapters: c.adapters.map((a, i) => ({ path: files.get(`${c.input_set}/${a}`)!, weight: c.weights[i] })),
    method: c.combination_type as MethodName,
    out: join(dir, out),
    backend,
    ...(c.density !== null ? { density: c.density } : {}),
    ...(c.majority_sign_method !== null ? { majoritySign: c.majority_sign_method } : {}),
    ...(c.svd_rank !== null ? { svdRank: c.svd_rank } : {}),
    ...(clamp !== null ? { svdClamp: clamp } : {}),
    ...(c.random ? { masks: kohyaMasks(c) } : {}),
  });
}

interface OutModule {
  up: Matrix;
  down: Matrix;
  /** (alpha/r)·up·down */
  delta: Matrix;
}

async function readOutput(out: string): Promise<Map<string, OutModule>> {
  const file = await openSafetensors(join(dir, out));
  try {
    const modules = new Map<string, OutModule>();
    for (const module of MODULES) {
      const stem = stemOf(module);
      const { out_features: rows, in_features: cols } = fx.modules[module];
      const r = file.info(`${stem}.lora_down.weight`).shape[0];
      const down = matrix(r, cols, await file.read(`${stem}.lora_down.weight`));
      const up = matrix(rows, r, await file.read(`${stem}.lora_up.weight`));
      const alpha = (await file.read(`${stem}.alpha`))[0];
      modules.set(module, { up, down, delta: product(up, down, alpha / r) });
    }
    return modules;
  } finally {
    await file.close();
  }
}

/** The rank-r truncation of the documented combination (below), once per case and module. */
const truncations = new Map<string, { S: number[]; product: Float64Array }>();
function documentedResult(c: FixtureCase, module: string): { S: number[]; product: Float64Array } {
  const key = `${c.name}/${module}`;
  if (!truncations.has(key)) {
    const { out_features: rows, in_features: cols } = fx.modules[module];
    truncations.set(key, truncationOf(singleScaledCombination(c, module), rows, cols, c.result.r));
  }
  return truncations.get(key)!;
}

/** Max |D·Dᵀ − I| over the rows of D. */
function orthonormalityError(d: Matrix): number {
  let worst = 0;
  for (let i = 0; i < d.rows; i++) {
    for (let j = 0; j < d.rows; j++) {
      let s = 0;
      for (let k = 0; k < d.cols; k++) s += d.data[i * d.cols + k] * d.data[j * d.cols + k];
      worst = Math.max(worst, Math.abs(s - (i === j ? 1 : 0)));
    }
  }
  return worst;
}

/**
 * The documented svd-family input for files: `step` on the deltas Δ_i = s_i·B_i·A_i with weights
 * w_i (single scaling), from the fixture's inputs; plain svd is the fixture's exact weighted sum.
 */
function singleScaledCombination(c: FixtureCase, module: string): Float32Array {
  const step = MERGE_METHODS[c.resolved_combination_type as MethodName].step;
  if (step === 'sum') return fx.tensor(`reference/${c.input_set}/${module}/weighted_sum`).data;
  const meta = new Map(fx.inputs[c.input_set].adapters.map((a) => [a.name, a]));
  const deltas = c.adapters.map((a) => {
    const A = fx.tensor(`${c.input_set}/${module}/${a}/lora_A`);
    const B = fx.tensor(`${c.input_set}/${module}/${a}/lora_B`);
    return product(B, A, meta.get(a)!.scaling).data;
  });
  const masks = c.random ? replayMasks(fx, c) : undefined;
  return combineTaskTensors(step, deltas, c.weights, {
    density: c.density ?? 1,
    majoritySign: c.majority_sign_method ?? 'total',
    mask: (i) => masks!({ module, target: 'delta', adapter: i, size: deltas[i].length }),
  });
}

describe('PEFT add_weighted_adapter fixtures through kohya LoRA files', () => {
  before(async () => {
    dir = await folder('cases');
    for (const set of ['eq', 'mixed'] as const) {
      for (const a of fx.inputs[set].adapters) {
        const path = join(dir, `${set}-${a.name}.safetensors`);
        const entries = MODULES.map((module) => ({
          module: { stem: stemOf(module), out: fx.modules[module].out_features, in: fx.modules[module].in_features, rank: a.r, alpha: a.lora_alpha },
          factors: { down: fx.tensor(`${set}/${module}/${a.name}/lora_A`).data, up: fx.tensor(`${set}/${module}/${a.name}/lora_B`).data },
        }));
        await writeLoraFactors(path, 'kohya', entries);
        files.set(`${set}/${a.name}`, path);
      }
    }
  });

  it('covers all 29 cases and both error cases', () => {
    assert.equal(fx.cases.length, 29);
    assert.equal(fx.errorCases.length, 2);
  });

  for (const c of fx.cases) {
    const method = MERGE_METHODS[c.resolved_combination_type as MethodName];
    it(`${c.name} (${c.resolved_combination_type})`, async () => {
      const report = await merge(c, `${c.name}.safetensors`);
      assert.equal(report.resolvedMethod, c.resolved_combination_type);
      const got = await readOutput(`${c.name}.safetensors`);
      for (const [module, info] of Object.entries(c.modules)) {
        const where = `${c.name}/${module}`;
        const { up, down, delta } = got.get(module)!;
        const wantDelta = fx.tensor(info.tensors.delta);
        assert.equal(down.rows, c.result.r, `${where}: rank`);

        if (method.family !== 'svd') {
          // the README's element-wise tolerance: (alpha/r)·up·down is PEFT's delta
          const e = relMaxDiff(delta.data, wantDelta.data);
          assert.ok(e <= 1e-5, `${where}: delta off PEFT's by ${e}`);
          // and the factors themselves are PEFT's lora_A / lora_B (the output has alpha = r)
          assert.ok(relMaxDiff(down.data, fx.tensor(info.tensors.lora_A).data) <= 1e-5, `${where}: lora_down`);
          assert.ok(relMaxDiff(up.data, fx.tensor(info.tensors.lora_B).data) <= 1e-5, `${where}: lora_up`);
          continue;
        }

        const want = documentedResult(c, module);
        // PEFT's double-scaled result is far from this: the single scaling really is in effect
        assert.ok(relMaxDiff(delta.data, wantDelta.data) > 0.1, `${where}: matches PEFT's double-scaled delta`);
        if (c.svd_clamp === null) {
          // the documented split: down = V_rᵀ (orthonormal rows), up = U_r·diag(S_r), so σ_j = ‖up[:, j]‖
          assert.ok(orthonormalityError(down) <= 1e-5, `${where}: lora_down rows are not orthonormal`);
          const S = Array.from({ length: up.cols }, (_, j) => Math.hypot(...Array.from({ length: up.rows }, (_, i) => up.data[i * up.cols + j])));
          const sErr = Math.max(...S.map((s, i) => Math.abs(s - want.S[i]))) / want.S[0];
          assert.ok(sErr <= 1e-5, `${where}: singular values off by ${sErr}`);
          const e = relMaxDiff(delta.data, want.product);
          assert.ok(e <= 1e-4, `${where}: up·down off the truncation by ${e}`);
        }
      }

      if (c.svd_clamp !== null) {
        // the clamp bound depends on the SVD's signs: clamp our own unclamped result (checked against
        // the formula) and compare element-wise with the clamped output
        const plainOut = `${c.name}-unclamped.safetensors`;
        await merge(c, plainOut, null);
        const plain = await readOutput(plainOut);
        for (const module of MODULES) {
          const where = `${c.name}/${module}`;
          const p = plain.get(module)!;
          assert.ok(relMaxDiff(p.delta.data, documentedResult(c, module).product) <= 1e-4, `${where}: unclamped up·down`);
          const clamped = { A: matrix(p.down.rows, p.down.cols, p.down.data.slice()), B: matrix(p.up.rows, p.up.cols, p.up.data.slice()) };
          const hi = clampFactors(clamped, c.svd_clamp);
          const row = report.modules.find((m) => m.name === stemOf(module))!;
          assert.ok(Math.abs(row.clampHi! - hi) <= 1e-6 * hi, `${where}: clampHi ${row.clampHi} vs ${hi}`);
          const g = got.get(module)!;
          assert.ok(relMaxDiff(g.down.data, clamped.A.data) <= 1e-5, `${where}: clamped lora_down`);
          assert.ok(relMaxDiff(g.up.data, clamped.B.data) <= 1e-5, `${where}: clamped lora_up`);
          assert.ok(relMaxDiff(g.delta.data, p.delta.data) > 1e-3, `${where}: the clamp changed nothing`);
        }
      }
    });
  }

  for (const e of fx.errorCases) {
    it(`${e.name}: ${e.combination_type} on mixed ranks is refused as PEFT refuses it`, async () => {
      const paths = ['a0', 'a1', 'a2'].map((a) => files.get(`${e.input_set}/${a}`)!);
      await assert.rejects(
        mergeAdapters({
          adapters: paths.map((path, i) => ({ path, weight: e.weights[i] })),
          method: e.combination_type as MethodName,
          out: join(dir, `${e.name}.safetensors`),
          backend,
          ...(e.density !== null ? { density: e.density } : {}),
        }),
        (err: Error) =>
          /same rank/.test(err.message) && err.message.includes(`${paths[0]}: r=4`) && err.message.includes(`${paths[1]}: r=6`) && /--exact/.test(err.message),
      );
    });
  }
});
