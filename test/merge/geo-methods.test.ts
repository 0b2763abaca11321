/**
 * The geometric and special mergekit methods (model_stock, nuslerp, multislerp, karcher, nearswap,
 * arcee_fusion, ram, ramplus_tl): every fixture case computed by mergekit's own code, within the
 * README's tolerance; arcee_fusion's threshold and mask on mergekit's recorded scores; and the
 * refusals of error_cases, end to end on tiny models. (Registry parity of every method:
 * mergekit-fixtures.test.ts.)
 */
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UsageError } from '../../src/errors.js';
import { fusionImportance, fusionThreshold } from '../../src/merge/arcee-fusion.js';
import { mergeModels } from '../../src/merge/index.js';
import { MERGE_METHODS, type MethodName } from '../../src/merge/methods.js';
import { multislerpInto } from '../../src/merge/multislerp.js';
import { lastDimVectors } from '../../src/merge/vectors.js';
import { loadMergekitFixture, MERGEKIT_TOLERANCE, relativeError, replayTensor, runFixtureTensor } from '../helpers/mergekit-fixture.js';
import { readModel, tinyTensors, writeTinyModel } from '../helpers/merge.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

const GEO: Record<string, number> = { model_stock: 4, nuslerp: 8, multislerp: 5, karcher: 4, nearswap: 3, arcee_fusion: 2, ram: 2, ramplus_tl: 2 };

const fx = loadMergekitFixture();
const cases = fx.fixture.cases;
const errorCases = fx.fixture.error_cases;
let dir: string;
let n = 0;

