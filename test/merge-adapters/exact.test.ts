/**
 * --exact merges against the exact weighted sum Σ w_i·s_i·B_i·A_i (the fixtures' reference
 * tensors and dense f64 sums), and the cheap error measure against a dense one.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getBackend } from '../../src/linalg/index.js';
import { createRng } from '../../src/linalg/random.js';
import { svdSmall } from '../../src/linalg/svd-small.js';
import { combinedDeltas } from '../../src/merge-adapters/combine-svd.js';
import { compareToWeightedSum } from '../../src/merge-adapters/exact.js';
import { MERGE_METHODS, mergeModule, type MethodName } from '../../src/merge-adapters/methods.js';
import { electSign, magnitudePruneInPlace } from '../../src/merge-adapters/prune.js';
import type { MergeTerm, ModuleMergeContext } from '../../src/merge-adapters/types.js';
import { matrix, type Matrix } from '../../src/tensor/matrix.js';
import { fixtureTerms, loadPeftMergeFixture, product, relMaxDiff } from '../helpers/merge-adapters.js';

const backend = await getBackend({ threads: 2 });
const fx = await loadPeftMergeFixture();
const WEIGHTS = [0.7, 0.3, -0.5];

function gaussian(rows: number, cols: number, seed: number, scale = 1): Matrix {
  const m = matrix(rows, cols);
  createRng(seed).fillNormal(m.data);
  for (let i = 0; i < m.data.length; i++) m.data[i] *= scale;
  return m;
}

function ctxFor(terms: MergeTerm[], rank: number, exact: boolean, extra: Partial<ModuleMergeContext> = {}): ModuleMergeContext {
  return {
    backend,
    module: 'm',
    terms,
    density: 0.5,
    majoritySign: 'total',
    rank,
    exact,
    masks: () => {
      throw new Error('no masks here');
    },
    ...extra,
  };
}

async function merge(name: MethodName, ctx: ModuleMergeContext) {
  return mergeModule(MERGE_METHODS[name], ctx);
}

/** The best rank-r approximation of a dense matrix (f64 Jacobi SVD). */
function truncated(x: Matrix, r: number): Matrix {
  const { U, S, V } = svdSmall(x);
  const out = matrix(x.rows, x.cols);
  for (let i = 0; i < x.rows; i++) {
    for (let j = 0; j < x.cols; j++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += U.data[i * U.cols + k] * S[k] * V.data[j * V.cols + k];
      out.data[i * x.cols + j] = s;
    }
  }
  return out;
}

