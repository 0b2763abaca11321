/**
 * breadcrumbs*_svd and della*_svd: mergekit's sparsifiers (src/merge) on each adapter's scaled
 * delta, on planted deltas whose result is known, through the library and the CLI.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { getBackend } from '../../src/linalg/index.js';
import { createRng } from '../../src/linalg/random.js';
import { PeftAdapterWriter } from '../../src/lora/adapter.js';
import { combinedDeltas } from '../../src/merge-adapters/combine-svd.js';
import { MERGE_METHODS, checkMethodOptions, mergeModule } from '../../src/merge-adapters/methods.js';
import { mergeAdapters, type MergeReport } from '../../src/merge-adapters/index.js';
import { disjointMerge, electSign } from '../../src/merge-adapters/prune.js';
import type { ElementwiseStep, MergeTerm, ModuleMergeContext } from '../../src/merge-adapters/types.js';
import { matrix, type Matrix } from '../../src/tensor/matrix.js';
import { product, relMaxDiff } from '../helpers/merge-adapters.js';
import { Command, CommanderError } from 'commander';
import { registerMergeAdapters } from '../../src/cli/merge-adapters.js';
import { UsageError } from '../../src/cli/errors.js';
import { runCli } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/synthetic.js';

const backend = await getBackend({ threads: 2 });

function gaussian(rows: number, cols: number, seed: number): Matrix {
  const m = matrix(rows, cols);
  createRng(seed).fillNormal(m.data);
  return m;
}

function ctxFor(terms: MergeTerm[], extra: Partial<ModuleMergeContext> = {}): ModuleMergeContext {
  return {
    backend,
    module: 'm',
    terms,
    density: 0.5,
    majoritySign: 'total',
    rank: 2,
    exact: true,
    masks: () => {
      throw new Error('no DARE here');
    },
    gamma: 0.01,
    epsilon: 0.15,
    ...extra,
  };
}

/**
 * Δ = P + big·e_row·e_colᵀ with P = u·vᵀ rank 1, u[row] = 0 and every other entry of P non-zero:
 * the outlier is alone in an otherwise zero row, so dropping the top entry and the zeros leaves P.
 */
function planted(m: number, n: number, row: number, col: number, big: number, seed: number): { B: Matrix; A: Matrix; P: Matrix } {
  const rng = createRng(seed);
  const nonZero = () => (rng.next() + 0.5) * (rng.next() < 0.5 ? -1 : 1); // |x| in [0.5, 1.5)
  const u = Float32Array.from({ length: m }, (_, i) => (i === row ? 0 : nonZero()));
  const v = Float32Array.from({ length: n }, nonZero);
  const B = matrix(m, 2);
  const A = matrix(2, n);
  for (let i = 0; i < m; i++) B.data[i * 2] = u[i];
  B.data[row * 2 + 1] = big;
  A.data.set(v);
  A.data[n + col] = 1;
  return { B, A, P: product(matrix(m, 1, u), matrix(1, n, v)) };
}

describe('breadcrumbs on adapter deltas', () => {
  const [m, n] = [6, 8];
  const d0 = planted(m, n, 2, 5, 100, 1);
  const d1 = planted(m, n, 4, 0, -80, 2);
  const terms: MergeTerm[] = [
    { adapter: 0, B: d0.B, A: d0.A, scaling: 2, weight: 0.7 },
    { adapter: 1, B: d1.B, A: d1.A, scaling: 0.5, weight: -0.4 },
  ];
  // 48 entries: ⌊0.03·48⌋ = 1 outlier, ⌊0.84·48⌋ = 40 kept (the non-zero entries of P), 7 zeros below
  const opts = { density: 0.84, gamma: 0.03 };
  const scaledP = [d0, d1].map((d, i) => d.P.data.map((x) => x * terms[i].scaling));

  it('breadcrumbs_svd drops each planted outlier: the merge is Σ w_i·s_i·P_i exactly', async () => {
    const merged = await mergeModule(MERGE_METHODS.breadcrumbs_svd, ctxFor(terms, opts));
    const expected = matrix(m, n);
    scaledP.forEach((p, i) => p.forEach((x, j) => (expected.data[j] += terms[i].weight * x)));
    const diff = relMaxDiff(product(merged.B, merged.A).data, expected.data);
    assert.ok(diff < 1e-5, `${diff}`);
    // with gamma too small to name an outlier among 48 entries, mergekit's slice keeps nothing
    const none = await combinedDeltas(ctxFor(terms, { ...opts, gamma: 0.02 }), 'breadcrumbs');
    assert.ok(none.data.every((x) => x === 0));
  });

  it('breadcrumbs_ties_svd elects signs on the outlier-free deltas', async () => {
    const got = await combinedDeltas(ctxFor(terms, opts), 'breadcrumbs_ties');
    const tensors = scaledP.map((p) => p.slice());
    const expected = disjointMerge(tensors, [0.7, -0.4], electSign(tensors, 'total'));
    assert.deepEqual([...got.data], [...expected]);
    assert.equal(got.data[2 * n + 5], expected[2 * n + 5]); // the outlier's place: adapter 1 alone
  });
});

