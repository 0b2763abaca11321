import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openSafetensors, writeSafetensorsFile } from '../../src/io/safetensors.js';
import { mergeAdapters } from '../../src/merge-adapters/index.js';
import { runCli } from '../helpers/cli.js';
import { tempFolders } from '../helpers/synthetic.js';
import { deltaOf, diffusersModules, sdxlModules, writeLoraFile, type PlantedFactors, type PlantedModule } from '../helpers/lora-file.js';

const folder = tempFolders('lora-file-merge-');

/** Two SDXL kohya files with different ranks on one module, planted factors returned. */
async function twoKohyaFiles(dir: string): Promise<{ paths: string[]; modules: PlantedModule[][]; factors: Array<Map<string, PlantedFactors>> }> {
  const a = sdxlModules();
  const b = sdxlModules().map((m, i) => (i === 0 ? { ...m, rank: 2, alpha: 8 } : m));
  const paths = [join(dir, 'a.safetensors'), join(dir, 'b.safetensors')];
  const factors = [await writeLoraFile(paths[0], 'kohya', a, 11, { metadata: { ss_base_model_version: 'sdxl_base_v1-0' } }), await writeLoraFile(paths[1], 'kohya', b, 12)];
  return { paths, modules: [a, b], factors };
}

/** Every module of the output file: max relative error of (alpha/r)·up·down against Σ w·(alpha/r)·up·down. */
async function maxError(out: string, modules: PlantedModule[][], factors: Array<Map<string, PlantedFactors>>, weights: number[]): Promise<number> {
  const file = await openSafetensors(out);
  let worst = 0;
  try {
    for (const m of modules[0]) {
      const expected = new Float64Array(deltaOf(m, factors[0].get(m.stem)!, 0).length);
      modules.forEach((ms, i) => {
        const mi = ms.find((x) => x.stem === m.stem)!;
        const d = deltaOf(mi, factors[i].get(m.stem)!, (mi.alpha ?? mi.rank) / mi.rank);
        for (let j = 0; j < d.length; j++) expected[j] += weights[i] * d[j];
      });
      const down = file.info(`${m.stem}.lora_down.weight`);
      const up = file.info(`${m.stem}.lora_up.weight`);
      // conv modules stay 4-D: the delta is their flattened out × (in·kh·kw) form
      assert.deepEqual(down.shape.slice(1), m.kernel ? [m.in, ...m.kernel] : [m.in], m.stem);
      assert.deepEqual(up.shape.slice(2), m.kernel ? [1, 1] : [], m.stem);
      const r = down.shape[0];
      const alpha = (await file.read(`${m.stem}.alpha`))[0];
      const got = deltaOf({ ...m, rank: r }, { down: await file.read(down.name), up: await file.read(up.name) }, alpha / r);
      let num = 0;
      let den = 0;
      for (let j = 0; j < got.length; j++) {
        num += (got[j] - expected[j]) ** 2;
        den += expected[j] ** 2;
      }
      worst = Math.max(worst, Math.sqrt(num / den));
    }
  } finally {
    await file.close();
  }
  return worst;
}

test('CLI: svd merge of two kohya SDXL files (conv included) is Σ w·(alpha/r)·up·down, scale applied once, in kohya layout', async () => {
  const dir = await folder('svd');
  const { paths, modules, factors } = await twoKohyaFiles(dir);
  const out = join(dir, 'merged.safetensors');
  const res = await runCli(['merge-adapters', '--adapter', `${paths[0]}:0.7`, '--adapter', `${paths[1]}:-0.4`, '--method', 'svd', '--svd-rank', '8', '--out', out, '--quiet']);
  assert.equal(res.code, 0, res.stderr);
  assert.ok((await maxError(out, modules, factors, [0.7, -0.4])) < 1e-6);
  const file = await openSafetensors(out);
  const keys = file.list().map((t) => t.name);
  const meta = file.metadata;
  await file.close();
  assert.deepEqual(keys.sort(), modules[0].flatMap((m) => [`${m.stem}.alpha`, `${m.stem}.lora_down.weight`, `${m.stem}.lora_up.weight`]).sort());
  assert.equal(meta.ss_network_module, 'networks.lora');
  assert.equal(meta.ss_base_model_version, 'sdxl_base_v1-0');
  assert.ok(meta.ss_network_args && JSON.parse(meta.ss_network_args).conv_dim);
  const report = JSON.parse(await readFile(join(dir, 'merged.report.json'), 'utf8'));
  assert.equal(report.format, 'kohya');
  assert.ok(report.notes.some((n: string) => /once/.test(n)));
});

test('library: cat and linear --exact of kohya files equal the weighted sum; one module only in one file is kept', async () => {
  const dir = await folder('exact');
  const { paths, modules, factors } = await twoKohyaFiles(dir);
  for (const [method, exact] of [['cat', false], ['linear', true]] as const) {
    const out = join(dir, `${method}.safetensors`);
    await mergeAdapters({ adapters: [{ path: paths[0], weight: 0.5 }, { path: paths[1], weight: 1.5 }], method, exact, out });
    assert.ok((await maxError(out, modules, factors, [0.5, 1.5])) < 1e-6, method);
  }
  const extra = join(dir, 'extra.safetensors');
  const only: PlantedModule = { stem: 'lora_unet_output_blocks_0_1_proj_out', out: 4, in: 4, rank: 2, alpha: 1 };
  await writeLoraFile(extra, 'kohya', [only], 13);
  const out = join(dir, 'union.safetensors');
  const report = await mergeAdapters({ adapters: [{ path: paths[0], weight: 1 }, { path: extra, weight: 1 }], method: 'cat', out });
  assert.deepEqual(report.modules.find((m) => m.name === only.stem)!.inputRanks, [null, 2]);
});