function frobenius(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

describe('exact merges against the fixtures\' weighted sums', () => {
  for (const set of ['eq', 'mixed'] as const) {
    for (const module of ['lin1', 'lin2']) {
      const reference = fx.tensor(`reference/${set}/${module}/weighted_sum`);
      const terms = () => fixtureTerms(fx, set, module, ['a0', 'a1', 'a2'], WEIGHTS);

      it(`${set}/${module}: linear --exact is lossless (Σ w_i·s_i·B_i·A_i to 1e-5)`, async () => {
        const merged = await merge('linear', ctxFor(terms(), Infinity, true));
        assert.equal(merged.A.rows, set === 'eq' ? 12 : 12);
        const e = relMaxDiff(product(merged.B, merged.A).data, reference.data);
        assert.ok(e <= 1e-5, `off by ${e}`);
        const cmp = await compareToWeightedSum(backend, merged, terms());
        assert.ok(cmp.relError! < 1e-6, `reported ${cmp.relError}`);
      });

      it(`${set}/${module}: svd --exact --svd-rank 3 is the truncated SVD of the weighted sum`, async () => {
        const merged = await merge('svd', ctxFor(terms(), 3, true));
        const want = truncated(reference, 3);
        const e = relMaxDiff(product(merged.B, merged.A).data, want.data);
        assert.ok(e <= 1e-5, `off by ${e}`);
        // and the reported error is the truncation's: √(Σ_{i>3} σ_i²) / ‖X‖
        const S = svdSmall(reference).S;
        const tail = Math.sqrt(S.slice(3).reduce((s, x) => s + x * x, 0)) / Math.sqrt(S.reduce((s, x) => s + x * x, 0));
        const cmp = await compareToWeightedSum(backend, merged, terms());
        assert.ok(Math.abs(cmp.relError! - tail) < 1e-5, `reported ${cmp.relError}, truncation error ${tail}`);
      });
    }
  }

  it('svd --exact is PEFT\'s svd with the double scaling taken out (weights w_i / s_i)', async () => {
    for (const set of ['eq', 'mixed'] as const) {
      const exact = await merge('svd', ctxFor(fixtureTerms(fx, set, 'lin1', ['a0', 'a1', 'a2'], WEIGHTS), 4, true));
      const scalings = fx.inputs[set].adapters.map((a) => a.scaling);
      const compat = await merge('svd', ctxFor(fixtureTerms(fx, set, 'lin1', ['a0', 'a1', 'a2'], WEIGHTS.map((w, i) => w / scalings[i])), 4, false));
      const e = relMaxDiff(product(exact.B, exact.A).data, product(compat.B, compat.A).data);
      assert.ok(e < 1e-5, `${set}: ${e}`);
    }
  });

  it('ties --exact equals TIES on the true deltas with weights w_i, then the truncated SVD', async () => {
    const terms = fixtureTerms(fx, 'eq', 'lin2', ['a0', 'a1', 'a2'], WEIGHTS);
    const merged = await merge('ties', ctxFor(terms, 4, true, { majoritySign: 'frequency' }));
    assert.equal(merged.A.rows, 4);
    // independent reference: dense deltas, pruning, vote, mean of agreeing weighted entries
    const deltas = terms.map((t) => magnitudePruneInPlace(product(t.B, t.A, t.scaling).data, 0.5));
    const sign = electSign(deltas, 'frequency');
    const x = matrix(40, 56);
    for (let j = 0; j < x.data.length; j++) {
      let sum = 0;
      let count = 0;
      deltas.forEach((d, i) => {
        if (Math.sign(d[j]) === sign[j]) {
          sum += d[j] * WEIGHTS[i];
          count++;
        }
      });
      x.data[j] = sum / Math.max(count, 1);
    }
    const e = relMaxDiff(product(merged.B, merged.A).data, truncated(x, 4).data);
    assert.ok(e < 1e-4, `off by ${e}`);
  });
});

describe('element-wise SVD path on shapes past the exact small SVD', () => {
  it('the randomized SVD of a TIES-merged delta equals its truncated SVD', async () => {
    // three rank-8 adapters on a 300×260 layer: min(m, n) is far above rank + oversampling
    const terms: MergeTerm[] = [0, 1, 2].map((i) => ({
      adapter: i,
      A: gaussian(8, 260, 10 + i, 0.2),
      B: gaussian(300, 8, 20 + i, 0.2),
      scaling: [2, 1, 4][i],
      weight: WEIGHTS[i],
    }));
    const ctx = ctxFor(terms, 8, true);
    const merged = await merge('ties_svd', ctx);
    const want = truncated(await combinedDeltas(ctxFor(terms, 8, true), 'ties'), 8);
    const e = relMaxDiff(product(merged.B, merged.A).data, want.data);
    assert.ok(e < 1e-4, `randomized vs exact truncated SVD: ${e}`);
  });
});

describe('compareToWeightedSum', () => {
  // 320×280 = 89600 entries: past the dense shortcut, so the factored formula runs
  const terms: MergeTerm[] = [0, 1, 2].map((i) => ({
    adapter: i,
    A: gaussian([4, 6, 2][i], 280, 30 + i),
    B: gaussian(320, [4, 6, 2][i], 40 + i),
    scaling: [2, 2 / 3, 8][i],
    weight: WEIGHTS[i],
  }));
  const dense = matrix(320, 280);
  terms.forEach((t) => product(t.B, t.A, t.weight * t.scaling).data.forEach((x, j) => (dense.data[j] += x)));

  it('matches a dense computation for an unrelated result', async () => {
    const result = { A: gaussian(5, 280, 50), B: gaussian(320, 5, 51, 3) };
    const y = product(result.B, result.A);
    const want = frobenius(y.data.map((v, j) => v - dense.data[j])) / frobenius(dense.data);
    const cmp = await compareToWeightedSum(backend, result, terms);
    assert.ok(Math.abs(cmp.relError! - want) < 1e-5 * want, `${cmp.relError} vs ${want}`);
    assert.ok(Math.abs(cmp.exactNorm - frobenius(dense.data)) < 1e-5 * cmp.exactNorm);
  });

  it('reports ~0 for the exact merge, the truncation error for a truncated one, 1 for an empty one', async () => {
    const cat = await merge('cat', ctxFor(terms, Infinity, false));
    assert.ok((await compareToWeightedSum(backend, cat, terms)).relError! < 1e-5);
    const svd4 = await merge('svd', ctxFor(terms, 4, true));
    const S = svdSmall(dense).S;
    const tail = Math.sqrt(S.slice(4).reduce((s, x) => s + x * x, 0) / S.reduce((s, x) => s + x * x, 0));
    const cmp = await compareToWeightedSum(backend, svd4, terms);
    assert.ok(Math.abs(cmp.relError! - tail) < 1e-5, `${cmp.relError} vs ${tail}`);
    const empty = { A: matrix(0, 280), B: matrix(320, 0) };
    assert.ok(Math.abs((await compareToWeightedSum(backend, empty, terms)).relError! - 1) < 1e-6);
  });

  it('gives rank 0 when the adapters cancel, and no relative error against a zero sum', async () => {
    const cancelling = (t: MergeTerm): MergeTerm[] => [
      { ...t, weight: 1 },
      { ...t, adapter: 1, weight: -1 },
    ];
    const big = cancelling(terms[0]);
    for (const name of ['svd', 'ties_svd'] as const) {
      const merged = await merge(name, ctxFor(big, 4, true));
      assert.deepEqual([merged.A.rows, merged.B.cols], [0, 0], name);
    }
    const cmp = await compareToWeightedSum(backend, await merge('svd', ctxFor(big, 4, true)), big);
    assert.ok(cmp.exactNorm < 1e-5 * frobenius(terms[0].B.data) * frobenius(terms[0].A.data), `exact norm ${cmp.exactNorm}`);
    // small enough for the dense f64 comparison, where the cancellation is exact
    const small = cancelling({ adapter: 0, A: gaussian(3, 12, 60), B: gaussian(10, 3, 61), scaling: 2, weight: 1 });
    const merged = await merge('svd', ctxFor(small, 3, true));
    assert.equal(merged.A.rows, 0);
    const zero = await compareToWeightedSum(backend, merged, small);
    assert.equal(zero.relError, null);
    assert.ok(zero.exactNorm < 1e-12);
  });
});
