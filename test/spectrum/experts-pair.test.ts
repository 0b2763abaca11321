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
import { editDelta, type EditSummary } from '../../src/edit/edit.js';
import { isSelected } from '../../src/edit/selectors.js';
import { adapterSpectrum, deltaSpectrum, type SpectrumResult } from '../../src/spectrum/spectrum.js';
import { product as lowRankProduct } from '../../src/lowrank/low-rank.js';
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
      const result = await deltaSpectrum({ backend, modelA: pair.a, modelB: pair.b });
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
    const one = await deltaSpectrum({ backend, modelA: pair.a, modelB: pair.b, include: /gate_up_proj\[2\]/ });
    assert.deepEqual(names(one), [`${GATE_UP}[2]`]);
    assert.ok(Math.abs(one.tensors[0].sigma[2] - 0.2) < REL_TOL * 0.3);
    const some = await deltaSpectrum({ backend, modelA: pair.a, modelB: pair.b, include: /experts\.(down_proj\[[01]\]|gate_up_proj\[3\])/ });
    assert.deepEqual(names(some), [...experts(DOWN, [0, 1]), `${GATE_UP}[3]`]);
    const all = await deltaSpectrum({ backend, modelA: pair.a, modelB: pair.b, include: /mlp\.experts\.gate_up_proj/, top: 4 });
    assert.deepEqual(names(all), experts(GATE_UP, ALL));
    // --top 4: the randomized SVD keeps the planted components (rank ≤ 4) and energies still divide by the exact total
    all.tensors.forEach((t, e) => {
      assert.equal(t.sigma.length, 4);
      assert.ok(Math.abs(t.energy[e] - 1) < REL_TOL, `${t.name} energy at its rank`);
    });
    // the bare tensor name is not an entry name (as for adapters): nothing matches
    await assert.rejects(deltaSpectrum({ backend, modelA: pair.a, modelB: pair.b, include: /gate_up_proj$/ }), /no 2-D tensors or MoE expert tensors .* match --include gate_up_proj\$/);

    const full = await deltaSpectrum({ backend, modelA: pair.a, modelB: pair.b });
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
  const Q_MODULE = 'model.layers.0.self_attn.q_proj';

  for (const [layout] of MOE_LAYOUTS) {
    it(`${layout}: writes each 3-D tensor as a PEFT expert stack; unselected experts carry the planted ΔW_e, selected ones lose the zeroed component`, async () => {
      const backend = await getBackend({ prefer: 'ref' });
      const pair = pairs[layout]!;
      const out = join(root, `edit-pair-${layout}`);
      const summary: EditSummary = await editDelta({ backend, modelA: pair.a, modelB: pair.b, rank: 4, out, edit: { zero: [0] }, select: { modules: new Set(['gate_up_proj']) } });
      assert.deepEqual(summary.skipped, []);
      assert.deepEqual(
        summary.modules.map((m) => [m.name, m.edited]),
        [...experts(DOWN, ALL).map((n) => [n, false]), ...experts(GATE_UP, ALL).map((n) => [n, true]), [Q_MODULE, false]],
      );
      for (const m of summary.modules.filter((x) => x.edited)) assert.deepEqual([m.rankBefore, m.rankAfter], [4, 3], m.name);

      const adapter = await openPeftAdapter(out);
      try {
        assert.deepEqual([...(adapter.config.target_parameters ?? [])].sort(), [DOWN, GATE_UP]);
        const stacks = adapter.modules.filter((m) => m.experts);
        assert.deepEqual(stacks.map((m) => m.experts!.parameter).sort(), [DOWN, GATE_UP]);
        for (const info of stacks) {
          const parameter = info.experts!.parameter as typeof GATE_UP | typeof DOWN;
          const stack = await adapter.loadExperts(info.name);
          assert.equal(stack.experts.length, E);
          for (let e = 0; e < E; e++) {
            const update = await lowRankProduct(backend, stack.experts[e], stack.scaling);
            const planted = pair.deltas[parameter][e];
            const scale = plantedSigma(parameter, e)[0] ?? 1;
            if (parameter === DOWN) {
              // unselected: the rank-4 extraction is the planted ΔW_e itself (its rank is ≤ 2)
              let worst = 0;
              for (let i = 0; i < planted.length; i++) worst = Math.max(worst, Math.abs(update.data[i] - planted[i]));
              assert.ok(worst < REL_TOL * scale, `${parameter}[${e}]: max |ΔW − planted| = ${worst}`);
            } else {
              // selected, σ₀ zeroed: exactly the planted energy but σ₀'s is left
              const want = sumSquares(plantedSigma(parameter, e).slice(1));
              assert.ok(Math.abs(sumSquares(update.data) - want) < REL_TOL * scale * scale, `${parameter}[${e}]: ‖ΔW‖² ${sumSquares(update.data)}, want ${want}`);
            }
          }
        }
      } finally {
        await adapter.close();
      }
      // the written experts' spectra: the planted σ without σ₀
      const spec = await adapterSpectrum({ backend, adapter: out });
      for (let e = 0; e < E; e++) {
        const t = spec.tensors.find((x) => x.name === `${GATE_UP}[${e}]`)!;
        const want = GATE_UP_SIGMA.slice(1, e + 1);
        t.sigma.forEach((s, i) => assert.ok(Math.abs(s - (want[i] ?? 0)) < REL_TOL * 0.3, `${t.name} σ${i} = ${s}, want ${want[i] ?? 0}`));
      }
    });
  }

  it('--include picking one expert extracts its whole tensor; GGUF output is refused with the way out', async () => {
    const backend = await getBackend({ prefer: 'ref' });
    const pair = pairs['out-in']!;
    const summary = await editDelta({ backend, modelA: pair.a, modelB: pair.b, rank: 2, out: join(root, 'edit-one-expert'), edit: { scale: new Map([[0, 2]]) }, include: /gate_up_proj\[1\]/ });
    assert.deepEqual(
      summary.modules.map((m) => m.name),
      experts(GATE_UP, ALL),
    );
    await assert.rejects(
      editDelta({ backend, modelA: pair.a, modelB: pair.b, rank: 2, out: join(root, 'edit-gguf'), edit: { zero: [0] }, format: 'gguf' }),
      /3-D MoE expert tensor, which edit writes as a PEFT expert stack \(target_parameters\) and cannot write to a GGUF LoRA yet: pass --format peft/,
    );
  });

  it('edit --json lists one row per expert and nothing skipped', async () => {
    const pair = pairs['out-in']!;
    const res = await runCli(['edit', '--model-a', pair.a, '--model-b', pair.b, '--rank', '2', '--out', join(root, 'cli-edit'), '--zero', '0', '--modules', 'down_proj', '--json', '--quiet']);
    assert.equal(res.code, 0, res.stderr);
    const summary = JSON.parse(res.stdout) as EditSummary;
    assert.deepEqual(summary.skipped, []);
    assert.deepEqual(
      summary.modules.filter((m) => m.edited).map((m) => m.name),
      experts(DOWN, ALL),
    );
    assert.equal(summary.modules.length, 2 * E + 1);
  });
});
