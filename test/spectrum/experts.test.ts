/**
 * spectrum and edit on adapters with MoE expert stacks (PEFT target_parameters), extracted from a
 * pair whose per-expert deltas are planted: gate_up expert e is U_e·diag(σ[0..e])·V_eᵀ with
 * σ = 0.3, 0.25, 0.2, 0.15; down changes only in expert 2 (σ = 0.3, 0.1); q_proj σ = 0.2, 0.1.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openSafetensors } from '../../src/io/safetensors.js';
import { getBackend } from '../../src/linalg/index.js';
import { createRng } from '../../src/linalg/random.js';
import { openPeftAdapter, type LoraModuleInfo, type PeftConfig } from '../../src/lora/adapter.js';
import { editAdapter, type EditSummary, type SigmaEdit } from '../../src/edit/edit.js';
import { isSelected } from '../../src/edit/selectors.js';
import { moduleTypeOf } from '../../src/lora/module-names.js';
import { adapterSpectrum, type TensorSpectrum } from '../../src/spectrum/spectrum.js';
import { runCli } from '../helpers/cli.js';
import { product, relDiff } from '../helpers/extract.js';
import { DOWN, DOWN_SIGMA, extractedMoeAdapters, GATE_UP, GATE_UP_SIGMA, MOE, plantedSigma, Q, sumSquares, plantedEffectiveRank as effectiveRank, type MoePair } from '../helpers/lora-experts.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { plantedMatrix } from '../linalg/planted.js';

const { experts: E, hidden: H, intermediate: I } = MOE;
const GATE_UP_WRAPPER = 'model.layers.0.mlp.experts.base_layer';
const DOWN_WRAPPER = 'model.layers.0.mlp.experts';
const Q_MODULE = 'model.layers.0.self_attn.q_proj';

/**
 * The planted ΔW_e of a parameter with its singular values replaced by `sigma`, which must keep
 * their count (plantedMatrix draws U and V for that many, so the same count gives the same U and V
 * as test/helpers/lora-experts.ts). Zero for an expert with nothing planted.
 */
function plantedWith(parameter: typeof GATE_UP | typeof DOWN, e: number, sigma: (planted: number[]) => number[]): Float32Array {
  if (parameter === GATE_UP) return plantedMatrix(2 * I, H, sigma(GATE_UP_SIGMA.slice(0, e + 1)), 150 + e).a.data;
  return e === 2 ? plantedMatrix(H, I, sigma(DOWN_SIGMA), 160).a.data : new Float32Array(H * I);
}

/** ΔW_e = scaling·B_e·A_e of every expert of `parameter`, with the module's info, as the written adapter gives them. */
async function expertDeltas(dir: string, parameter: string): Promise<{ info: LoraModuleInfo; deltas: Float32Array[] }> {
  const adapter = await openPeftAdapter(dir);
  try {
    const info = adapter.modules.find((m) => m.experts?.parameter === parameter)!;
    const mod = await adapter.loadExperts(info.name);
    return { info, deltas: mod.experts.map((x) => product(x.B.data, x.A.data, x.B.rows, x.A.rows, x.A.cols, mod.scaling)) };
  } finally {
    await adapter.close();
  }
}

/** Asserts each expert's ΔW matches `expected(e)` (zero means: below rounding). */
function assertDeltas(got: Float32Array[], expected: (e: number) => Float32Array, what: string): void {
  assert.equal(got.length, E);
  got.forEach((d, e) => {
    const truth = expected(e);
    if (sumSquares(truth) === 0) assert.ok(sumSquares(d) < 1e-12, `${what}[${e}] should be zero: ‖Δ‖² = ${sumSquares(d)}`);
    else assert.ok(relDiff(d, truth) < 1e-4, `${what}[${e}]: rel. error ${relDiff(d, truth)}`);
  });
}

async function readConfig(dir: string): Promise<PeftConfig> {
  return JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as PeftConfig;
}

/** The raw tensors of an adapter file, by key. */
async function rawTensors(dir: string): Promise<Map<string, Float32Array>> {
  const file = await openSafetensors(join(dir, 'adapter_model.safetensors'));
  try {
    const out = new Map<string, Float32Array>();
    for (const t of file.list()) out.set(t.name, await file.read(t.name));
    return out;
  } finally {
    await file.close();
  }
}

let root: string;
let adapters: Record<'out-in' | 'in-out', string>;
let pairs: Record<'out-in' | 'in-out', MoePair>;

