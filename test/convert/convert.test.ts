import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { convertAdapter } from '../../src/convert/convert.js';
import { readPeftAdapter } from '../../src/lora/adapter.js';
import { svdSmall } from '../../src/linalg/svd-small.js';
import { matrix } from '../../src/tensor/matrix.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { extractLora } from '../../src/extract/index.js';
import { writeMoePair } from '../helpers/lora-experts.js';
import { flat, frob, matmul, naiveMerge, orthonormalColumns, randomMat, rowNormsAfterLora, transposeMat, unflat, writePeftFixture, type Mat, type PeftModuleFixture } from '../helpers/dora.js';

const OUT = 24;
const IN = 20;
const VOCAB = 30;
const Q = 'model.layers.0.self_attn.q_proj';
const EMB = 'model.embed_tokens';
const Wq = randomMat(OUT, IN, 1);
const We = randomMat(VOCAB, IN, 2);

/** The dense ΔW of a converted module, from the written adapter (scale alpha/r). */
async function convertedDelta(dir: string, name: string): Promise<Mat> {
  const { config, modules } = await readPeftAdapter(dir);
  assert.equal(config.use_dora, false);
  const m = modules.find((x) => x.name === name)!;
  const s = m.alpha / m.A.rows;
  return matmul(unflat(m.B.data, m.B.rows, m.B.cols), unflat(m.A.data, m.A.rows, m.A.cols)).map((row) => row.map((v) => v * s));
}

function diff(a: Mat, b: Mat): Mat {
  return a.map((row, i) => row.map((v, j) => v - b[i][j]));
}

/** sqrt(Σ_{i>r} σ_i² / Σ σ_i²): the best achievable relative error at rank r. */
function optimalError(D: Mat, r: number): number {
  const S = svdSmall(matrix(D.length, D[0].length, flat(D))).S;
  const total = S.reduce((s, x) => s + x * x, 0);
  return Math.sqrt(S.slice(r).reduce((s, x) => s + x * x, 0) / total);
}

