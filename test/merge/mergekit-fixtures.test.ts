/**
 * Every case of mergekit's reference fixtures (test/fixtures/mergekit-merge) whose method we have,
 * through our per-tensor functions with mergekit's resolved parameters and recorded masks: within
 * the README's tolerance, cases the README calls bit-identical to each other identical here too,
 * our parameter table against mergekit's registry, della's keep probabilities against the recorded
 * ones, embeddings of different sizes merged as mergekit merges them, and mergekit's error cases
 * for these methods refused.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dellaKeepProbabilities } from '../../src/sparsify/della.js';
import { MERGE_METHODS, METHOD_NAMES } from '../../src/merge/methods.js';
import { MERGEKIT_TOLERANCE, loadMergekitFixture, relativeError, replayTensor, replayable, runFixtureTensor, type FixtureCase } from '../helpers/mergekit-fixture.js';

const { fixture, inputs, expected } = loadMergekitFixture();
const byName = new Map(fixture.cases.map((c) => [c.name, c]));

/** Cases we refuse on purpose, with the refusal. */
const REFUSED: Record<string, RegExp> = {
  // mergekit divides by the zero weight sum and writes ±inf; we stop at plan time
  linear_zero_weight_sum: /sum to 0, so normalize would divide by 0/,
};

/** Parameters we accept beyond mergekit's registry, for configs mergekit accepts without using them. */
const COMPAT_EXTRAS: Record<string, string[]> = { sce: ['weight'] };

function replayCase(c: FixtureCase): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const name of Object.keys(c.tensors)) {
    const { got, expected: want } = replayTensor(c, name);
    const err = relativeError(got, want);
    assert.ok(err <= MERGEKIT_TOLERANCE, `${c.name} ${name}: max relative error ${err}`);
    out.set(name, got);
  }
  return out;
}

describe('mergekit reference cases', () => {
  const cases = fixture.cases.filter(replayable);

  it('covers every method we have', () => {
    const covered = new Set(cases.map((c) => c.method));
    assert.deepEqual(
      METHOD_NAMES.filter((m) => !covered.has(m)),
      [],
    );
  });

  for (const c of cases) {
    it(`${c.name}${c.note ? ` (${c.note})` : ''}`, () => {
      const refusal = REFUSED[c.name];
      if (refusal) {
        for (const name of Object.keys(c.tensors)) assert.throws(() => replayTensor(c, name), refusal);
        return;
      }
      replayCase(c);
    });
  }

  it('gives bit-identical results where mergekit does (int8_mask, ignored weights, flatten over row_wise)', () => {
    const groups = [['ties', 'ties_int8_mask'], ['sce_topk', 'sce_topk_int8', 'sce_ignores_weight'], ['nuslerp', 'nuslerp_row_wise_flatten']];
    for (const group of groups) {
      const runs = group.map((n) => byName.get(n) as FixtureCase).filter(replayable).map(replayCase);
      for (const run of runs.slice(1)) assert.deepEqual(run, runs[0], group.join(' = '));
    }
  });
});

describe('the method table against mergekit’s registry', () => {
  for (const name of METHOD_NAMES.filter((m) => fixture.registry[m])) {
    it(name, () => {
      const ours = MERGE_METHODS[name];
      const theirs = fixture.registry[name];
      const view = (defs: ReadonlyArray<{ name: string; required: boolean; default?: unknown }>) =>
        defs
          .filter((p) => !(COMPAT_EXTRAS[name] ?? []).includes(p.name))
          .map((p) => ({ name: p.name, required: p.required, default: p.default ?? null }))
          .sort((a, b) => a.name.localeCompare(b.name));
      assert.deepEqual(view(ours.params), view(theirs.parameters));
      assert.deepEqual(view(ours.tensorParams), view(theirs.tensor_parameters));
    });
  }
});

