import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { access, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { applyAdapters } from '../../src/apply/apply.js';
import { edoraInit } from '../../src/edora-init/edora-init.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { openSafetensors } from '../../src/io/safetensors.js';
import { openPeftAdapter } from '../../src/lora/adapter.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { flat, matmul, maxAbsDiff, orthonormalColumns, randomMat, transposeMat, unflat, type Mat } from '../helpers/dora.js';

const Q = 'model.layers.0.self_attn.q_proj';
const K = 'model.layers.0.self_attn.k_proj';
const VP = 'model.layers.0.self_attn.v_proj';
const IN = 20;
const R = 4;

/** W = U·diag(σ)·Vᵀ with σ_i = 10·0.6^i: a known SVD to compare against. */
function planted(out: number, seed: number): { W: Mat; U: Mat; S: number[]; V: Mat } {
  const k = Math.min(out, IN);
  const U = orthonormalColumns(randomMat(out, k, seed));
  const V = orthonormalColumns(randomMat(IN, k, seed + 1));
  const S = Array.from({ length: k }, (_, i) => 10 * 0.6 ** i);
  const W = matmul(U.map((row) => row.map((x, j) => x * S[j])), transposeMat(V)).map((row) => row.map(Math.fround));
  return { W, U, S, V };
}

const q = planted(24, 1);
const v = planted(16, 3);
const k = planted(16, 5);

describe('edora-init: SVD initialisation of an EDoRA adapter', async () => {
  const tmp = await makeTempDir('lf-edora-init-');
  const baseDir = join(tmp, 'base');
  before(() =>
    writeModelFolder(baseDir, {
      'model.embed_tokens.weight': { shape: [30, IN], data: flat(randomMat(30, IN, 9)) },
      [`${Q}.weight`]: { shape: [24, IN], data: flat(q.W) },
      [`${K}.weight`]: { shape: [16, IN], data: flat(k.W) },
      [`${VP}.weight`]: { shape: [16, IN], data: flat(v.W) },
      'model.layers.0.input_layernorm.weight': { shape: [IN], data: new Float32Array(IN).fill(1) },
    }),
  );
  after(() => rm(tmp, { recursive: true, force: true }));

  it('writes A, B from the top-r SVD of W, a small latent R, magnitude = row norms of W, and reconstr_config.json', async () => {
    const out = join(tmp, 'init');
    const report = await edoraInit({ base: baseDir, rank: R, targetModules: ['q_proj', 'v_proj'], out, seed: 7 });
    assert.deepEqual(report.modules.map((m) => m.name), [Q, VP]);

    const f = await openSafetensors(join(out, 'adapter_model.safetensors'));
    const names = f.list().map((t) => t.name).sort();
    const keys = (m: string) => [`base_model.model.${m}.lora_A.weight`, `base_model.model.${m}.lora_B.weight`, `base_model.model.${m}.lora_magnitude_vector`, `base_model.model.${m}_lora_latent_mapping.weight`];
    assert.deepEqual(names, [...keys(Q), ...keys(VP)].sort());
    for (const [m, p] of [[Q, q], [VP, v]] as const) {
      const out = p.W.length;
      const pre = `base_model.model.${m}`;
      assert.deepEqual(f.info(`${pre}.lora_A.weight`).shape, [R, IN]);
      assert.deepEqual(f.info(`${pre}.lora_B.weight`).shape, [out, R]);
      assert.deepEqual(f.info(`${pre}.lora_magnitude_vector`).shape, [out]);
      assert.deepEqual(f.info(`${pre}_lora_latent_mapping.weight`).shape, [R, R]);
      const A = unflat(await f.read(`${pre}.lora_A.weight`), R, IN);
      const B = unflat(await f.read(`${pre}.lora_B.weight`), out, R);
      // B·A is the rank-r truncation U_r·Σ_r·V_rᵀ
      const Wr = matmul(p.U.map((row) => row.slice(0, R).map((x, j) => x * p.S[j])), transposeMat(p.V.map((row) => row.slice(0, R))));
      assert.ok(maxAbsDiff(matmul(B, A), Wr) < 1e-4, `${m}: B·A vs W_r ${maxAbsDiff(matmul(B, A), Wr)}`);
      // B = left singular vectors (orthonormal), A = Σ·Vᵀ (rows orthogonal with norms σ)
      const I = Array.from({ length: R }, (_, i) => Array.from({ length: R }, (_, j) => (i === j ? 1 : 0)));
      assert.ok(maxAbsDiff(matmul(transposeMat(B), B), I) < 1e-5);
      const S2 = I.map((row, i) => row.map((x) => x * p.S[i] ** 2));
      assert.ok(maxAbsDiff(matmul(A, transposeMat(A)), S2) < 1e-3);
      const mag = await f.read(`${pre}.lora_magnitude_vector`);
      p.W.forEach((row, i) => assert.ok(Math.abs(mag[i] - Math.hypot(...row)) < 1e-5 * Math.hypot(...row)));
      const latent = Array.from(await f.read(`${pre}_lora_latent_mapping.weight`));
      const std = Math.sqrt(latent.reduce((s, x) => s + x * x, 0) / latent.length);
      assert.ok(std > 2e-6 && std < 5e-5, `R std ${std}`);
    }
    await f.close();

    const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(config.peft_type, 'LORA');
    assert.equal(config.use_dora, true);
    assert.equal(config.r, R);
    assert.equal(config.lora_alpha, R);
    assert.deepEqual(config.target_modules, ['q_proj', 'v_proj']);
    assert.deepEqual(JSON.parse(await readFile(join(out, 'reconstr_config.json'), 'utf8')), {
      reconstruction_type: 'svd',
      reconstr_mode: 'separated',
      half_init_dec: false,
      replacement_module_random_init: false,
      r_squared: true,
      svd: { n_iter: 4, random_state: 7, rank: R },
    });

    const adapter = await openPeftAdapter(out);
    assert.ok(adapter.modules.every((m) => m.hasLatent && m.hasMagnitude && m.rank === R));
    await adapter.close();
  });

  it('is deterministic for a seed, and a fresh EDoRA barely changes the model when applied', async () => {
    const a = join(tmp, 'seed-a');
    const b = join(tmp, 'seed-b');
    const c = join(tmp, 'seed-c');
    await edoraInit({ base: baseDir, rank: R, targetModules: ['q_proj'], out: a, seed: 3 });
    await edoraInit({ base: baseDir, rank: R, targetModules: ['q_proj'], out: b, seed: 3 });
    await edoraInit({ base: baseDir, rank: R, targetModules: ['q_proj'], out: c, seed: 4 });
    const bytes = (d: string) => readFile(join(d, 'adapter_model.safetensors'));
    assert.deepEqual(await bytes(a), await bytes(b));
    assert.notDeepEqual(await bytes(a), await bytes(c));

    const merged = join(tmp, 'merged');
    const report = await applyAdapters({ base: baseDir, adapters: [{ dir: a }], out: merged });
    assert.equal(report.adapters[0].variant, 'edora');
    assert.equal(report.adapters[0].reconstrConfig, join(a, 'reconstr_config.json'));
    const ckpt = await openCheckpoint(merged);
    const got = unflat(await ckpt.read(`${Q}.weight`), 24, IN);
    await ckpt.close();
    const change = maxAbsDiff(got, q.W);
    assert.ok(change < 1e-3 && change > 0, `max change ${change}`);
  });

  it('refuses targets that are missing, not linear, or too small for the rank', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['q_proj', 'o_proj'], R, /o_proj not found/],
      [['input_layernorm'], R, /2-D weights/],
      [['embed_tokens'], R, /embedding/],
      [['q_proj'], 21, /rank 21 exceeds/],
    ];
    for (const [targets, rank, pattern] of cases) {
      const out = join(tmp, `bad-${targets.join('-')}-${rank}`);
      await assert.rejects(edoraInit({ base: baseDir, rank, targetModules: targets, out }), pattern);
      await assert.rejects(access(out));
    }
  });
});