describe('della on adapter deltas', () => {
  const [m, n] = [128, 96];
  const one = (B: Matrix, A: Matrix): MergeTerm[] => [{ adapter: 0, B, A, scaling: 1, weight: 1 }];
  const full = one(gaussian(m, 8, 3), gaussian(8, n, 4));
  const opts = { density: 0.3, epsilon: 0.1 };
  const keepRate = (x: Matrix, rows: number[], cols: number[]): number => {
    let kept = 0;
    for (const i of rows) for (const j of cols) kept += x.data[i * n + j] !== 0 ? 1 : 0;
    return kept / (rows.length * cols.length);
  };
  const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

  it('keeps a fraction density of the entries, more of the larger ones in each row, and rescales to the L1 norm', async () => {
    const delta = product(full[0].B, full[0].A);
    const got = await combinedDeltas(ctxFor(full, opts), 'della_linear');
    // 12 288 draws: the rate's standard deviation is 0.004
    assert.ok(Math.abs(keepRate(got, range(0, m), range(0, n)) - 0.3) < 0.02);
    const l1 = (x: Float32Array) => x.reduce((s, v) => s + Math.abs(v), 0);
    assert.ok(Math.abs(l1(got.data) / l1(delta.data) - 1) < 1e-4);
    // per row, the quarter of largest |Δ| is kept with p ≈ 0.376 and the smallest quarter with ≈ 0.224
    const byRank = (top: boolean) => {
      let kept = 0;
      for (let i = 0; i < m; i++) {
        const order = range(0, n).sort((a, b) => Math.abs(delta.data[i * n + a]) - Math.abs(delta.data[i * n + b]));
        for (const j of top ? order.slice(-24) : order.slice(0, 24)) kept += got.data[i * n + j] !== 0 ? 1 : 0;
      }
      return kept / (m * 24);
    };
    assert.ok(Math.abs(byRank(true) - 0.376) < 0.04, `top quarter ${byRank(true)}`);
    assert.ok(Math.abs(byRank(false) - 0.224) < 0.04, `bottom quarter ${byRank(false)}`);
  });

  it("ranks within the base weight's rows: an embedding's delta by columns", async () => {
    // Δ = u·vᵀ with |u_i| = i + 1: within a row the ranks follow v, within a column they follow u
    const u = matrix(m, 1, Float32Array.from({ length: m }, (_, i) => i + 1));
    const terms = one(u, gaussian(1, n, 5));
    const spread = async (kind: 'linear' | 'embedding') => {
      const got = await combinedDeltas(ctxFor(terms, { ...opts, kind }), 'della_linear');
      return keepRate(got, range(m - 32, m), range(0, n)) - keepRate(got, range(0, 32), range(0, n));
    };
    assert.ok(Math.abs(await spread('linear')) < 0.05);
    assert.ok((await spread('embedding')) > 0.1);
  });

  it('is seeded: the same seed gives the same draws, another seed or module others', async () => {
    const draw = (extra: Partial<ModuleMergeContext>) => combinedDeltas(ctxFor(full, { ...opts, ...extra }), 'della_linear');
    const a = await draw({ seed: 7 });
    assert.deepEqual(a.data, (await draw({ seed: 7 })).data);
    assert.notDeepEqual(a.data, (await draw({ seed: 8 })).data);
    assert.notDeepEqual(a.data, (await draw({ seed: 7, module: 'other' })).data);
  });

  it('at density 1 della and breadcrumbs leave the deltas alone: della = ties, della_linear = breadcrumbs = sum', async () => {
    const terms: MergeTerm[] = [0, 1].map((i) => ({ adapter: i, B: gaussian(12, 3, 10 + i), A: gaussian(3, 10, 20 + i), scaling: 1.5, weight: [0.6, -0.3][i] }));
    const at1 = (step: ElementwiseStep) => combinedDeltas(ctxFor(terms, { density: 1 }), step).then((x) => [...x.data]);
    assert.deepEqual(await at1('della'), await at1('ties'));
    assert.deepEqual(await at1('breadcrumbs_ties'), await at1('ties'));
    assert.deepEqual(await at1('della_linear'), await at1('sum'));
    assert.deepEqual(await at1('breadcrumbs'), await at1('sum'));
  });
});