describe('convert: DoRA / EDoRA to plain LoRA', async () => {
  const tmp = await makeTempDir('lf-dora-convert-');
  const baseDir = join(tmp, 'base');
  before(() => writeModelFolder(baseDir, { [`${Q}.weight`]: { shape: [OUT, IN], data: flat(Wq) }, [`${EMB}.weight`]: { shape: [VOCAB, IN], data: flat(We) } }));
  after(() => rm(tmp, { recursive: true, force: true }));

  const dora: PeftModuleFixture = {
    name: Q,
    kind: 'linear',
    A: randomMat(4, IN, 3, 0.3),
    B: randomMat(OUT, 4, 4, 0.3),
    magnitude: rowNormsAfterLora(Wq, { name: Q, kind: 'linear', A: randomMat(4, IN, 3, 0.3), B: randomMat(OUT, 4, 4, 0.3) }, 1).map((n, i) => Math.fround(n * (1 + 0.05 * Math.sin(i)))),
  };
  const emb: PeftModuleFixture = { name: EMB, kind: 'embedding', A: randomMat(4, VOCAB, 5, 0.3), B: randomMat(IN, 4, 6, 0.3), magnitude: randomMat(1, IN, 7)[0].map((x) => Math.fround(5 + Math.abs(x))) };
  const Dq = diff(naiveMerge(Wq, dora, 1), Wq);
  const De = diff(naiveMerge(We, emb, 1), We);

  it('recovers W′ − W to the reported error at a fixed rank, near the optimal truncation', async () => {
    const src = join(tmp, 'dora');
    await writePeftFixture(src, { config: { r: 4, lora_alpha: 4, use_dora: true }, modules: [dora, emb] });
    const out = join(tmp, 'out-r6');
    const report = await convertAdapter({ adapter: src, base: baseDir, out, policy: { mode: 'rank', rank: 6 } });
    for (const [name, D] of [[Q, Dq], [EMB, De]] as const) {
      const row = report.modules.find((m) => m.name === name)!;
      assert.equal(row.action, 'converted');
      assert.equal(row.rank, 6);
      const actual = frob(diff(D, await convertedDelta(out, name))) / frob(D);
      assert.ok(Math.abs(actual - row.relError) < 1e-4, `${name}: reported ${row.relError}, actual ${actual}`);
      assert.ok(actual <= optimalError(D, 6) * 1.02 + 1e-6, `${name}: ${actual} vs optimal ${optimalError(D, 6)}`);
      assert.ok(actual > 1e-3, 'W′ − W is full rank: rank 6 cannot be exact');
    }
    const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(config.use_dora, false);
    assert.deepEqual(config.target_modules, ['embed_tokens', 'q_proj']);

    const full = await convertAdapter({ adapter: src, base: baseDir, out: join(tmp, 'out-full'), policy: { mode: 'rank', rank: IN } });
    assert.ok(full.maxRelError < 1e-5, `full rank: ${full.maxRelError}`);
    const got = await convertedDelta(join(tmp, 'out-full'), Q);
    assert.ok(frob(diff(Dq, got)) / frob(Dq) < 1e-5);
  });

  it('picks the smallest rank that keeps the requested energy', async () => {
    // a DoRA whose magnitudes are the norms of W + ΔW is the LoRA ΔW: plant its singular values 10, 3, 0.1
    const U = orthonormalColumns(randomMat(OUT, 3, 8));
    const Vt = transposeMat(orthonormalColumns(randomMat(IN, 3, 9)));
    const sigma = [10, 3, 0.1];
    const planted: PeftModuleFixture = { name: Q, kind: 'linear', A: Vt.map((r) => r.map(Math.fround)), B: U.map((r) => r.map((x, j) => Math.fround(x * sigma[j]))) };
    planted.magnitude = rowNormsAfterLora(Wq, planted, 1);
    const src = join(tmp, 'planted');
    await writePeftFixture(src, { config: { r: 3, lora_alpha: 3, use_dora: true }, modules: [planted] });
    const total = 100 + 9 + 0.01;
    for (const [energy, rank, err] of [[0.9, 1, Math.sqrt(9.01 / total)], [0.99, 2, Math.sqrt(0.01 / total)], [0.99999, 3, 0]] as const) {
      const report = await convertAdapter({ adapter: src, base: baseDir, out: join(tmp, `out-e${energy}`), policy: { mode: 'energy', energy } });
      const row = report.modules[0];
      assert.equal(row.rank, rank, `energy ${energy}`);
      assert.ok(Math.abs(row.relError - err) < 1e-4, `energy ${energy}: error ${row.relError}, expected ${err}`);
    }
    // the default is energy 0.99
    const dflt = await convertAdapter({ adapter: src, base: baseDir, out: join(tmp, 'out-default') });
    assert.equal(dflt.modules[0].rank, 2);
    assert.deepEqual(dflt.policy, { mode: 'energy', energy: 0.99 });
  });

  it('converts EDoRA (latent R) as well', async () => {
    const edora: PeftModuleFixture = { ...dora, latent: randomMat(4, 4, 10) };
    const src = join(tmp, 'edora');
    await writePeftFixture(src, { config: { r: 4, lora_alpha: 8, use_dora: true }, modules: [edora] });
    const report = await convertAdapter({ adapter: src, base: baseDir, out: join(tmp, 'out-edora'), policy: { mode: 'rank', rank: IN } });
    const D = diff(naiveMerge(Wq, edora, 2), Wq);
    assert.ok(frob(diff(D, await convertedDelta(join(tmp, 'out-edora'), Q))) / frob(D) < 1e-5);
    assert.equal(report.variant, 'edora');
  });

  it('copies plain LoRA (rsLoRA scale and LoRA-XS latent folded in), or re-factors it when asked', async () => {
    const lora: PeftModuleFixture = { name: Q, kind: 'linear', A: randomMat(4, IN, 11), B: randomMat(OUT, 4, 12) };
    const xs: PeftModuleFixture = { name: 'model.layers.1.self_attn.q_proj', kind: 'linear', A: randomMat(4, IN, 13), B: randomMat(OUT, 4, 14), latent: randomMat(4, 4, 15) };
    const src = join(tmp, 'plain');
    await writePeftFixture(src, { config: { r: 4, lora_alpha: 8, use_rslora: true }, modules: [lora, xs], full: { 'lm_head.weight': { shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) } } });
    const out = join(tmp, 'out-plain');
    const report = await convertAdapter({ adapter: src, out });
    assert.deepEqual(report.modules.map((m) => m.action), ['copied', 'copied']);
    assert.ok(report.notes.some((n) => /copied unchanged/.test(n)));
    const s = 8 / Math.sqrt(4);
    for (const m of [lora, xs]) {
      const want = diff(naiveMerge(Wq, m, s), Wq);
      assert.ok(frob(diff(want, await convertedDelta(out, m.name))) / frob(want) < 1e-6, m.name);
    }
    const { modules } = await readPeftAdapter(out);
    assert.equal(modules.length, 2);
    assert.ok(modules.every((m) => !m.latent && !m.magnitude));
    assert.deepEqual(report.fullTensors, ['lm_head.weight']);

    const re = await convertAdapter({ adapter: src, out: join(tmp, 'out-refactor'), policy: { mode: 'rank', rank: 2 } });
    assert.deepEqual(re.modules.map((m) => [m.action, m.rank]), [['refactored', 2], ['refactored', 2]]);
    const want = diff(naiveMerge(Wq, lora, s), Wq);
    const actual = frob(diff(want, await convertedDelta(join(tmp, 'out-refactor'), Q))) / frob(want);
    assert.ok(Math.abs(actual - re.modules[0].relError) < 1e-5 && Math.abs(actual - optimalError(want, 2)) < 1e-5);
  });

  it('needs the base for DoRA and refuses an adapter made for another base', async () => {
    const src = join(tmp, 'need-base');
    await writePeftFixture(src, { config: { r: 4, lora_alpha: 4, use_dora: true }, modules: [dora] });
    await assert.rejects(convertAdapter({ adapter: src, out: join(tmp, 'o1') }), /pass --base/);
    const other = join(tmp, 'other');
    await writePeftFixture(other, { config: { r: 4, lora_alpha: 4, use_dora: true }, modules: [{ ...dora, A: randomMat(4, IN + 1, 3), magnitude: dora.magnitude }] });
    await assert.rejects(convertAdapter({ adapter: other, base: baseDir, out: join(tmp, 'o2') }), /made for another base/);
  });

  it('refuses an adapter with MoE expert stacks (target_parameters), naming the parameter', async () => {
    const pair = await writeMoePair(join(tmp, 'moe'), 'out-in', 'qwen3_moe');
    const moe = join(tmp, 'moe', 'adapter');
    await extractLora({ modelA: pair.a, modelB: pair.b, out: moe, policy: { mode: 'rank', rank: 2 } });
    await assert.rejects(
      convertAdapter({ adapter: moe, base: pair.a, out: join(tmp, 'o3') }),
      /MoE expert stack \("model\.layers\.0\.mlp\.experts\.(gate_up|down)_proj".*`loraforge apply`/,
    );
  });
});