before(async () => {
  dir = await makeTempDir('loraforge-merge-geo-');
  await writeTinyModel(join(dir, 'base'), { seed: 1 });
  await writeTinyModel(join(dir, 'a'), { seed: 2 });
  await writeTinyModel(join(dir, 'b'), { seed: 3 });
  const neg = tinyTensors({ seed: 2 });
  for (const t of Object.values(neg)) t.data = t.data.map((x) => -x);
  await writeModelFolder(join(dir, 'aneg'), neg);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('mergekit fixtures: geometric and special methods', () => {
  it('cover every case of these methods', () => {
    const counts: Record<string, number> = {};
    for (const c of cases) if (c.method in GEO) counts[c.method] = (counts[c.method] ?? 0) + 1;
    assert.deepEqual(counts, GEO);
  });

  for (const method of Object.keys(GEO)) {
    it(`${method}: every tensor of every case within ${MERGEKIT_TOLERANCE} of max |expected|`, () => {
      for (const c of cases.filter((x) => x.method === method)) {
        for (const tensor of Object.keys(c.tensors)) {
          const { got, expected } = replayTensor(c, tensor);
          const err = relativeError(got, expected);
          assert.ok(err <= MERGEKIT_TOLERANCE, `${c.name} ${tensor}: relative error ${err}`);
        }
      }
    });
  }

  it('nuslerp ignores row_wise when flattening: bit-identical outputs', () => {
    const [flat, rowFlat] = ['nuslerp', 'nuslerp_row_wise_flatten'].map((name) => cases.find((c) => c.name === name)!);
    for (const tensor of Object.keys(flat.tensors)) assert.deepEqual(replayTensor(flat, tensor).got, replayTensor(rowFlat, tensor).got);
  });

});

describe('arcee_fusion scores, threshold and mask', () => {
  for (const c of ['arcee_fusion', 'arcee_fusion_m2']) {
    it(`${c}: f64 scores within 5e-3 of mergekit's float32 ones; its threshold and mask from the recorded scores`, () => {
      const kase = cases.find((x) => x.name === c)!;
      for (const [tensor, info] of Object.entries(kase.tensors)) {
        const [a, b] = [info.base_model!, info.model_order.find((m) => m !== info.base_model)!].map((m) => fx.tensor(`${m}/${tensor}`));
        const recorded = fx.tensor(info.importance!);
        const ours = fusionImportance(a, b, lastDimVectors(info.shape), new Float32Array(a.length));
        assert.ok(relativeError(ours, recorded) <= 5e-3, `${tensor}: scores off by ${relativeError(ours, recorded)}`);
        const threshold = fusionThreshold(recorded, new Float32Array(a.length));
        assert.ok(Math.abs(threshold - info.fusion_threshold!) <= 1e-6 * Math.abs(threshold), `${tensor}: threshold ${threshold} vs ${info.fusion_threshold}`);
        const expected = fx.tensor(info.expected);
        let kept = 0;
        recorded.forEach((s, i) => {
          const keep = s >= threshold;
          kept += keep ? 1 : 0;
          // mergekit writes a + (b − a)·mask in float32: b up to one rounding where kept, a exactly elsewhere
          if (keep) assert.ok(Math.abs(expected[i] - b[i]) <= 1e-7 * Math.abs(b[i]) + 1e-12, `${tensor}[${i}] kept`);
          else assert.equal(expected[i], a[i], `${tensor}[${i}] not kept`);
        });
        assert.equal(kept, info.fusion_kept);
      }
    });
  }
});

describe('refusals (error_cases)', () => {
  const merge = (config: Record<string, unknown> | string) => mergeModels({ config, out: join(dir, `out-${n++}`), cwd: dir });

  it('model_stock with one model, nearswap with two, nuslerp with base plus one: named before anything is read, with the YAML line', async () => {
    for (const name of ['error_model_stock_one_model', 'error_nearswap_two_models', 'error_nuslerp_base_one_model']) assert.ok(errorCases.some((e) => e.name === name));
    await writeFile(join(dir, 'stock.yaml'), 'merge_method: model_stock\nbase_model: ./base\nmodels:\n  - model: ./a\n');
    await assert.rejects(merge(join(dir, 'stock.yaml')), (err: Error) => err instanceof UsageError && /stock\.yaml:4:3: models: model_stock merges at least 2 models and base_model, but 1 is given \(\.\/a\)/.test(err.message));
    await assert.rejects(
      merge({ merge_method: 'nearswap', base_model: './base', parameters: { t: 0.01 }, models: [{ model: './a' }, { model: './b' }] }),
      /nearswap merges exactly 2 models, one of them base_model, but 3 are given/,
    );
    await assert.rejects(
      merge({ merge_method: 'nuslerp', base_model: './base', models: [{ model: './a', parameters: { weight: 1 } }] }),
      /nuslerp merges exactly 2 models besides base_model, but 1 is given \(\.\/a\)/,
    );
    // base_model listed as one of the two is no longer one of the two to interpolate
    await assert.rejects(
      merge({ merge_method: 'nuslerp', base_model: './base', models: [{ model: './base', parameters: { weight: 1 } }, { model: './a', parameters: { weight: 1 } }] }),
      /nuslerp merges exactly 2 models besides base_model, but 1 is given/,
    );
  });

  it('multislerp: three models whose directions cancel stop with the tensor named; two fall back to lerp', () => {
    const e = errorCases.find((x) => x.name === 'error_multislerp_antipodal_three')!;
    const xs = ['m1', 'm1neg', 'm2'].map((m) => fx.tensor(`${m}/${e.tensor}`));
    const opts = { normalizeWeights: true, eps: 1e-8, tensor: e.tensor };
    assert.throws(() => multislerpInto(xs, [0.5, 0.5, 0], undefined, opts), /multislerp: the weighted mean of the 3 models' directions is zero for tensor "model\.layers\.2\.input_layernorm\.weight"/);
    assert.deepEqual(multislerpInto(xs.slice(0, 2), [0.5, 0.5], undefined, opts), new Float32Array(xs[0].length));
  });

  it('multislerp: directions that cancel mid-merge are a failure of the data (exit 1), not a config mistake', async () => {
    const models = [{ model: './a', parameters: { weight: 0.5 } }, { model: './aneg', parameters: { weight: 0.5 } }, { model: './b', parameters: { weight: 0 } }];
    await assert.rejects(merge({ merge_method: 'multislerp', models }), (err: Error) => !(err instanceof UsageError) && /multislerp: the weighted mean of the 3 models' directions is zero for tensor/.test(err.message));
  });

  it('multislerp refuses weights summing to 0 under normalize_weights; karcher refuses a fractional max_iter', async () => {
    await assert.rejects(
      merge({ merge_method: 'multislerp', models: [{ model: './a', parameters: { weight: 1 } }, { model: './b', parameters: { weight: -1 } }] }),
      /weights of tensor ".*" sum to 0, so normalize_weights would divide by 0/,
    );
    await assert.rejects(merge({ merge_method: 'karcher', parameters: { max_iter: 2.5 }, models: [{ model: './a' }, { model: './b' }] }), /max_iter must be a whole number, got 2\.5/);
  });
});

describe('end to end on tiny models', () => {
  const configs: Record<string, Record<string, unknown>> = {
    model_stock: { base_model: './base', parameters: { filter_wise: true }, models: [{ model: './a' }, { model: './b' }] },
    nuslerp: { base_model: './base', parameters: { nuslerp_flatten: false, nuslerp_row_wise: true }, models: [{ model: './a', parameters: { weight: 0.6 } }, { model: './b', parameters: { weight: 0.3 } }] },
    multislerp: { base_model: './base', models: [{ model: './a', parameters: { weight: 0.6 } }, { model: './b', parameters: { weight: 0.3 } }] },
    karcher: { base_model: './base', models: [{ model: './a' }, { model: './b' }] },
    nearswap: { base_model: './base', parameters: { t: 0.5 }, models: [{ model: './a' }] },
    arcee_fusion: { base_model: './base', models: [{ model: './base' }, { model: './a' }] },
    ram: { base_model: './base', parameters: { epsilon: 1 }, models: [{ model: './a' }, { model: './b' }] },
    ramplus_tl: { base_model: './base', parameters: { epsilon: 1 }, models: [{ model: './a' }, { model: './b' }] },
  };

  it('each method merges whole models as its per-tensor function merges their tensors', async () => {
    const models = Object.fromEntries(await Promise.all(['base', 'a', 'b'].map(async (m) => [`./${m}`, await readModel(join(dir, m))] as const)));
    for (const [method, rest] of Object.entries(configs)) {
      const config = { merge_method: method, ...rest };
      const out = join(dir, `out-${n++}`);
      await mergeModels({ config, out, cwd: dir, worker: false });
      const got = await readModel(out);
      // the same tensor through the fixture path: mergekit's model order (listed models, then base_model)
      const listed = (rest.models as Array<{ model: string; parameters?: Record<string, number> }>).map((m) => m.model);
      const order = listed.includes(rest.base_model as string) ? listed : [...listed, rest.base_model as string];
      const name = 'model.layers.1.self_attn.q_proj.weight';
      const shape = got[name].shape;
      const def = MERGE_METHODS[method as MethodName];
      const params = Object.fromEntries(def.params.map((p) => [p.name, (rest.parameters as Record<string, number> | undefined)?.[p.name] ?? p.default]));
      const perModel = Object.fromEntries(order.map((m) => [m, (rest.models as Array<{ model: string; parameters?: Record<string, number> }>).find((x) => x.model === m)?.parameters ?? {}]));
      const { got: direct } = runFixtureTensor(
        method,
        name,
        {
          shape,
          input_shapes: Object.fromEntries(order.map((m) => [m, shape])),
          is_embed: false,
          model_order: order,
          base_model: rest.base_model as string,
          parameters: params as Record<string, number>,
          tensor_parameters: perModel,
        },
        { read: (m) => models[m][name].data.slice() },
      );
      assert.deepEqual(got[name].data, direct, method);
      assert.ok(Object.values(got).every((t) => t.data.every(Number.isFinite)), method);
    }
  });
});
