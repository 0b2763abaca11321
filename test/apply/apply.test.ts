import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { access, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { applyAdapters } from '../../src/apply/apply.js';
import { parseAdapterSpec } from '../../src/lora/adapter-spec.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { roundTo } from '../../src/tensor/dtype.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import {
  flat,
  maxAbsDiff,
  naiveMerge,
  randomMat,
  rowNormsAfterLora,
  transposeMat,
  unflat,
  writePeftFixture,
  type Mat,
  type PeftModuleFixture,
} from '../helpers/dora.js';

const H = 8; // hidden
const V = 11; // vocab
const KV = 6; // v_proj output
const FF = 12;
const Q = 'model.layers.0.self_attn.q_proj';
const VP = 'model.layers.0.self_attn.v_proj';
const EMB = 'model.embed_tokens';

const base: Record<string, Mat> = {
  [`${EMB}.weight`]: randomMat(V, H, 10),
  [`${Q}.weight`]: randomMat(H, H, 11),
  [`${VP}.weight`]: randomMat(KV, H, 12),
  'model.layers.0.mlp.down_proj.weight': randomMat(H, FF, 13),
  'lm_head.weight': randomMat(V, H, 14),
};
const norm = Float32Array.from({ length: H }, (_, i) => 1 + i / 8);

async function writeBase(dir: string, dtype: 'F32' | 'BF16' = 'F32'): Promise<void> {
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, m] of Object.entries(base)) tensors[name] = { shape: [m.length, m[0].length], data: flat(m) };
  tensors['model.layers.0.input_layernorm.weight'] = { shape: [H], data: norm };
  await writeModelFolder(dir, tensors, { dtype, config: { architectures: ['LlamaForCausalLM'], model_type: 'llama', torch_dtype: dtype === 'BF16' ? 'bfloat16' : 'float32' } });
  await writeFile(join(dir, 'tokenizer.json'), '{"version":"1.0"}');
  await writeFile(join(dir, 'tokenizer_config.json'), '{}');
  await writeFile(join(dir, 'README.md'), '# tiny');
}

const linearFx = (name: string, out: number, inF: number, seed: number, extra: Partial<PeftModuleFixture> = {}): PeftModuleFixture => ({
  name,
  kind: 'linear',
  A: randomMat(3, inF, seed, 0.3),
  B: randomMat(out, 3, seed + 1, 0.3),
  ...extra,
});
const magnitudes = (n: number, seed: number) => randomMat(1, n, seed).map((row) => row.map((x) => Math.fround(2 + 0.5 * Math.abs(x))))[0];

async function readOut(dir: string, name: string): Promise<Mat> {
  const ckpt = await openCheckpoint(dir);
  try {
    const { shape } = ckpt.info(name);
    return unflat(await ckpt.read(name), shape[0], shape[1] ?? 1);
  } finally {
    await ckpt.close();
  }
}

