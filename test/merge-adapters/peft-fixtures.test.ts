/**
 * Every case of PEFT's add_weighted_adapter reference fixtures, module by module, within the
 * tolerances of test/fixtures/peft-merge/README.md.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getBackend } from '../../src/linalg/index.js';
import { MERGE_METHODS, defaultSvdRank, mergeModule, type MethodName } from '../../src/merge-adapters/methods.js';
import { clampFactors, combinedDeltas } from '../../src/merge-adapters/combine-svd.js';
import { compareToWeightedSum } from '../../src/merge-adapters/exact.js';
import type { MaskSource, ModuleMergeContext } from '../../src/merge-adapters/types.js';
import { matrix } from '../../src/tensor/matrix.js';
import { fixtureTerms, loadPeftMergeFixture, maxAbs, product, relMaxDiff, replayMasks, type FixtureCase } from '../helpers/merge-adapters.js';

const backend = await getBackend({ threads: 2 });
const fx = await loadPeftMergeFixture();

const noMasks: MaskSource = () => {
  throw new Error('a deterministic case asked for DARE masks');
};

function context(c: FixtureCase, module: string, exact = false): ModuleMergeContext {
  const maxRank = Math.max(...fx.inputs[c.input_set].adapters.map((a) => a.r));
  const method = MERGE_METHODS[c.resolved_combination_type as MethodName];
  return {
    backend,
    module,
    terms: fixtureTerms(fx, c.input_set, module, c.adapters, c.weights),
    density: c.density ?? 1,
    majoritySign: c.majority_sign_method ?? 'total',
    rank: c.svd_rank ?? defaultSvdRank(method, exact, maxRank),
    svdClamp: c.svd_clamp ?? undefined,
    exact,
    masks: c.random ? replayMasks(fx, c) : noMasks,
  };
}

describe('PEFT add_weighted_adapter fixtures', () => {
  it('covers all 29 cases', () => {
    assert.equal(fx.cases.length, 29);
  });

  for (const c of fx.cases) {
    const method = MERGE_METHODS[c.resolved_combination_type as MethodName];
    it(`${c.name} (${c.resolved_combination_type})`, async () => {
      assert.ok(method, `unknown combination type ${c.resolved_combination_type}`);
      for (const [module, info] of Object.entries(c.modules)) {
        const where = `${c.name}/${module}`;
        const ctx = context(c, module);
        const merged = await mergeModule(method, ctx);
        const wantA = fx.tensor(info.tensors.lora_A);
        const wantB = fx.tensor(info.tensors.lora_B);
        const wantDelta = fx.tensor(info.tensors.delta);
        assert.equal(merged.A.rows, c.result.r, `${where}: rank`);
        const delta = product(merged.B, merged.A, c.result.scaling);

        if (method.family !== 'svd') {
          // cat, linear family, single adapter: the factors themselves are PEFT's
          assert.ok(relMaxDiff(merged.A.data, wantA.data) <= 1e-5, `${where}: lora_A ${relMaxDiff(merged.A.data, wantA.data)}`);
          assert.ok(relMaxDiff(merged.B.data, wantB.data) <= 1e-5, `${where}: lora_B ${relMaxDiff(merged.B.data, wantB.data)}`);
          assert.ok(relMaxDiff(delta.data, wantDelta.data) <= 1e-5, `${where}: delta`);
        } else {
          const wantS = fx.tensor(info.tensors.svd_S).data;
          const sErr = Math.max(...Array.from(wantS, (s, i) => Math.abs(s - merged.S![i]))) / wantS[0];
          assert.ok(sErr <= 1e-5, `${where}: singular values off by ${sErr}`);
          if (method.step !== 'sum') {
            const input = await combinedDeltas(context(c, module), method.step);
            const e = relMaxDiff(input.data, fx.tensor(info.tensors.svd_input).data);
            assert.ok(e <= 1e-5, `${where}: svd_input off by ${e}`);
          }
          if (c.svd_clamp === null) {
            // the factors are sign-ambiguous: compare the product
            const e = relMaxDiff(delta.data, wantDelta.data);
            assert.ok(e <= 1e-4, `${where}: B·A off by ${e}`);
          } else {
            // the clamp bound depends on LAPACK's signs: replay it on PEFT's own pre-clamp factors
            const pre = {
              B: matrix(wantB.rows, wantB.cols, fx.tensor(info.tensors.pre_clamp_lora_B).data.slice()),
              A: matrix(wantA.rows, wantA.cols, fx.tensor(info.tensors.pre_clamp_lora_A).data.slice()),
            };
            const preDelta = product(pre.B, pre.A);
            assert.ok(relMaxDiff(product(merged.B, merged.A).data, preDelta.data) > 0, 'clamping changed nothing');
            const hi = clampFactors(pre, c.svd_clamp);
            assert.ok(Math.abs(hi - info.clamp_hi!) <= 1e-5 * Math.abs(info.clamp_hi!), `${where}: clamp_hi ${hi} vs ${info.clamp_hi}`);
            assert.ok(relMaxDiff(pre.A.data, wantA.data) <= 1e-5, `${where}: clamped lora_A`);
            assert.ok(relMaxDiff(pre.B.data, wantB.data) <= 1e-5, `${where}: clamped lora_B`);
            // our own clamp bound is a quantile of our own (differently signed) factors: within their range
            assert.ok(merged.clampHi! > 0 && merged.clampHi! <= maxAbs(merged.B.data), `${where}: clampHi ${merged.clampHi}`);
          }
        }
        if (c.svd_clamp === null) {
          const cmp = await compareToWeightedSum(backend, merged, fixtureTerms(fx, c.input_set, module, c.adapters, c.weights));
          const want = info.rel_err_vs_weighted_sum;
          const tol = want < 1e-4 ? 1e-5 : 1e-4 * want;
          assert.ok(Math.abs(cmp.relError! - want) <= tol, `${where}: relError ${cmp.relError} vs PEFT's ${want}`);
        }
      }
    });
  }

  for (const e of fx.errorCases) {
    it(`${e.name}: ${e.combination_type} on mixed ranks fails clearly`, async () => {
      const c = { ...fx.cases[0], input_set: e.input_set, adapters: ['a0', 'a1', 'a2'], weights: e.weights, density: e.density, random: false };
      const ctx = context(c, 'lin1');
      await assert.rejects(
        mergeModule(MERGE_METHODS[e.combination_type as MethodName], ctx),
        (err: Error) => /same rank/.test(err.message) && /r=4/.test(err.message) && /r=6/.test(err.message) && /--exact/.test(err.message),
      );
    });
  }
});