describe('della', () => {
  it('keep probabilities ranked along dim 1 match the recorded ones', () => {
    for (const c of fixture.cases.filter((x) => x.method === 'della' || x.method === 'della_linear')) {
      for (const [name, t] of Object.entries(c.tensors)) {
        for (const model of t.model_order.filter((m) => m !== t.base_model)) {
          const p = t.tensor_parameters[model];
          const base = inputs.get(`base/${name}`) as Float32Array;
          const delta = (inputs.get(`${model}/${name}`) as Float32Array).map((v, i) => v - base[i]);
          const probs = new Float32Array(delta.length);
          dellaKeepProbabilities(delta, t.shape, p.density as number, p.epsilon as number, probs);
          const want = expected.get(`${c.name}/${name}/probs/${model}`) as Float32Array;
          assert.ok(relativeError(probs, want) < 1e-6, `${c.name} ${name} ${model}: ${relativeError(probs, want)}`);
        }
      }
    }
  });

  it('refuses mergekit’s error case (density ± epsilon outside (0, 1)) at plan time', () => {
    const e = fixture.error_cases.find((x) => x.name === 'error_della_epsilon');
    assert.ok(e);
    const c = { ...(byName.get('della') as FixtureCase), name: e.name };
    const t = c.tensors[e.tensor];
    const tensorParameters = Object.fromEntries(Object.entries(t.tensor_parameters).map(([m, p]) => [m, { ...p, epsilon: 0.5 }]));
    assert.throws(() => replayTensor({ ...c, tensors: { [e.tensor]: { ...t, tensor_parameters: tensorParameters } } }, e.tensor), /density 0\.5 ± epsilon 0\.5 must stay inside \(0, 1\)/);
  });
});

describe('embeddings of different sizes (m2 has 4 more rows)', () => {
  const EMBED = 'model.embed_tokens.weight';
  const embedCases = fixture.cases.filter((c) => c.name.endsWith('_embed'));

  it('linear_embed and task_arithmetic_embed: the planner’s shape rule and the readers’ crop give mergekit’s tensors', () => {
    assert.deepEqual(embedCases.map((c) => c.name), ['linear_embed', 'task_arithmetic_embed']);
    for (const c of embedCases) {
      const t = c.tensors[EMBED];
      assert.ok(t.is_embed && t.input_shapes.m2[0] === 44 && t.shape[0] === 40, c.name);
      assert.ok(relativeError(replayTensor(c, EMBED).got, replayTensor(c, EMBED).expected) <= MERGEKIT_TOLERANCE, c.name);
    }
  });

  it('refuses mergekit’s error_linear_shape_mismatch: the same tensors not marked as an embedding', () => {
    const e = fixture.error_cases.find((x) => x.name === 'error_linear_shape_mismatch');
    assert.ok(e && e.tensor === EMBED);
    const t = (byName.get('linear_embed') as FixtureCase).tensors[EMBED];
    assert.throws(
      () => runFixtureTensor('linear', EMBED, { ...t, is_embed: false }),
      /^Error: tensor "model\.embed_tokens\.weight" has shape \[40, 32\] in "m1" but \[44, 32\] in "m2": the models are not the same architecture and size \(only embeddings \(embed_tokens, lm_head\) are cut to a common shape\)$/,
    );
  });

  it('task-vector methods leave a model of another shape out of a tensor that is not an embedding, as mergekit does', () => {
    const t = (byName.get('task_arithmetic_embed') as FixtureCase).tensors[EMBED];
    const { got, used } = runFixtureTensor('task_arithmetic', EMBED, { ...t, is_embed: false });
    assert.deepEqual(used, ['m1', 'm3', 'base']);
    // without m2: base + Σ w·(x − base) over m1 and m3
    const w = (m: string) => t.tensor_parameters[m].weight as number;
    const [base, m1, m3] = ['base', 'm1', 'm3'].map((m) => inputs.get(`${m}/${EMBED}`) as Float32Array);
    const want = base.map((b, i) => b + w('m1') * (m1[i] - b) + w('m3') * (m3[i] - b));
    assert.ok(relativeError(got, want) < 1e-6);
  });
});
