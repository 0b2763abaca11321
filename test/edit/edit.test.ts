import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { getBackend } from '../../src/linalg/index.js';
import { openGguf } from '../../src/io/gguf.js';
import { createRng } from '../../src/linalg/random.js';
import { openPeftAdapter, readPeftAdapter, type LoraModule } from '../../src/lora/adapter.js';
import { applySigmaEdit, editAdapter, editDelta, removedComponents, type SigmaEdit } from '../../src/edit/edit.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { runCli } from '../helpers/cli.js';
import { denseUpdate, plantedLora, plantedSum, relMaxDiff, writeAdapter, type PlantedLora } from '../helpers/spectrum.js';
import { gaussianMatrix, plantedMatrix } from '../linalg/planted.js';

const TOL = 2e-6;

describe('edit', async () => {
  const dir = await makeTempDir('lf-edit-');
  after(() => rm(dir, { recursive: true, force: true }));
  const backend = await getBackend();

  // file order differs from natural order (layers.10 is written first), and ranks differ
  const plants: PlantedLora[] = [
    plantedLora({ name: 'model.layers.10.self_attn.q_proj', out: 20, in: 16, sigma: [8, 4, 2, 1], alpha: 16, seed: 1 }),
    plantedLora({ name: 'model.layers.2.self_attn.q_proj', out: 20, in: 16, sigma: [5, 3, 2, 1.5, 1, 0.5], alpha: 16, seed: 11 }),
    plantedLora({ name: 'model.layers.2.self_attn.v_proj', out: 12, in: 16, sigma: [3, 2, 1, 0.5], alpha: 8, seed: 21 }),
  ];
  const input = join(dir, 'input');
  const lmHead = { shape: [6, 4], data: Float32Array.from({ length: 24 }, (_, i) => i / 7) };
  await writeAdapter(input, plants.map((p) => p.module), { full: { 'lm_head.weight': lmHead } });
  const plantOf = (name: string) => plants.find((p) => p.module.name === name)!;

  /** The written adapter's updates, with the scaling PEFT would compute from its config. */
  async function updates(out: string): Promise<Map<string, { m: LoraModule; update: Float64Array; rank: number; alpha: number }>> {
    const adapter = await openPeftAdapter(out);
    try {
      const map = new Map();
      for (const info of adapter.modules) {
        const m = await adapter.load(info.name);
        map.set(info.name, { m, update: denseUpdate(m, info.scaling), rank: info.rank, alpha: info.alpha });
      }
      return map;
    } finally {
      await adapter.close();
    }
  }

  async function run(name: string, edit: SigmaEdit, extra: Partial<Parameters<typeof editAdapter>[0]> = {}) {
    const out = join(dir, name);
    const summary = await editAdapter({ backend, adapter: input, out, edit, ...extra });
    return { out, summary, got: await updates(out) };
  }

  it('zeroing component i removes exactly σ_i·u_i·v_iᵀ and drops it from the rank', async () => {
    const { got, summary } = await run('zero', { zero: [1] }, { select: { layers: new Set([2]), modules: new Set(['q_proj']) } });
    const p = plantOf('model.layers.2.self_attn.q_proj');
    const g = got.get(p.module.name)!;
    // Δ − σ_1·u_1·v_1ᵀ, from the planted triplets
    assert.ok(relMaxDiff(g.update, plantedSum(p, [1, 0, 1, 1, 1, 1])) < TOL, `${relMaxDiff(g.update, plantedSum(p, [1, 0, 1, 1, 1, 1]))}`);
    assert.equal(g.rank, 5);
    assert.equal(g.alpha, 16, 'alpha kept; the factors absorb alpha/r');
    const report = summary.modules.find((m) => m.name === p.module.name)!;
    assert.deepEqual([report.edited, report.rankBefore, report.rankAfter], [true, 6, 5]);
    assert.equal(report.sigmaAfter![1], 0);
    assert.deepEqual([summary.edited, summary.copied, summary.fullTensors], [1, 2, 1]);
  });

  it('copies unselected modules and modules_to_save bit for bit', async () => {
    const { out } = await run('copy', { zero: [0] }, { select: { modules: new Set(['v_proj']) } });
    const before = await readPeftAdapter(input);
    const after = await readPeftAdapter(out);
    for (const name of ['model.layers.10.self_attn.q_proj', 'model.layers.2.self_attn.q_proj']) {
      const x = before.modules.find((m) => m.name === name)!;
      const y = after.modules.find((m) => m.name === name)!;
      assert.deepEqual([y.A, y.B, y.alpha], [x.A, x.B, x.alpha], name);
    }
    const v = after.modules.find((m) => m.name === 'model.layers.2.self_attn.v_proj')!;
    assert.equal(v.A.rows, 3);
    const adapter = await openPeftAdapter(out);
    assert.deepEqual(Array.from(await adapter.readFull('lm_head.weight')), Array.from(lmHead.data));
    await adapter.close();
    const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.deepEqual(config.modules_to_save, ['lm_head']);
    assert.equal(config.base_model_name_or_path, 'synthetic-base');
  });

  it('--keep keeps only the listed components; --scale multiplies (0 removes, negative flips)', async () => {
    const keep = await run('keep', { keep: [0, 1] });
    for (const p of plants) {
      const g = keep.got.get(p.module.name)!;
      assert.equal(g.rank, 2, p.module.name);
      assert.ok(relMaxDiff(g.update, plantedSum(p, [1, 1, 0, 0, 0, 0])) < TOL, p.module.name);
    }
    const scale = await run('scale', { scale: new Map([[0, 0.5], [2, -1], [3, 0]]) });
    for (const p of plants) {
      const g = scale.got.get(p.module.name)!;
      assert.equal(g.rank, p.sigma.length - 1, p.module.name);
      assert.ok(relMaxDiff(g.update, plantedSum(p, [0.5, 1, -1, 0, 1, 1])) < TOL, p.module.name);
    }
    // keep, then zero: component 1 is both kept and zeroed, and zero wins
    const both = await run('keep-zero', { keep: [0, 1, 2], zero: [1] }, { select: { layers: new Set([10]) } });
    const p10 = plants[0];
    assert.ok(relMaxDiff(both.got.get(p10.module.name)!.update, plantedSum(p10, [1, 0, 1, 0])) < TOL);
  });

  it('a module with every component removed stays a rank-1 module with a zero update', async () => {
    const { got } = await run('all-zero', { zero: [0, 1, 2, 3] }, { select: { modules: new Set(['v_proj']) } });
    const g = got.get('model.layers.2.self_attn.v_proj')!;
    assert.equal(g.rank, 1);
    assert.ok(g.update.every((x) => x === 0));
  });

  it('--perturb multiplies σ_i by (1 + ε·r_i) with r drawn in natural module order, then component order', async () => {
    const eps = 0.3;
    const { got } = await run('perturb', { perturb: eps }, { seed: 42 });
    // every module draws min(r, out, in) normals: layers.2.q_proj (6), layers.2.v_proj (4), layers.10.q_proj (4)
    const rng = createRng(42);
    const order = ['model.layers.2.self_attn.q_proj', 'model.layers.2.self_attn.v_proj', 'model.layers.10.self_attn.q_proj'];
    for (const name of order) {
      const p = plantOf(name);
      const w = p.sigma.map(() => 1 + eps * rng.normal());
      assert.ok(relMaxDiff(got.get(name)!.update, plantedSum(p, w)) < TOL, name);
      assert.equal(got.get(name)!.rank, p.sigma.length);
    }
  });

  it('is deterministic with a seed, and a module gets the same noise whatever else is selected', async () => {
    const a = await run('seed-a', { perturb: 0.2 }, { seed: 7 });
    const b = await run('seed-b', { perturb: 0.2 }, { seed: 7 });
    const c = await run('seed-c', { perturb: 0.2 }, { seed: 8 });
    const bytes = async (out: string) => readFile(join(out, 'adapter_model.safetensors'));
    assert.deepEqual(await bytes(a.out), await bytes(b.out));
    assert.notDeepEqual(await bytes(a.out), await bytes(c.out));
    const only10 = await run('seed-layer10', { perturb: 0.2 }, { seed: 7, select: { layers: new Set([10]) } });
    const name = 'model.layers.10.self_attn.q_proj';
    assert.deepEqual(only10.got.get(name)!.m, a.got.get(name)!.m);
  });

  it('keeps the update exact under rsLoRA scaling when the rank shrinks', async () => {
    const p = plantedLora({ name: 'model.layers.0.mlp.up_proj', out: 18, in: 10, sigma: [4, 3, 2, 1, 0.5], alpha: 6, seed: 31, useRslora: true });
    const ad = join(dir, 'rs-in');
    await writeAdapter(ad, [p.module], { useRslora: true });
    const out = join(dir, 'rs-out');
    await editAdapter({ backend, adapter: ad, out, edit: { zero: [0, 4] } });
    const g = (await updates(out)).get(p.module.name)!;
    assert.equal(g.rank, 3);
    assert.ok(relMaxDiff(g.update, plantedSum(p, [0, 1, 1, 1, 0])) < TOL);
    assert.equal(JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8')).use_rslora, true);
  });

  it('refuses component indices no selected module has, DoRA modules, and an empty selection', async () => {
    await assert.rejects(editAdapter({ backend, adapter: input, out: join(dir, 'bad1'), edit: { zero: [6] } }), /component index 6 does not exist: the selected modules have at most 6/);
    // layers.10 has only 4 components
    await assert.rejects(
      editAdapter({ backend, adapter: input, out: join(dir, 'bad2'), edit: { scale: new Map([[4, 2]]) }, select: { layers: new Set([10]) } }),
      /at most 4 components/,
    );
    await assert.rejects(editAdapter({ backend, adapter: input, out: join(dir, 'bad3'), edit: { zero: [0] }, select: { layers: new Set([99]) } }), /select no module/);
    const dora = plantedLora({ name: 'model.layers.0.self_attn.q_proj', out: 6, in: 6, sigma: [1, 0.5], alpha: 2, seed: 90 });
    dora.module.magnitude = new Float32Array(6).fill(1);
    const doraDir = join(dir, 'dora');
    await writeAdapter(doraDir, [dora.module], { useDora: true });
    await assert.rejects(editAdapter({ backend, adapter: doraDir, out: join(dir, 'bad4'), edit: { zero: [0] } }), /is DoRA; .*convert the adapter to LoRA first/);
  });

  it('edits an adapter extracted from a model pair', async () => {
    const planted = plantedMatrix(24, 16, [6, 3, 1, 0.5], 60);
    const baseQ = gaussianMatrix(24, 16, 61);
    const baseV = gaussianMatrix(8, 16, 62);
    const plantedV = plantedMatrix(8, 16, [2, 1], 63);
    const a = join(dir, 'pair-a');
    const b = join(dir, 'pair-b');
    await writeModelFolder(a, {
      'model.layers.0.self_attn.q_proj.weight': { shape: [24, 16], data: baseQ.data },
      'model.layers.0.self_attn.v_proj.weight': { shape: [8, 16], data: baseV.data },
    });
    await writeModelFolder(b, {
      'model.layers.0.self_attn.q_proj.weight': { shape: [24, 16], data: Float32Array.from(baseQ.data, (x, i) => x + planted.a.data[i]) },
      'model.layers.0.self_attn.v_proj.weight': { shape: [8, 16], data: Float32Array.from(baseV.data, (x, i) => x + plantedV.a.data[i]) },
    });
    const out = join(dir, 'pair-out');
    const summary = await editDelta({ backend, modelA: a, modelB: b, rank: 4, out, edit: { zero: [0] }, select: { modules: new Set(['q_proj']) } });
    assert.deepEqual(summary.modules.map((m) => [m.name, m.edited, m.rankAfter]), [
      ['model.layers.0.self_attn.q_proj', true, 3],
      ['model.layers.0.self_attn.v_proj', false, 4],
    ]);
    const got = await updates(out);
    const q = got.get('model.layers.0.self_attn.q_proj')!;
    const p: PlantedLora = { module: q.m, scaling: 1, U: planted.U, V: planted.V, sigma: Array.from(planted.S) };
    assert.ok(relMaxDiff(q.update, plantedSum(p, [0, 1, 1, 1])) < 1e-5, `${relMaxDiff(q.update, plantedSum(p, [0, 1, 1, 1]))}`);
    // unedited: the rank-4 extraction of a rank-2 Δ is Δ itself
    const v = got.get('model.layers.0.self_attn.v_proj')!;
    assert.ok(relMaxDiff(v.update, Float64Array.from(plantedV.a.data)) < 1e-5);
    assert.equal(v.alpha, 4, 'alpha = --rank');
  });

  it('a model pair: modules identical in A and B are skipped and listed, not written as zero LoRAs', async () => {
    const baseQ = gaussianMatrix(24, 16, 64);
    const baseK = gaussianMatrix(8, 16, 65);
    const planted = plantedMatrix(24, 16, [3, 1], 66);
    const a = join(dir, 'same-a');
    const b = join(dir, 'same-b');
    const k = { shape: [8, 16], data: baseK.data };
    await writeModelFolder(a, { 'model.layers.0.self_attn.k_proj.weight': k, 'model.layers.0.self_attn.q_proj.weight': { shape: [24, 16], data: baseQ.data } });
    await writeModelFolder(b, {
      'model.layers.0.self_attn.k_proj.weight': k,
      'model.layers.0.self_attn.q_proj.weight': { shape: [24, 16], data: Float32Array.from(baseQ.data, (x, i) => x + planted.a.data[i]) },
    });
    const out = join(dir, 'same-out');
    const summary = await editDelta({ backend, modelA: a, modelB: b, rank: 4, out, edit: { zero: [0] } });
    assert.deepEqual(summary.modules.map((m) => [m.name, m.edited]), [['model.layers.0.self_attn.q_proj', true]]);
    assert.deepEqual([summary.edited, summary.copied, summary.identical], [1, 0, ['model.layers.0.self_attn.k_proj']]);
    assert.deepEqual([...(await updates(out)).keys()], ['model.layers.0.self_attn.q_proj']);
    const cli = await runCli(['edit', '--model-a', a, '--model-b', b, '--rank', '4', '--zero', '0', '--out', join(dir, 'same-cli'), '--quiet']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout, /1 module\(s\) edited, 0 unchanged[\s\S]*1 module\(s\) identical in A and B: skipped, nothing written/);
    // nothing differs at all: refused, nothing written
    const none = join(dir, 'same-none');
    await assert.rejects(editDelta({ backend, modelA: a, modelB: a, rank: 4, out: none, edit: { zero: [0] } }), /identical in all 2 tensor\(s\) compared: there is no update to edit; nothing written/);
    await assert.rejects(readFile(join(none, 'adapter_config.json')), /ENOENT/);
  });

  it('writes the edited adapter as llama.cpp GGUF too (--format both)', async () => {
    // GGUF LoRA cannot hold modules_to_save tensors, so this input has none
    const noFull = join(dir, 'gguf-in');
    await writeAdapter(noFull, plants.map((p) => p.module));
    const out = join(dir, 'gguf');
    const baseConfig = { architectures: ['LlamaForCausalLM'], num_attention_heads: 2, num_key_value_heads: 2, hidden_size: 16 };
    await editAdapter({ backend, adapter: noFull, out, edit: { zero: [0] }, format: 'both', baseConfig, select: { modules: new Set(['v_proj']) } });
    const gguf = await openGguf(join(out, 'adapter.gguf'));
    try {
      const shapes = Object.fromEntries(gguf.list().map((t) => [t.name, t.shape]));
      // v_proj lost one component (rank 3); the q_proj modules keep rank 6 and 4
      assert.deepEqual(shapes['blk.2.attn_v.weight.lora_a'], [3, 16]);
      assert.deepEqual(shapes['blk.2.attn_q.weight.lora_a'], [6, 16]);
      assert.deepEqual(shapes['blk.10.attn_q.weight.lora_b'], [20, 4]);
    } finally {
      await gguf.close();
    }
    assert.ok((await readPeftAdapter(out)).modules.length === 3);
  });

  it('applySigmaEdit / removedComponents follow keep → zero → scale → perturb', () => {
    const e: SigmaEdit = { keep: [0, 1, 2, 9], zero: [2], scale: new Map([[1, 3], [7, 5]]), perturb: 0.5 };
    assert.deepEqual([...removedComponents(4, e)].sort(), [2, 3]);
    assert.deepEqual(Array.from(applySigmaEdit([4, 3, 2, 1], e, [1, -1, 0, 0])), [6, 4.5, 0, 0]);
    assert.throws(() => applySigmaEdit([1, 2], { perturb: 1 }), /needs 2 noise values/);
  });
});