describe('breadcrumbs_svd / della_svd options', () => {
  it('takes gamma / epsilon only where they act, and checks their ranges', () => {
    const check = (name: keyof typeof MERGE_METHODS, opts: Parameters<typeof checkMethodOptions>[1]) => checkMethodOptions(MERGE_METHODS[name], opts);
    assert.equal(check('breadcrumbs_ties_svd', { density: 0.4, gamma: 0.05, majoritySign: 'frequency' }), undefined);
    assert.equal(check('della_svd', { density: 0.4, epsilon: 0.1, seed: 3, majoritySign: 'total' }), undefined);
    assert.match(check('della_svd', { gamma: 0.1 })!, /--gamma has no effect with method della_svd/);
    assert.match(check('ties_svd', { epsilon: 0.1 })!, /--epsilon has no effect with method ties_svd/);
    assert.match(check('breadcrumbs_svd', { seed: 1 })!, /--seed has no effect/);
    assert.match(check('della_linear_svd', { majoritySign: 'total' })!, /--majority-sign has no effect/);
    assert.match(check('breadcrumbs_svd', { gamma: 0 })!, /--gamma must be in \(0, 1\)/);
    // the default epsilon 0.15 does not fit density 0.1 (mergekit's ValueError)
    assert.match(check('della_linear_svd', { density: 0.1 })!, /della_linear_svd: density 0.1 ± epsilon 0.15 must stay inside \(0, 1\).*below 0.1/);
    assert.equal(check('della_linear_svd', { density: 1, epsilon: 0.5 }), undefined);
  });
});

describe('breadcrumbs_svd / della_svd end to end', () => {
  let dir: string;
  let adapters: string[];
  before(async () => {
    dir = await makeTempDir('lf-merge-sparse-');
    adapters = [];
    for (const i of [0, 1]) {
      const path = join(dir, `a${i}`);
      const w = await PeftAdapterWriter.create(path, {});
      await w.addModule({ name: 'layers.0.q_proj', kind: 'linear', A: gaussian(4, 24, 30 + i), B: gaussian(16, 4, 40 + i), alpha: 8 });
      await w.addModule({ name: 'layers.0.tiny', kind: 'linear', A: gaussian(2, 8, 50 + i), B: gaussian(4, 2, 60 + i), alpha: 2 });
      await w.finish();
      adapters.push(path);
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));
  const args = () => ['merge-adapters', '--adapter', `${adapters[0]}:0.7`, '--adapter', `${adapters[1]}:0.3`];

  it('the CLI merges with --gamma / --epsilon / --seed, and della is reproducible from its seed', async () => {
    const r = await runCli([...args(), '--method', 'breadcrumbs_svd', '--density', '0.6', '--gamma', '0.05', '--out', join(dir, 'bc'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as MergeReport;
    assert.deepEqual([report.method, report.density, report.gamma, report.epsilon, report.seed], ['breadcrumbs_svd', 0.6, 0.05, undefined, undefined]);
    assert.deepEqual(report.modules.map((m) => m.outputRank), [4, 4]);

    const d = await runCli([...args(), '--method', 'della_svd', '--epsilon', '0.2', '--seed', '3', '--out', join(dir, 'della3'), '--quiet']);
    assert.equal(d.code, 0, d.stderr);
    const della = JSON.parse(await readFile(join(dir, 'della3', 'report.json'), 'utf8')) as MergeReport;
    assert.deepEqual([della.density, della.epsilon, della.seed, della.majoritySign, della.gamma], [0.5, 0.2, 3, 'total', undefined]);
    const same = { adapters: [0.7, 0.3].map((weight, i) => ({ path: adapters[i], weight })), method: 'della_svd' as const, epsilon: 0.2 };
    await mergeAdapters({ ...same, seed: 3, out: join(dir, 'lib3') });
    await mergeAdapters({ ...same, seed: 4, out: join(dir, 'lib4') });
    const tensors = (name: string) => readFile(join(dir, name, 'adapter_model.safetensors'));
    assert.deepEqual(await tensors('lib3'), await tensors('della3'));
    assert.notDeepEqual(await tensors('lib4'), await tensors('della3'));
  });

  it('refuses a bad epsilon as a usage error, and a gamma that would drop a whole module with exit code 1', async () => {
    // parsed in this process (no spawn): a UsageError exits 2
    const program = new Command('loraforge').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
    registerMergeAdapters(program);
    const usage = program.parseAsync([...args(), '--method', 'della_linear_svd', '--epsilon', '0.6', '--out', join(dir, 'never')], { from: 'user' });
    await assert.rejects(usage, (err: Error) => err instanceof UsageError && /della_linear_svd: density 0.5 ± epsilon 0.6 must stay inside \(0, 1\)/.test(err.message));
    // the 4×8 module: ⌊0.01·32⌋ = 0 outliers, where mergekit's breadcrumbs keeps nothing
    const tiny = await runCli([...args(), '--method', 'breadcrumbs_ties_svd', '--out', join(dir, 'never')]);
    assert.equal(tiny.code, 1);
    assert.match(tiny.stderr, /--gamma 0.01 marks no outlier among the 32 entries of module "layers.0.tiny"'s 4×8 delta .* use --gamma ≥ 1\/32/);
    let help = '';
    const withHelp = new Command('loraforge').exitOverride().configureOutput({ writeOut: (s) => (help += s) });
    registerMergeAdapters(withHelp);
    await assert.rejects(withHelp.parseAsync(['merge-adapters', '--help'], { from: 'user' }), CommanderError);
    for (const word of ['breadcrumbs_svd', 'breadcrumbs_ties_svd', 'della_svd', 'della_linear_svd', '--gamma', '--epsilon']) assert.ok(help.includes(word), word);
  });
});
