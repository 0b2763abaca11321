/**
 * spectrum and edit on a model pair with 3-D MoE expert tensors, whose per-expert deltas are
 * planted (test/helpers/lora-experts.ts): gate_up expert e is rank e + 1 with σ = [0.3, 0.25,
 * 0.2, 0.15].slice(0, e + 1); down changes only in expert 2 (σ = 0.3, 0.1); q_proj σ = 0.2, 0.1.
 * Both layouts: [E, out, in] (qwen3_moe) and [E, in, out] (gpt_oss).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { getBackend } from '../../src/linalg/index.js';
import { openPeftAdapter } from '../../src/lora/adapter.js';
import { editDelta, type EditSummary } from '../../src/spectrum/edit.js';
import { isSelected } from '../../src/spectrum/selectors.js';
import { deltaSpectrum, type SpectrumResult } from '../../src/spectrum/spectrum.js';
import { runCli } from '../helpers/cli.js';
import { DOWN, GATE_UP, GATE_UP_SIGMA, MOE, MOE_LAYOUTS, plantedSigma, Q, sumSquares, plantedEffectiveRank as effectiveRank, writeMoePair, type MoePair } from '../helpers/lora-experts.js';
import { makeTempDir } from '../helpers/synthetic.js';

const { experts: E, hidden: H, intermediate: I } = MOE;
/** F32 checkpoints: W_B − W_A loses ~1e-7 relative to |W| ≈ 0.02–0.3 */
const REL_TOL = 1e-4;

const names = (r: SpectrumResult) => r.tensors.map((t) => t.name);
const experts = (parameter: string, ids: number[]) => ids.map((e) => `${parameter}[${e}]`);
const ALL = [...Array(E).keys()];

let root: string;
const pairs: Partial<Record<'out-in' | 'in-out', MoePair>> = {};