describe('apply: merging LoRA / DoRA / EDoRA adapters into a base', async () => {
  const tmp = await makeTempDir('lf-dora-apply-');
  const baseDir = join(tmp, 'base');
  before(() => writeBase(baseDir));
  after(() => rm(tmp, { recursive: true, force: true }));

  it('merges DoRA linear + embedding modules and modules_to_save, streaming into shards', async () => {
    const q = linearFx(Q, H, H, 20, { magnitude: magnitudes(H, 22) });
    const v = linearFx(VP, KV, H, 23, { magnitude: magnitudes(KV, 25) });
    const e: PeftModuleFixture = { name: EMB, kind: 'embedding', A: randomMat(3, V, 26, 0.3), B: randomMat(H, 3, 27, 0.3), magnitude: magnitudes(H, 28) };
    const head = randomMat(V, H, 29);
    const dir = join(tmp, 'dora');
    await writePeftFixture(dir, {
      config: { r: 3, lora_alpha: 6, use_dora: true, alpha_pattern: { 'layers.0.self_attn.v_proj': 1.5 } },
      modules: [q, v, e],
      full: { 'lm_head.weight': { shape: [V, H], data: flat(head) } },
    });
    const out = join(tmp, 'out-dora');
    const report = await applyAdapters({ base: baseDir, adapters: [{ dir }], out, maxShardBytes: 400 });

    assert.ok(maxAbsDiff(await readOut(out, `${Q}.weight`), naiveMerge(base[`${Q}.weight`], q, 2)) < 1e-5);
    assert.ok(maxAbsDiff(await readOut(out, `${VP}.weight`), naiveMerge(base[`${VP}.weight`], v, 0.5)) < 1e-5);
    assert.ok(maxAbsDiff(await readOut(out, `${EMB}.weight`), naiveMerge(base[`${EMB}.weight`], e, 2)) < 1e-5);
    assert.deepEqual(await readOut(out, 'lm_head.weight'), head);
    assert.deepEqual(flat(await readOut(out, 'model.layers.0.mlp.down_proj.weight')), flat(base['model.layers.0.mlp.down_proj.weight']));
    assert.deepEqual(flat(await readOut(out, 'model.layers.0.input_layernorm.weight')), norm);

    const files = await readdir(out);
    assert.ok(files.includes('model.safetensors.index.json') && files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length > 1, files.join());
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'README.md']) assert.ok(files.includes(f), f);
    assert.equal(report.tensors, 6);
    assert.equal(report.changedTensors, 4);
    assert.equal(report.adapters[0].variant, 'dora');
    assert.deepEqual(report.updates.map((u) => u.method).sort(), ['dora', 'dora', 'dora', 'full']);
  });

  it('merges EDoRA (latent R, saved key forms) and reads reconstr_config.json from the parent folder', async () => {
    const q = linearFx(Q, H, H, 30, { magnitude: magnitudes(H, 32), latent: randomMat(3, 3, 33) });
    const run = join(tmp, 'edora-run');
    const dir = join(run, 'checkpoint-10');
    await writePeftFixture(dir, { config: { r: 3, lora_alpha: 3, use_dora: true }, modules: [q] });
    await writeFile(join(run, 'reconstr_config.json'), JSON.stringify({ reconstruction_type: 'svd', reconstr_mode: 'separated', r_squared: true, svd: { n_iter: 10, random_state: 42, rank: 3 } }));
    const out = join(tmp, 'out-edora');
    const report = await applyAdapters({ base: baseDir, adapters: [{ dir }], out });
    assert.ok(maxAbsDiff(await readOut(out, `${Q}.weight`), naiveMerge(base[`${Q}.weight`], q, 1)) < 1e-5);
    assert.equal(report.adapters[0].variant, 'edora');
    assert.equal(report.adapters[0].reconstrConfig, join(run, 'reconstr_config.json'));

    const dir2 = join(tmp, 'edora-named');
    await writePeftFixture(dir2, { config: { r: 3, lora_alpha: 3, use_dora: true }, modules: [q], latentKey: 'with-adapter-name' });
    await applyAdapters({ base: baseDir, adapters: [{ dir: dir2 }], out: join(tmp, 'out-edora2') });
    assert.deepEqual(await readOut(join(tmp, 'out-edora2'), `${Q}.weight`), await readOut(out, `${Q}.weight`));
  });

  it('a DoRA whose magnitude equals ‖W + s·B·A‖ per row merges exactly like the plain LoRA', async () => {
    const lora = linearFx(Q, H, H, 40);
    const dora = { ...lora, magnitude: rowNormsAfterLora(base[`${Q}.weight`], lora, 2) };
    await writePeftFixture(join(tmp, 'x-lora'), { config: { r: 3, lora_alpha: 6 }, modules: [lora] });
    await writePeftFixture(join(tmp, 'x-dora'), { config: { r: 3, lora_alpha: 6, use_dora: true }, modules: [dora] });
    await applyAdapters({ base: baseDir, adapters: [{ dir: join(tmp, 'x-lora') }], out: join(tmp, 'out-x-lora') });
    await applyAdapters({ base: baseDir, adapters: [{ dir: join(tmp, 'x-dora') }], out: join(tmp, 'out-x-dora') });
    const a = await readOut(join(tmp, 'out-x-lora'), `${Q}.weight`);
    const b = await readOut(join(tmp, 'out-x-dora'), `${Q}.weight`);
    assert.ok(maxAbsDiff(a, b) < 1e-5);
    assert.ok(maxAbsDiff(a, base[`${Q}.weight`]) > 0.1, 'the LoRA does change the weight');
  });

  it('applies several adapters in order, each scaled by its weight (rsLoRA scaling included)', async () => {
    const lora = linearFx(Q, H, H, 50);
    const dora = linearFx(Q, H, H, 52, { magnitude: magnitudes(H, 54) });
    await writePeftFixture(join(tmp, 's-lora'), { config: { r: 3, lora_alpha: 3, use_rslora: true }, modules: [lora] });
    await writePeftFixture(join(tmp, 's-dora'), { config: { r: 3, lora_alpha: 3, use_dora: true }, modules: [dora] });
    const out = join(tmp, 'out-seq');
    await applyAdapters({ base: baseDir, adapters: [parseAdapterSpec(`${join(tmp, 's-lora')}:0.5`), { dir: join(tmp, 's-dora'), weight: 0.8 }], out });
    const W0 = base[`${Q}.weight`];
    const want = naiveMerge(naiveMerge(W0, lora, 3 / Math.sqrt(3), 0.5), dora, 1, 0.8);
    assert.ok(maxAbsDiff(await readOut(out, `${Q}.weight`), want) < 1e-5);
    const reversed = naiveMerge(naiveMerge(W0, dora, 1, 0.8), lora, 3 / Math.sqrt(3), 0.5);
    assert.ok(maxAbsDiff(want, reversed) > 1e-3, 'DoRA makes the order matter');
  });

  it('keeps the base dtype by default and converts with dtype (config torch_dtype follows)', async () => {
    const bf = join(tmp, 'base-bf16');
    await writeBase(bf, 'BF16');
    const dora = linearFx(Q, H, H, 60, { magnitude: magnitudes(H, 62) });
    await writePeftFixture(join(tmp, 'd-bf'), { config: { r: 3, lora_alpha: 3, use_dora: true }, modules: [dora] });
    const out = join(tmp, 'out-bf16');
    await applyAdapters({ base: bf, adapters: [{ dir: join(tmp, 'd-bf') }], out });
    const ckpt = await openCheckpoint(out);
    assert.equal(ckpt.info(`${Q}.weight`).dtype, 'BF16');
    await ckpt.close();
    // the merge runs on the bf16 base values read as f32, then rounds once to bf16
    const baseQ = unflat(roundTo(flat(base[`${Q}.weight`]), 'BF16'), H, H);
    const want = roundTo(flat(naiveMerge(baseQ, dora, 1)), 'BF16');
    assert.ok(maxAbsDiff(await readOut(out, `${Q}.weight`), unflat(want, H, H)) <= 2 ** -6);

    const out32 = join(tmp, 'out-f32');
    await applyAdapters({ base: bf, adapters: [{ dir: join(tmp, 'd-bf') }], out: out32, dtype: 'F32' });
    const c32 = await openCheckpoint(out32);
    assert.equal(c32.info('lm_head.weight').dtype, 'F32');
    await c32.close();
    assert.equal(JSON.parse(await readFile(join(out32, 'config.json'), 'utf8')).torch_dtype, 'float32');
  });

  it('lands an lm_head module on the tied embedding, and handles fan_in_fan_out (Conv1D) weights', async () => {
    const tied = join(tmp, 'base-tied');
    const Wc = randomMat(H, KV, 80); // GPT-2 Conv1D stores in × out
    await writeModelFolder(tied, {
      [`${EMB}.weight`]: { shape: [V, H], data: flat(base[`${EMB}.weight`]) },
      'transformer.h.0.attn.c_proj.weight': { shape: [H, KV], data: flat(Wc) },
    });
    const head = linearFx('lm_head', V, H, 81, { magnitude: magnitudes(V, 82) });
    const conv = linearFx('transformer.h.0.attn.c_proj', KV, H, 83, { magnitude: magnitudes(KV, 84) });
    const dir = join(tmp, 'tied-adapter');
    await writePeftFixture(dir, { config: { r: 3, lora_alpha: 3, use_dora: true, fan_in_fan_out: true }, modules: [head, conv] });
    const out = join(tmp, 'out-tied');
    const report = await applyAdapters({ base: tied, adapters: [{ dir }], out });
    assert.ok(maxAbsDiff(await readOut(out, `${EMB}.weight`), naiveMerge(base[`${EMB}.weight`], head, 1)) < 1e-5);
    assert.ok(report.notes.some((n) => /tied/.test(n)));
    // the DoRA norm is per output (a column of the stored in × out weight)
    const want = transposeMat(naiveMerge(transposeMat(Wc), conv, 1));
    assert.ok(maxAbsDiff(await readOut(out, 'transformer.h.0.attn.c_proj.weight'), want) < 1e-5);
  });

  it('refuses bad inputs before writing anything', async () => {
    const bad = async (name: string, fx: Parameters<typeof writePeftFixture>[1], pattern: RegExp) => {
      const dir = join(tmp, `bad-${name}`);
      await writePeftFixture(dir, fx);
      const out = join(tmp, `out-bad-${name}`);
      await assert.rejects(applyAdapters({ base: baseDir, adapters: [{ dir }], out }), pattern);
      await assert.rejects(access(out), 'no output folder is left behind');
    };
    // made for another base: q_proj with 10 inputs
    await bad('shape', { config: { r: 3, lora_alpha: 3 }, modules: [linearFx(Q, H, 10, 70)] }, /made for another base/);
    await bad('module', { config: { r: 3, lora_alpha: 3 }, modules: [linearFx('model.layers.7.mlp.up_proj', H, H, 71)] }, /another model/);
    await bad('no-magnitude', { config: { r: 3, lora_alpha: 3, use_dora: true }, modules: [linearFx(Q, H, H, 72)] }, /use_dora: true but module .* has no tensor ".*\.lora_magnitude_vector"/);
    await bad('magnitude-no-dora', { config: { r: 3, lora_alpha: 3 }, modules: [linearFx(Q, H, H, 73, { magnitude: magnitudes(H, 1) })] }, /does not set use_dora/);
    await bad('latent-rank', { config: { r: 3, lora_alpha: 3, use_dora: true }, modules: [linearFx(Q, H, H, 74, { magnitude: magnitudes(H, 2), latent: randomMat(2, 2, 3) })] }, /lora_latent_mapping is 2×2, expected 3×3/);
    await bad('ab-rank', { config: { r: 3, lora_alpha: 3 }, modules: [{ ...linearFx(Q, H, H, 75), B: randomMat(H, 2, 4) }] }, /ranks differ/);
    await bad(
      'reconstr-rank',
      {
        config: { r: 3, lora_alpha: 3, use_dora: true },
        modules: [linearFx(Q, H, H, 76, { magnitude: magnitudes(H, 5), latent: randomMat(3, 3, 6) })],
        reconstrConfig: { reconstruction_type: 'svd', r_squared: true, svd: { rank: 4 } },
      },
      /svd\.rank 4/,
    );
    await bad('full-shape', { config: { r: 3, lora_alpha: 3 }, modules: [], full: { 'lm_head.weight': { shape: [V + 2, H], data: new Float32Array((V + 2) * H) } } }, /resized vocabulary/);

    const ok = join(tmp, 'bad-ok');
    await writePeftFixture(ok, { config: { r: 3, lora_alpha: 3 }, modules: [linearFx(Q, H, H, 77)] });
    await assert.rejects(applyAdapters({ base: baseDir, adapters: [{ dir: ok }], out: baseDir }), /never overwrites an input/);
    const busy = join(tmp, 'busy');
    await mkdir(busy);
    await writeFile(join(busy, 'x'), 'x');
    await assert.rejects(applyAdapters({ base: baseDir, adapters: [{ dir: ok }], out: busy }), /not empty/);
  });

  it('parses DIR[:weight]', () => {
    assert.deepEqual(parseAdapterSpec('a/b'), { dir: 'a/b' });
    assert.deepEqual(parseAdapterSpec('a/b:0.5'), { dir: 'a/b', weight: 0.5 });
    assert.deepEqual(parseAdapterSpec('C:/x:-1e-1'), { dir: 'C:/x', weight: -0.1 });
    assert.deepEqual(parseAdapterSpec('dir:name'), { dir: 'dir:name' });
  });
});
