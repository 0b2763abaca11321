import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { getBackend } from '../../src/linalg/index.js';
import { svdSmall } from '../../src/linalg/svd-small.js';
import { adapterSpectrum, deltaSpectrum, summarizeSpectrum } from '../../src/spectrum/spectrum.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { runCli } from '../helpers/cli.js';
import { plantedLora, writeAdapter } from '../helpers/spectrum.js';
import { gaussianMatrix, plantedMatrix } from '../linalg/planted.js';

/** Energy fractions and effective ranks straight from a planted spectrum (the test's own formula). */
function expectedFromPlant(sigma: number[]): { energy: number[]; ranks: [number, number, number] } {
  const total = sigma.reduce((a, s) => a + s * s, 0);
  const energy: number[] = [];
  let acc = 0;
  for (const s of sigma) energy.push((acc += s * s) / total);
  const at = (p: number) => energy.findIndex((e) => e >= p) + 1;
  return { energy, ranks: [at(0.9), at(0.95), at(0.99)] };
}

function assertClose(actual: number[], expected: number[], rel: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const scale = Math.max(...expected.map(Math.abs));
  actual.forEach((a, i) => assert.ok(Math.abs(a - expected[i]) <= rel * scale, `${what}[${i}]: ${a} vs ${expected[i]}`));
}