before(async () => {
  root = await makeTempDir('loraforge-spectrum-experts-pair-');
  for (const [layout, modelType] of MOE_LAYOUTS) pairs[layout] = await writeMoePair(join(root, layout), layout, modelType);
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('spectrum of a model pair with 3-D expert tensors', () => {
  for (const [layout] of MOE_LAYOUTS) {
    it(`${layout}: one entry per expert, <tensor>[e], with the planted σ, exact ‖Δ_e‖² and effective ranks`, async () => {
      const backend = await getBackend({ prefer: 'ref' });
      const pair = pairs[layout]!;
      const result = await deltaSpectrum(backend, pair.a, pair.b);
      assert.deepEqual(names(result), [...experts(DOWN, ALL), ...experts(GATE_UP, ALL), Q], 'natural order, experts in index order');
      assert.deepEqual(result.skipped, []);
      assert.ok(result.notes.some((n) => /expert/.test(n)));
      const byName = new Map(result.tensors.map((t) => [t.name, t]));

      for (const [parameter, type, shape] of [
        [GATE_UP, 'gate_up_proj', [2 * I, H]],
        [DOWN, 'down_proj', [H, I]],
      ] as const) {
        for (let e = 0; e < E; e++) {
          const t = byName.get(`${parameter}[${e}]`)!;
          assert.deepEqual([t.layer, t.moduleType, t.rank, t.shape], [0, type, null, shape], t.name);
          // top 64 ≥ min(out, in): every singular value is computed
          assert.equal(t.sigma.length, Math.min(...shape));
          const planted = plantedSigma(parameter, e);
          const scale = planted[0] ?? 1;
          t.sigma.forEach((s, i) => assert.ok(Math.abs(s - (planted[i] ?? 0)) < REL_TOL * scale, `${t.name} σ${i} = ${s}, planted ${planted[i] ?? 0}`));
          // ‖Δ_e‖² summed from the stored slice, independently of the SVD
          const truth = sumSquares(pair.deltas[parameter][e]);
          assert.ok(Math.abs(t.totalEnergy - sumSquares(planted)) <= REL_TOL * Math.max(sumSquares(planted), 1e-12), `${t.name} ‖Δ‖² ${t.totalEnergy}`);
          assert.ok(Math.abs(t.totalEnergy - truth) <= 1e-5 * Math.max(truth, 1e-12), `${t.name} ‖Δ‖² vs planted matrix`);
          planted.forEach((_, i) => {
            const want = sumSquares(planted.slice(0, i + 1)) / sumSquares(planted);
            assert.ok(Math.abs(t.energy[i] - want) < REL_TOL, `${t.name} energy[${i}] = ${t.energy[i]}, want ${want}`);
          });
          if (planted.length) assert.ok(Math.abs(t.energy[planted.length - 1] - 1) < REL_TOL);
          else assert.equal(t.totalEnergy, 0, `${t.name}: unchanged expert`);
          // (p90 is left out: down_proj[2] holds exactly 90% in σ₀, a tie rounding decides)
          assert.equal(t.effectiveRank.p95, effectiveRank(planted, 0.95), `${t.name} p95`);
          assert.equal(t.effectiveRank.p99, effectiveRank(planted, 0.99), `${t.name} p99`);
        }
      }
      const q = byName.get(Q)!;
      assert.deepEqual([q.moduleType, q.rank, q.shape], ['q_proj', null, [H, H]]);
      assert.ok(Math.abs(q.sigma[0] - 0.2) < REL_TOL * 0.2 && Math.abs(q.sigma[1] - 0.1) < REL_TOL * 0.2);
    });
  }

  it('--include is tested against expert names; --layers/--modules select experts by their tensor', async () => {
    const backend = await getBackend({ prefer: 'ref' });
    const pair = pairs['in-out']!;
    const one = await deltaSpectrum(backend, pair.a, pair.b, { include: /gate_up_proj\[2\]/ });
    assert.deepEqual(names(one), [`${GATE_UP}[2]`]);
    assert.ok(Math.abs(one.tensors[0].sigma[2] - 0.2) < REL_TOL * 0.3);
    const some = await deltaSpectrum(backend, pair.a, pair.b, { include: /experts\.(down_proj\[[01]\]|gate_up_proj\[3\])/ });
    assert.deepEqual(names(some), [...experts(DOWN, [0, 1]), `${GATE_UP}[3]`]);
    const all = await deltaSpectrum(backend, pair.a, pair.b, { include: /mlp\.experts\.gate_up_proj/, top: 4 });
    assert.deepEqual(names(all), experts(GATE_UP, ALL));
    // --top 4: the randomized SVD keeps the planted components (rank ≤ 4) and energies still divide by the exact total
    all.tensors.forEach((t, e) => {
      assert.equal(t.sigma.length, 4);
      assert.ok(Math.abs(t.energy[e] - 1) < REL_TOL, `${t.name} energy at its rank`);
    });
    // the bare tensor name is not an entry name (as for adapters): nothing matches
    await assert.rejects(deltaSpectrum(backend, pair.a, pair.b, { include: /gate_up_proj$/ }), /no 2-D tensors or MoE expert tensors .* match --include gate_up_proj\$/);

    const full = await deltaSpectrum(backend, pair.a, pair.b);
    const picked = (sel: Parameters<typeof isSelected>[0]) => names(full).filter((n) => isSelected(sel, n));
    assert.deepEqual(picked({ modules: new Set(['gate_up_proj']) }), experts(GATE_UP, ALL));
    assert.deepEqual(picked({ layers: new Set([0]), modules: new Set(['down_proj', 'q_proj']) }), [...experts(DOWN, ALL), Q]);
    assert.deepEqual(picked({ layers: new Set([1]) }), []);
  });

  it('the CLI reports experts in spectrum --json', async () => {
    const pair = pairs['out-in']!;
    const spec = await runCli(['spectrum', '--model-a', pair.a, '--model-b', pair.b, '--out', join(root, 'cli-spec'), '--json', '--no-png', '--quiet']);
    assert.equal(spec.code, 0, spec.stderr);
    const summary = JSON.parse(spec.stdout) as { tensors: number; moduleTypes: Array<{ type: string; tensors: number; effectiveRank: Record<string, { p99: number }> }> };
    assert.equal(summary.tensors, 2 * E + 1);
    const gateUp = summary.moduleTypes.find((t) => t.type === 'gate_up_proj')!;
    assert.equal(gateUp.tensors, E);
    for (let e = 0; e < E; e++) assert.equal(gateUp.effectiveRank[`${GATE_UP}[${e}]`].p99, effectiveRank(GATE_UP_SIGMA.slice(0, e + 1), 0.99), `expert ${e}`);
    const json = JSON.parse(await readFile(join(root, 'cli-spec', 'spectrum.json'), 'utf8')) as SpectrumResult;
    assert.deepEqual(json.tensors.find((t) => t.name === `${DOWN}[2]`)!.shape, [H, I]);
  });
});

describe('edit of a model pair with 3-D expert tensors', () => {
  it('extracts and edits the 2-D weights and lists the expert tensors as skipped, saying why', async () => {
    const backend = await getBackend({ prefer: 'ref' });
    const pair = pairs['in-out']!;
    const out = join(root, 'edit-pair');
    const summary: EditSummary = await editDelta(backend, { modelA: pair.a, modelB: pair.b, rank: 2, out, edit: { zero: [0] } });
    assert.deepEqual(
      summary.modules.map((m) => [m.name, m.edited]),
      [['model.layers.0.self_attn.q_proj', true]],
    );
    assert.deepEqual(summary.skipped.map((s) => s.name), [DOWN, GATE_UP]);
    for (const s of summary.skipped) assert.match(s.reason, /3-D MoE expert tensor: edit does not extract expert stacks from a model pair yet; run `loraforge extract`/);
    const adapter = await openPeftAdapter(out);
    try {
      assert.deepEqual(adapter.modules.map((m) => m.name), ['model.layers.0.self_attn.q_proj']);
    } finally {
      await adapter.close();
    }
  });

  it('refuses a filter that picks only expert tensors, with the way round it', async () => {
    const backend = await getBackend({ prefer: 'ref' });
    const pair = pairs['out-in']!;
    await assert.rejects(
      editDelta(backend, { modelA: pair.a, modelB: pair.b, rank: 2, out: join(root, 'edit-experts-only'), edit: { zero: [0] }, include: /experts/ }),
      /no 2-D tensors in both checkpoints match the filter; only 3-D MoE expert tensors do, which edit does not extract from a model pair yet: run `loraforge extract`/,
    );
  });

  it('edit --json lists the skipped expert tensors', async () => {
    const pair = pairs['out-in']!;
    const res = await runCli(['edit', '--model-a', pair.a, '--model-b', pair.b, '--rank', '2', '--out', join(root, 'cli-edit'), '--zero', '0', '--json', '--quiet']);
    assert.equal(res.code, 0, res.stderr);
    const summary = JSON.parse(res.stdout) as EditSummary;
    assert.deepEqual(summary.skipped.map((s) => s.name), [DOWN, GATE_UP]);
    const text = await runCli(['edit', '--model-a', pair.a, '--model-b', pair.b, '--rank', '2', '--out', join(root, 'cli-edit-text'), '--zero', '0', '--quiet']);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /2 tensor\(s\) skipped: model\.layers\.0\.mlp\.experts\.down_proj \(3-D MoE expert tensor: edit does not extract/);
  });
});