before(async () => {
  root = await makeTempDir('loraforge-spectrum-experts-');
  ({ pairs, adapters } = await extractedMoeAdapters(root));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('spectrum of an adapter with expert stacks', () => {
  it('the planted deltas are what this file assumes', () => {
    const pair = pairs['out-in'];
    for (let e = 0; e < E; e++) {
      assert.deepEqual(plantedWith(GATE_UP, e, (s) => s), pair.deltas[GATE_UP][e]);
      assert.deepEqual(plantedWith(DOWN, e, (s) => s), pair.deltas[DOWN][e]);
    }
  });

  for (const layout of ['out-in', 'in-out'] as const) {
    it(`${layout}: one entry per expert, <parameter>[e], with the planted singular values, beside plain modules`, async () => {
      const backend = await getBackend({ prefer: 'ref' });
      const result = await adapterSpectrum({ backend, adapter: adapters[layout] });
      const byName = new Map(result.tensors.map((t) => [t.name, t]));
      const names = [...Array(E).keys()].map((e) => `${DOWN}[${e}]`).concat([...Array(E).keys()].map((e) => `${GATE_UP}[${e}]`), [Q_MODULE]);
      assert.deepEqual(result.tensors.map((t) => t.name), names, 'natural name order, experts in index order');
      assert.ok(result.notes.some((n) => /expert/.test(n)));

      for (const [parameter, type, rank, shape] of [
        [GATE_UP, 'gate_up_proj', 4, [2 * I, H]],
        [DOWN, 'down_proj', 2, [H, I]],
      ] as const) {
        for (let e = 0; e < E; e++) {
          const t = byName.get(`${parameter}[${e}]`)!;
          assert.deepEqual([t.layer, t.moduleType, t.rank, t.shape], [0, type, rank, shape], t.name);
          const planted = plantedSigma(parameter, e);
          // stored rank is the stack's; directions an expert does not use are (numerically) zero
          assert.equal(t.sigma.length, rank);
          t.sigma.forEach((s, i) => assert.ok(Math.abs(s - (planted[i] ?? 0)) < 1e-6, `${t.name} σ${i} = ${s}, planted ${planted[i] ?? 0}`));
          const total = sumSquares(planted);
          assert.ok(Math.abs(t.totalEnergy - total) < 1e-6 * Math.max(total, 1), `${t.name} ‖Δ‖²`);
          // (p90 is left out: down_proj[2] holds exactly 90% in σ₀, a tie rounding decides)
          assert.equal(t.effectiveRank.p95, effectiveRank(planted, 0.95), `${t.name} p95`);
          assert.equal(t.effectiveRank.p99, effectiveRank(planted, 0.99), `${t.name} p99`);
        }
      }
      const q = byName.get(Q_MODULE)!;
      assert.deepEqual([q.moduleType, q.rank], ['q_proj', 2]);
      assert.ok(Math.abs(q.sigma[0] - 0.2) < 1e-6 && Math.abs(q.sigma[1] - 0.1) < 1e-6);
    });
  }

  it('--include matches expert names; --layers/--modules select experts by their parameter', async () => {
    const backend = await getBackend({ prefer: 'ref' });
    const one = await adapterSpectrum({ backend, adapter: adapters['out-in'], include: /gate_up_proj\[2\]/ });
    assert.deepEqual(one.tensors.map((t: TensorSpectrum) => t.name), [`${GATE_UP}[2]`]);
    const all = await adapterSpectrum({ backend, adapter: adapters['out-in'], include: /mlp\.experts\.gate_up_proj/ });
    assert.equal(all.tensors.length, E);

    assert.equal(moduleTypeOf(`${GATE_UP}[12]`), 'gate_up_proj');
    assert.ok(isSelected({ layers: new Set([0]), modules: new Set(['gate_up_proj']) }, `${GATE_UP}[3]`));
    assert.ok(!isSelected({ layers: new Set([1]) }, `${GATE_UP}[3]`));
    assert.ok(!isSelected({ modules: new Set(['down_proj']) }, `${GATE_UP}[3]`));
  });
});

describe('edit of an adapter with expert stacks', () => {
  const input = () => adapters['out-in'];

  async function run(name: string, edit: SigmaEdit, extra: Partial<Parameters<typeof editAdapter>[0]> = {}): Promise<{ out: string; summary: EditSummary }> {
    const backend = await getBackend({ prefer: 'ref' });
    const out = join(root, 'edits', name);
    return { out, summary: await editAdapter({ backend, adapter: input(), out, edit, ...extra }) };
  }

  it('--zero 0 --modules gate_up_proj removes exactly σ₀·u₀·v₀ᵀ from every expert, keeps PEFT’s layout and copies the rest', async () => {
    const { out, summary } = await run('zero0', { zero: [0] }, { select: { modules: new Set(['gate_up_proj']) } });

    const gateUp = await expertDeltas(out, GATE_UP);
    assertDeltas(gateUp.deltas, (e) => plantedWith(GATE_UP, e, (s) => s.map((x, i) => (i === 0 ? 0 : x))), 'gate_up');
    assert.equal(gateUp.info.name, GATE_UP_WRAPPER, 'same wrapper key');
    assert.deepEqual(gateUp.info.experts, { parameter: GATE_UP, count: E, rank: 3 });
    assert.deepEqual([gateUp.info.alpha, gateUp.info.scaling], [4, 4 / 3], 'alpha kept, the factors absorb alpha/r');

    const down = await expertDeltas(out, DOWN);
    assert.deepEqual([down.info.name, down.info.experts!.rank], [DOWN_WRAPPER, 2]);
    assertDeltas(down.deltas, (e) => plantedWith(DOWN, e, (s) => s), 'down');

    // unselected stacks and modules are copied bit for bit, under the same keys
    const before = await rawTensors(input());
    const after = await rawTensors(out);
    assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
    for (const key of after.keys()) if (!key.includes('base_layer')) assert.deepEqual(after.get(key), before.get(key), key);

    const config = await readConfig(out);
    const original = await readConfig(input());
    assert.deepEqual(config.target_parameters, original.target_parameters);
    assert.deepEqual(config.target_modules, ['q_proj']);
    assert.deepEqual([config.r, config.lora_alpha], [2, 2]);
    assert.deepEqual(config.rank_pattern, { 'layers.0.mlp.experts.gate_up_proj': 3 });
    assert.deepEqual(config.alpha_pattern, { 'layers.0.mlp.experts.gate_up_proj': 4 });

    const rows = summary.modules.filter((m) => m.name.startsWith(GATE_UP));
    assert.deepEqual(
      rows.map((m) => [m.name, m.edited, m.rankBefore, m.rankAfter]),
      [...Array(E).keys()].map((e) => [`${GATE_UP}[${e}]`, true, 4, 3]),
    );
    rows.forEach((m, e) => {
      const planted = plantedSigma(GATE_UP, e);
      m.sigmaBefore!.forEach((s, i) => assert.ok(Math.abs(s - (planted[i] ?? 0)) < 1e-6, `${m.name} σ${i}`));
      assert.equal(m.sigmaAfter![0], 0);
    });
    assert.deepEqual([summary.edited, summary.copied], [E, E + 1]);
  });

  it('--keep 0-1 --scale 1:-0.5 on layer 0 edits every stack and plain module alike', async () => {
    const { out } = await run('keep-scale', { keep: [0, 1], scale: new Map([[1, -0.5]]) }, { select: { layers: new Set([0]) } });
    // (the same count of σ, zeros included, keeps the planted U and V)
    const edited = (s: number[]) => s.map((x, i) => (i === 0 ? x : i === 1 ? -0.5 * x : 0));
    const gateUp = await expertDeltas(out, GATE_UP);
    assert.equal(gateUp.info.experts!.rank, 2);
    assertDeltas(gateUp.deltas, (e) => plantedWith(GATE_UP, e, edited), 'gate_up');
    const down = await expertDeltas(out, DOWN);
    assert.equal(down.info.experts!.rank, 2);
    assertDeltas(down.deltas, (e) => plantedWith(DOWN, e, edited), 'down');

    const adapter = await openPeftAdapter(out);
    try {
      const q = await adapter.load(Q_MODULE);
      const info = adapter.module(Q_MODULE);
      const truth = plantedMatrix(H, H, [0.2, -0.05], 170).a.data;
      assert.deepEqual(plantedMatrix(H, H, [0.2, 0.1], 170).a.data, pairs['out-in'].deltas[Q]);
      assert.ok(relDiff(product(q.B.data, q.A.data, H, info.rank, H, info.scaling), truth) < 1e-4);
    } finally {
      await adapter.close();
    }
  });

  it('removing every component leaves a rank-1 stack with zero factors that still reads back', async () => {
    const { out } = await run('zero-all', { zero: [0, 1, 2, 3] }, { select: { modules: new Set(['gate_up_proj']) } });
    const gateUp = await expertDeltas(out, GATE_UP);
    assert.deepEqual(gateUp.info.experts, { parameter: GATE_UP, count: E, rank: 1 });
    assertDeltas(gateUp.deltas, () => new Float32Array(2 * I * H), 'gate_up');
  });

  it('--perturb draws per expert in the documented order: stacks by parameter path, expert 0 first', async () => {
    const eps = 0.1;
    const { out, summary } = await run('perturb', { perturb: eps }, { seed: 7 });
    const rng = createRng(7);
    // natural order of the update keys: down_proj (2 components × 4 experts), gate_up_proj (4 × 4), q_proj (2)
    const draws = (n: number) => Array.from({ length: n }, () => rng.normal());
    const expected = new Map<string, number[]>();
    for (let e = 0; e < E; e++) expected.set(`${DOWN}[${e}]`, draws(2));
    for (let e = 0; e < E; e++) expected.set(`${GATE_UP}[${e}]`, draws(4));
    expected.set(Q_MODULE, draws(2));
    assert.deepEqual(summary.modules.map((m) => m.name), [...expected.keys()]);

    const result = await adapterSpectrum({ backend: await getBackend({ prefer: 'ref' }), adapter: out });
    for (const m of summary.modules) {
      const noise = expected.get(m.name)!;
      m.sigmaAfter!.forEach((s, i) => assert.ok(Math.abs(s - m.sigmaBefore![i] * (1 + eps * noise[i])) < 1e-12, `${m.name} σ'${i}`));
      // the written adapter has exactly the perturbed spectrum
      const want = m.sigmaAfter!.map(Math.abs).sort((a, b) => b - a);
      const got = result.tensors.find((t) => t.name === m.name)!.sigma;
      want.forEach((s, i) => assert.ok(Math.abs(got[i] - s) < 1e-6, `${m.name} written σ${i}: ${got[i]} vs ${s}`));
    }
  });

  it('rsLoRA: the edited stack is scaled by alpha/√r′', async () => {
    const rslora = join(root, 'rslora');
    await cp(input(), rslora, { recursive: true });
    await writeFile(join(rslora, 'adapter_config.json'), JSON.stringify({ ...(await readConfig(input())), use_rslora: true }));
    const backend = await getBackend({ prefer: 'ref' });
    const out = join(root, 'edits', 'rslora');
    await editAdapter({ backend, adapter: rslora, out, edit: { zero: [3] }, select: { modules: new Set(['gate_up_proj']) } });
    const gateUp = await expertDeltas(out, GATE_UP);
    assert.deepEqual([gateUp.info.experts!.rank, gateUp.info.scaling], [3, 4 / Math.sqrt(3)]);
    // the input's scale alpha/√4 = 2 doubles every planted ΔW_e; expert 3 loses its 4th component
    assertDeltas(gateUp.deltas, (e) => plantedWith(GATE_UP, e, (s) => s.map((x, i) => (i === 3 ? 0 : 2 * x))), 'gate_up');
  });

  it('GGUF output is refused up front, naming the stack', async () => {
    const out = join(root, 'edits', 'gguf');
    await assert.rejects(
      run('gguf', { zero: [0] }, { format: 'gguf', baseConfig: { model_type: 'qwen3_moe', hidden_size: H } }),
      /adapter: module "model\.layers\.0\.mlp\.experts" holds the MoE expert stack "model\.layers\.0\.mlp\.experts\.down_proj" \(PEFT target_parameters\), which cannot be written to a GGUF LoRA yet: pass --format peft/,
    );
    await assert.rejects(readFile(join(out, 'adapter_config.json')), /ENOENT/);
  });

  it('the CLI lists experts in edit --json and spectrum --json', async () => {
    const out = join(root, 'cli-edit');
    const edit = await runCli(['edit', '--adapter', input(), '--out', out, '--zero', '0', '--modules', 'gate_up_proj', '--json']);
    assert.equal(edit.code, 0, edit.stderr);
    const summary = JSON.parse(edit.stdout) as EditSummary;
    assert.deepEqual(
      summary.modules.filter((m) => m.edited).map((m) => [m.name, m.rankAfter]),
      [...Array(E).keys()].map((e) => [`${GATE_UP}[${e}]`, 3]),
    );

    const spec = await runCli(['spectrum', '--adapter', out, '--out', join(root, 'cli-spec'), '--json', '--no-png']);
    assert.equal(spec.code, 0, spec.stderr);
    const types = JSON.parse(spec.stdout).moduleTypes as Array<{ type: string; tensors: number; effectiveRank: Record<string, { p90: number }> }>;
    const gateUp = types.find((t) => t.type === 'gate_up_proj')!;
    assert.equal(gateUp.tensors, E);
    // after removing σ₀, expert e keeps σ = 0.25 … (e components): p90 from those (expert 0 keeps only rounding noise)
    for (let e = 1; e < E; e++) assert.equal(gateUp.effectiveRank[`${GATE_UP}[${e}]`].p90, effectiveRank(GATE_UP_SIGMA.slice(1, e + 1), 0.9), `expert ${e}`);
  });
});