test('CLI: a NaN in a kohya file exits 1 naming the file and tensor; mixed layouts and a folder output are usage errors (2)', async () => {
  const dir = await folder('bad');
  const good = join(dir, 'good.safetensors');
  await writeLoraFile(good, 'kohya', sdxlModules().slice(0, 1), 1);
  const nan = join(dir, 'nan.safetensors');
  const stem = sdxlModules()[0].stem;
  const down = new Float32Array(4 * 12);
  down[5] = NaN;
  await writeSafetensorsFile(nan, [
    { name: `${stem}.lora_down.weight`, shape: [4, 12], data: down, dtype: 'F32' },
    { name: `${stem}.lora_up.weight`, shape: [12, 4], data: new Float32Array(48), dtype: 'F32' },
  ]);
  const res = await runCli(['merge-adapters', '--adapter', good, '--adapter', nan, '--method', 'cat', '--out', join(dir, 'o.safetensors')]);
  assert.equal(res.code, 1, res.stderr);
  assert.match(res.stderr, /nan\.safetensors/);
  assert.match(res.stderr, /lora_down\.weight/);
  assert.doesNotMatch(res.stderr, /\n\s+at /);

  const diff = join(dir, 'diffusers.safetensors');
  await writeLoraFile(diff, 'diffusers', diffusersModules(), 2);
  const mixed = await runCli(['merge-adapters', '--adapter', good, '--adapter', diff, '--method', 'cat', '--out', join(dir, 'm.safetensors')]);
  assert.equal(mixed.code, 2, mixed.stderr);
  assert.match(mixed.stderr, /kohya LoRA file but .*diffusers/);
  const folderOut = await runCli(['merge-adapters', '--adapter', good, '--method', 'cat', '--out', join(dir, 'outdir')]);
  assert.equal(folderOut.code, 2, folderOut.stderr);
  assert.match(folderOut.stderr, /\.safetensors/);
});

test('--out-format: two diffusers files merge into kohya keys (mechanical rule) or a PEFT folder; kohya inputs to diffusers and mixed components to peft are refused', async () => {
  const dir = await folder('out-format');
  const modules = diffusersModules();
  const paths = [join(dir, 'a.safetensors'), join(dir, 'b.safetensors')];
  await writeLoraFile(paths[0], 'diffusers', modules, 21);
  await writeLoraFile(paths[1], 'diffusers', modules, 22);
  const adapters = paths.map((path) => ({ path, weight: 0.5 }));
  const kohyaOut = join(dir, 'merged.safetensors');
  const report = await mergeAdapters({ adapters, method: 'linear', exact: true, out: kohyaOut, outFormat: 'kohya' });
  assert.equal(report.format, 'kohya');
  const file = await openSafetensors(kohyaOut);
  const keys = file.list().map((t) => t.name);
  await file.close();
  // kohya's names derived here from the module paths, not by the writer: prefix + path with "." → "_"
  const stems = modules.map((m) => (m.stem.startsWith('unet.') ? 'lora_unet_' : 'lora_te_') + m.stem.slice(m.stem.indexOf('.') + 1).replaceAll('.', '_'));
  assert.deepEqual(keys.sort(), stems.flatMap((s) => [`${s}.alpha`, `${s}.lora_down.weight`, `${s}.lora_up.weight`]).sort());

  const unet = modules.filter((m) => m.stem.startsWith('unet.'));
  const unetPaths = [join(dir, 'ua.safetensors'), join(dir, 'ub.safetensors')];
  await writeLoraFile(unetPaths[0], 'diffusers', unet, 23);
  await writeLoraFile(unetPaths[1], 'diffusers', unet, 24);
  const peftOut = join(dir, 'peft');
  const res = await runCli(['merge-adapters', '--adapter', unetPaths[0], '--adapter', unetPaths[1], '--method', 'cat', '--out-format', 'peft', '--out', peftOut, '--quiet']);
  assert.equal(res.code, 0, res.stderr);
  const config = JSON.parse(await readFile(join(peftOut, 'adapter_config.json'), 'utf8'));
  assert.deepEqual(config.target_modules, unet.map((m) => m.stem.slice('unet.'.length)).sort());
  assert.ok(JSON.parse(await readFile(join(peftOut, 'report.json'), 'utf8')).format === 'peft');

  const mixed = await runCli(['merge-adapters', '--adapter', paths[0], '--adapter', paths[1], '--method', 'cat', '--out-format', 'peft', '--out', join(dir, 'p2')]);
  assert.equal(mixed.code, 2, mixed.stderr);
  assert.match(mixed.stderr, /a PEFT adapter wraps one model/);
  const { paths: kohyaPaths } = await twoKohyaFiles(await folder('out-format-kohya'));
  await assert.rejects(
    mergeAdapters({ adapters: kohyaPaths.map((path) => ({ path, weight: 1 })), method: 'svd', out: join(dir, 'd.safetensors'), outFormat: 'diffusers' }),
    /no exact diffusers spelling/,
  );
});