describe('spectrum', async () => {
  const dir = await makeTempDir('lf-spectrum-');
  after(() => rm(dir, { recursive: true, force: true }));
  const backend = await getBackend();

  it('reports the planted singular values of every adapter module, exactly', async () => {
    const plants = [
      plantedLora({ name: 'model.layers.10.self_attn.q_proj', out: 24, in: 20, sigma: [6, 3, 1.5, 0.7, 0.2, 0.05], alpha: 12, seed: 10 }),
      plantedLora({ name: 'model.layers.2.self_attn.q_proj', out: 24, in: 20, sigma: [2, 1.9, 1.8, 0.1, 0.01, 0.001], alpha: 12, seed: 20 }),
      // rank-deficient: LoRA rank 6, product rank 3
      plantedLora({ name: 'model.layers.2.mlp.down_proj', out: 16, in: 30, sigma: [4, 2, 1, 0, 0, 0], alpha: 3, seed: 30 }),
    ];
    const ad = join(dir, 'planted');
    await writeAdapter(ad, plants.map((p) => p.module));
    const res = await adapterSpectrum({ backend, adapter: ad, top: 4 });
    assert.equal(res.method, 'exact-from-factors');
    // natural order: layers.2 before layers.10
    assert.deepEqual(res.tensors.map((t) => t.name), ['model.layers.2.mlp.down_proj', 'model.layers.2.self_attn.q_proj', 'model.layers.10.self_attn.q_proj']);
    for (const p of plants) {
      const t = res.tensors.find((x) => x.name === p.module.name)!;
      const want = expectedFromPlant(p.sigma);
      assertClose(t.sigma, p.sigma.slice(0, 4), 2e-6, `${t.name} sigma`);
      assertClose(t.energy, want.energy.slice(0, 4), 1e-5, `${t.name} energy`);
      assert.deepEqual([t.effectiveRank.p90, t.effectiveRank.p95, t.effectiveRank.p99], want.ranks, t.name);
      assert.ok(Math.abs(t.totalEnergy - p.sigma.reduce((a, s) => a + s * s, 0)) < 1e-5 * t.totalEnergy);
      assert.equal(t.rank, 6);
      assert.deepEqual(t.shape, [p.U.rows, p.V.rows]);
    }
    const q10 = res.tensors[2];
    assert.equal(q10.layer, 10);
    assert.equal(q10.moduleType, 'q_proj');
  });

  it('uses alpha/√r with rsLoRA and folds an EDoRA latent into the product', async () => {
    const rs = plantedLora({ name: 'model.layers.0.self_attn.v_proj', out: 12, in: 10, sigma: [3, 1, 0.5, 0.25], alpha: 8, seed: 40, useRslora: true });
    const adRs = join(dir, 'rslora');
    await writeAdapter(adRs, [rs.module], { useRslora: true });
    assertClose((await adapterSpectrum({ backend, adapter: adRs })).tensors[0].sigma, rs.sigma, 2e-6, 'rslora sigma');

    const ed = plantedLora({ name: 'model.layers.0.self_attn.v_proj', out: 12, in: 10, sigma: [5, 2, 1], alpha: 3, seed: 50, latent: true });
    const adEd = join(dir, 'edora');
    await writeAdapter(adEd, [ed.module]);
    const res = await adapterSpectrum({ backend, adapter: adEd });
    assertClose(res.tensors[0].sigma, ed.sigma, 2e-6, 'edora sigma');
    assert.ok(res.notes.some((n) => n.includes('EDoRA')));
  });

  it('filters adapter modules with --include', async () => {
    const a = plantedLora({ name: 'model.layers.0.self_attn.q_proj', out: 8, in: 8, sigma: [1, 0.5], alpha: 2, seed: 60 });
    const b = plantedLora({ name: 'model.layers.0.mlp.up_proj', out: 8, in: 8, sigma: [1, 0.5], alpha: 2, seed: 70 });
    const ad = join(dir, 'include');
    await writeAdapter(ad, [a.module, b.module]);
    const res = await adapterSpectrum({ backend, adapter: ad, include: /self_attn/ });
    assert.deepEqual(res.tensors.map((t) => t.name), [a.module.name]);
  });

  it('finds the planted spectrum of a checkpoint delta, with ‖Δ‖² exact and only decoder-layer weights by default', async () => {
    const hidden = 40;
    const planted = plantedMatrix(48, hidden, [5, 3, 2, 1, 0.5], 80);
    const baseQ = gaussianMatrix(48, hidden, 81);
    const baseUp = gaussianMatrix(64, hidden, 82);
    // noise on up_proj makes its Δ full rank, so energy fractions stay below 1
    const noise = gaussianMatrix(64, hidden, 83);
    const upDelta = Float32Array.from(noise.data, (x) => 0.01 * x);
    const emb = gaussianMatrix(10, hidden, 84);
    const tunedQ = Float32Array.from(baseQ.data, (x, i) => x + planted.a.data[i]);
    const tunedUp = Float32Array.from(baseUp.data, (x, i) => x + upDelta[i]);
    const a = join(dir, 'model-a');
    const b = join(dir, 'model-b');
    const norm = new Float32Array(hidden).fill(1);
    // a changed norm: 1-D, so no spectrum, but reported with ‖b − a‖/‖a‖ = 0.02·√10 / √40 = 1%
    const tunedNorm = Float32Array.from(norm, (x, i) => (i < 10 ? x + 0.02 : x));
    await writeModelFolder(a, {
      'model.layers.0.post_attention_layernorm.weight': { shape: [hidden], data: norm },
      'model.embed_tokens.weight': { shape: [10, hidden], data: emb.data },
      'model.layers.0.self_attn.q_proj.weight': { shape: [48, hidden], data: baseQ.data },
      'model.layers.0.mlp.up_proj.weight': { shape: [64, hidden], data: baseUp.data },
      'model.layers.0.input_layernorm.weight': { shape: [hidden], data: norm },
    });
    await writeModelFolder(b, {
      'model.embed_tokens.weight': { shape: [10, hidden], data: Float32Array.from(emb.data, (x) => x + 1) },
      'model.layers.0.self_attn.q_proj.weight': { shape: [48, hidden], data: tunedQ },
      'model.layers.0.mlp.up_proj.weight': { shape: [64, hidden], data: tunedUp },
      'model.layers.0.input_layernorm.weight': { shape: [hidden], data: norm },
      'model.layers.0.post_attention_layernorm.weight': { shape: [hidden], data: tunedNorm },
      'model.layers.0.extra.weight': { shape: [4, 4], data: new Float32Array(16) },
    });
    const res = await deltaSpectrum({ backend, modelA: a, modelB: b, top: 8, seed: 1 });
    assert.equal(res.method, 'randomized-svd');
    assert.deepEqual(res.tensors.map((t) => t.name), ['model.layers.0.mlp.up_proj.weight', 'model.layers.0.self_attn.q_proj.weight']);
    assert.deepEqual(
      res.skipped.map((s) => s.name).sort(),
      ['model.layers.0.extra.weight', 'model.layers.0.input_layernorm.weight'],
    );
    assert.deepEqual(res.changed1d.map((v) => [v.name, v.shape]), [['model.layers.0.post_attention_layernorm.weight', [hidden]]]);
    assert.ok(Math.abs(res.changed1d[0].relChange! - 0.01) < 1e-6, `${res.changed1d[0].relChange}`);
    // the terminal table and the --json summary say it too
    const human = await runCli(['spectrum', '--model-a', a, '--model-b', b, '--out', join(dir, 'cli-1d'), '--top', '4', '--no-png', '--quiet']);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /1 1-D tensor\(s\) changed[^\n]*\n1-D tensor\s+shape\s+rel\. change\nmodel\.layers\.0\.post_attention_layernorm\.weight\s+\[40\]\s+1\.00+%/);
    const json = await runCli(['spectrum', '--model-a', a, '--model-b', b, '--out', join(dir, 'cli-1d'), '--top', '4', '--no-png', '--json', '--force']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout).changed1d.map((v: { name: string }) => v.name), ['model.layers.0.post_attention_layernorm.weight']);

    const q = res.tensors[1];
    // the stored Δ is tunedQ − baseQ in f32, so compare with the exact SVD of that difference
    const exactQ = svdSmall({ rows: 48, cols: hidden, data: Float32Array.from(tunedQ, (x, i) => x - baseQ.data[i]) });
    assertClose(q.sigma.slice(0, 5), Array.from(exactQ.S.slice(0, 5)), 1e-5, 'delta sigma vs exact SVD');
    assertClose(q.sigma.slice(0, 5), [5, 3, 2, 1, 0.5], 1e-5, 'delta sigma vs plant');
    assert.deepEqual([q.effectiveRank.p90, q.effectiveRank.p95, q.effectiveRank.p99], expectedFromPlant([5, 3, 2, 1, 0.5]).ranks);

    const up = res.tensors[0];
    let total = 0;
    for (let i = 0; i < tunedUp.length; i++) total += (tunedUp[i] - baseUp.data[i]) ** 2;
    assert.ok(Math.abs(up.totalEnergy - total) <= 1e-12 * total, `‖Δ‖² ${up.totalEnergy} vs ${total}`);
    const exactUp = svdSmall({ rows: 64, cols: hidden, data: Float32Array.from(tunedUp, (x, i) => x - baseUp.data[i]) });
    // a flat (noise) spectrum is the hardest case for a randomized SVD: over 20 draws of such a
    // 64×40 matrix the top-8 σ were within 2.5% at worst (1.4% on average) with the defaults
    assertClose(up.sigma, Array.from(exactUp.S.slice(0, 8)), 4e-2, 'noise delta sigma');
    let kept = 0;
    for (const s of exactUp.S.slice(0, 8)) kept += s * s;
    assert.ok(Math.abs(up.energy[7] - kept / total) < 0.02, `energy at rank 8: ${up.energy[7]} vs ${kept / total}`);
    assert.ok(up.energy[7] < 0.5, 'noise is spread over all 40 directions: 8 hold well under half');
    assert.equal(up.effectiveRank.p90, null, 'beyond the 8 computed components');

    const withEmbed = await deltaSpectrum({ backend, modelA: a, modelB: b, top: 3, include: /embed_tokens/ });
    assert.deepEqual(withEmbed.tensors.map((t) => t.name), ['model.embed_tokens.weight']);
    // Δ = all-ones 10×40: one singular value √400 = 20
    assertClose(withEmbed.tensors[0].sigma, [20, 0, 0], 1e-5, 'embed delta');
  });

  it('summarizes a zero update as effective rank 0 and leaves ranks past the computed ones null', () => {
    const zero = summarizeSpectrum([0, 0, 0], 0, 2);
    assert.deepEqual(zero.effectiveRank, { p90: 0, p95: 0, p99: 0 });
    assert.deepEqual(zero.sigma, [0, 0]);
    // σ = 3, 1 of a Δ with ‖Δ‖² = 20: top-2 hold 10/20
    const partial = summarizeSpectrum([3, 1], 20, 2);
    assert.deepEqual(partial.energy, [9 / 20, 10 / 20]);
    assert.deepEqual(partial.effectiveRank, { p90: null, p95: null, p99: null });
  });

  it('refuses NaN factors, naming the adapter file and tensor', async () => {
    const bad = plantedLora({ name: 'model.layers.0.self_attn.q_proj', out: 8, in: 6, sigma: [1, 0.5], alpha: 2, seed: 95 });
    bad.module.A.data[3] = Number.NaN;
    const ad = join(dir, 'nan');
    await writeAdapter(ad, [bad.module]);
    await assert.rejects(adapterSpectrum({ backend, adapter: ad }), /nan\/adapter_model\.safetensors: tensor "base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight" holds NaN at element 3/);
  });

  it('refuses --top 0', async () => {
    await assert.rejects(adapterSpectrum({ backend, adapter: dir, top: 0 }), /top must be an integer ≥ 1/);
  });
});
