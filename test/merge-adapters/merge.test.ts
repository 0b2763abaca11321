/**
 * merge-adapters end to end: adapter folders in, adapter folder + report out, through the library
 * and the CLI.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { openGguf } from '../../src/io/gguf.js';
import { join } from 'node:path';
import { openPeftAdapter, readPeftAdapter, PeftAdapterWriter, type LoraModule } from '../../src/lora/adapter.js';
import { createRng } from '../../src/linalg/random.js';
import { mergeAdapters, type MergeReport } from '../../src/merge-adapters/index.js';
import type { MethodName } from '../../src/merge-adapters/methods.js';
import { matrix, type Matrix } from '../../src/tensor/matrix.js';
import { Command, CommanderError } from 'commander';
import { registerMergeAdapters } from '../../src/cli/merge-adapters.js';
import { UsageError } from '../../src/cli/errors.js';
import { runCli } from '../helpers/cli.js';
import { extractLora } from '../../src/extract/index.js';
import { writeMoePair } from '../helpers/lora-experts.js';
import { makeTempDir } from '../helpers/synthetic.js';
import {
  loadPeftMergeFixture,
  product,
  relMaxDiff,
  replayMasks,
  writeFixtureAdapters,
  type FixtureCase,
  type PeftMergeFixture,
} from '../helpers/merge-adapters.js';

function gaussian(rows: number, cols: number, seed: number): Matrix {
  const m = matrix(rows, cols);
  createRng(seed).fillNormal(m.data);
  return m;
}

async function writeAdapter(dir: string, modules: LoraModule[], opts: { useRslora?: boolean; full?: Record<string, Float32Array> } = {}): Promise<string> {
  const w = await PeftAdapterWriter.create(dir, { useRslora: opts.useRslora });
  for (const m of modules) await w.addModule(m);
  for (const [name, data] of Object.entries(opts.full ?? {})) await w.addFull(name, [data.length], data);
  await w.finish();
  return dir;
}

/** Σ w_i·s_i·B_i·A_i of loaded modules, in the base weight's orientation. */
function weightedSum(parts: Array<{ m: LoraModule; weight: number; scaling: number }>): Matrix {
  const out = matrix(parts[0].m.B.rows, parts[0].m.A.cols);
  for (const { m, weight, scaling } of parts) product(m.B, m.A, weight * scaling).data.forEach((x, i) => (out.data[i] += x));
  return out;
}

/** The error a merge-adapters command line is refused with, parsed in this process (no spawn). */
async function cliError(args: string[]): Promise<Error> {
  const program = new Command('loraforge').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerMergeAdapters(program);
  try {
    await program.parseAsync(['merge-adapters', ...args], { from: 'user' });
  } catch (err) {
    return err as Error;
  }
  throw new Error(`accepted: ${args.join(' ')}`);
}

describe('mergeAdapters on PEFT folders made from the fixtures', () => {
  let dir: string;
  let fx: PeftMergeFixture;
  const inputs: Record<string, string[]> = {};
  before(async () => {
    dir = await makeTempDir('lf-merge-');
    fx = await loadPeftMergeFixture();
    inputs.eq = await writeFixtureAdapters(fx, 'eq', dir, ['a0', 'a1', 'a2']);
    inputs.mixed = await writeFixtureAdapters(fx, 'mixed', dir, ['a0', 'a1', 'a2']);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const caseNames = [
    'eq_cat',
    'mixed_cat',
    'eq_linear',
    'eq_ties_total',
    'eq_magnitude_prune',
    'eq_dare_ties_total',
    'eq_svd',
    'mixed_svd_rank3',
    'mixed_ties_svd_frequency',
    'eq_dare_linear_svd',
    'eq_single_a2_svd',
  ];
  for (const name of caseNames) {
    it(`${name}: the written adapter reads back as PEFT's result`, async () => {
      const c = fx.cases.find((x) => x.name === name) as FixtureCase;
      const paths = c.adapters.map((a) => inputs[c.input_set][['a0', 'a1', 'a2'].indexOf(a)]);
      const out = join(dir, `out-${name}`);
      const report = await mergeAdapters({
        adapters: paths.map((path, i) => ({ path, weight: c.weights[i] })),
        method: c.combination_type as MethodName,
        out,
        density: c.density ?? undefined,
        majoritySign: c.majority_sign_method ?? undefined,
        svdRank: c.svd_rank ?? undefined,
        masks: c.random ? replayMasks(fx, c) : undefined,
      });
      assert.equal(report.resolvedMethod, c.resolved_combination_type);
      const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
      assert.deepEqual([config.r, config.lora_alpha, config.use_rslora], [c.result.r, c.result.lora_alpha, false]);
      const adapter = await openPeftAdapter(out);
      try {
        for (const [module, info] of Object.entries(c.modules)) {
          assert.equal(adapter.module(module).scaling, 1);
          const got = await adapter.load(module);
          const wantDelta = fx.tensor(info.tensors.delta);
          if (c.resolved_combination_type.endsWith('svd')) {
            assert.ok(relMaxDiff(product(got.B, got.A).data, wantDelta.data) <= 1e-4, `${name}/${module}: B·A`);
          } else {
            assert.ok(relMaxDiff(got.A.data, fx.tensor(info.tensors.lora_A).data) <= 1e-5, `${name}/${module}: lora_A`);
            assert.ok(relMaxDiff(got.B.data, fx.tensor(info.tensors.lora_B).data) <= 1e-5, `${name}/${module}: lora_B`);
          }
          const row = report.modules.find((m) => m.name === module)!;
          assert.equal(row.outputRank, c.result.r);
          assert.deepEqual(row.inputRanks, c.adapters.map((a) => fx.inputs[c.input_set].adapters.find((x) => x.name === a)!.r));
          assert.ok(Math.abs(row.relError! - info.rel_err_vs_weighted_sum) <= 1e-4 * Math.max(info.rel_err_vs_weighted_sum, 0.1), `${name}/${module}: relError`);
        }
      } finally {
        await adapter.close();
      }
      const saved = JSON.parse(await readFile(join(out, 'report.json'), 'utf8')) as MergeReport;
      assert.equal(saved.modules.length, 2);
      assert.equal(saved.method, c.combination_type);
    });
  }

  it('a single adapter with weight w gives w·Δ at its own rank, whatever the method (PEFT)', async () => {
    const out = join(dir, 'single');
    const report = await mergeAdapters({ adapters: [{ path: inputs.mixed[1], weight: -0.5 }], method: 'ties_svd', out });
    assert.equal(report.resolvedMethod, 'linear');
    assert.match(report.notes.join('\n'), /one adapter/);
    const { modules } = await readPeftAdapter(out);
    const s = fx.inputs.mixed.adapters[1].scaling;
    for (const m of modules) {
      assert.equal(m.A.rows, 6);
      const want = product(fx.tensor(`mixed/${m.name}/a1/lora_B`), fx.tensor(`mixed/${m.name}/a1/lora_A`), -0.5 * s);
      assert.ok(relMaxDiff(product(m.B, m.A).data, want.data) < 1e-5);
      assert.ok(report.modules.find((r) => r.name === m.name)!.relError! < 1e-6);
    }
  });

  it('linear on mixed ranks fails before writing anything, naming the module, the ranks and the way out', async () => {
    const out = join(dir, 'mixed-linear');
    await assert.rejects(
      mergeAdapters({ adapters: inputs.mixed.map((path, i) => ({ path, weight: [0.7, 0.3, -0.5][i] })), method: 'linear', out }),
      /module "lin1": method linear .* same rank .*r=4.*r=6.*r=2.*--exact/,
    );
    await assert.rejects(readdir(out), { code: 'ENOENT' });
    const parent = await readdir(dir);
    assert.ok(!parent.some((n) => n.includes('mixed-linear')), `left behind: ${parent}`);
  });

  it('the CLI merges with --json, and refuses bad flags with exit code 2', async () => {
    const out = join(dir, 'cli-cat');
    const args = ['merge-adapters', ...inputs.mixed.flatMap((p, i) => ['--adapter', `${p}:${[0.7, 0.3, -0.5][i]}`])];
    const ok = await runCli([...args, '--method', 'cat', '--out', out, '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    const report = JSON.parse(ok.stdout) as MergeReport;
    assert.deepEqual(report.adapters.map((a) => a.weight), [0.7, 0.3, -0.5]);
    assert.deepEqual(report.modules.map((m) => m.outputRank), [12, 12]);
    assert.ok(report.maxRelError! < 1e-5);
    const human = await runCli([...args, '--method', 'linear', '--exact', '--svd-rank', '5', '--out', join(dir, 'cli-lin')]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /lin1\s+1\s+4,6,2\s+5\s/);
    // an --svd-rank above the true rank of the sum (4 + 6 + 2) is said, in the terminal and in report.json
    const above = await runCli([...args, '--method', 'linear', '--exact', '--svd-rank', '32', '--out', join(dir, 'cli-lin32')]);
    assert.equal(above.code, 0, above.stderr);
    const note = /--svd-rank 32: 2 of 2 module\(s\) written at rank 12, the true rank of the merged update/;
    assert.match(above.stdout, new RegExp(`note: ${note.source}`));
    assert.ok((JSON.parse(await readFile(join(dir, 'cli-lin32', 'report.json'), 'utf8')) as MergeReport).notes.some((n) => note.test(n)));

    const bad: Array<[string[], RegExp]> = [
      [['--method', 'linear', '--density', '0.3'], /--density has no effect with method linear/],
      [['--method', 'linear', '--svd-rank', '3'], /--svd-rank has no effect with method linear \(it applies with --exact\)/],
      [['--method', 'ties', '--density', '1.5'], /--density must be a number in \[0, 1\]/],
      [['--method', 'nope'], /nope/],
      [['--method', 'cat', '--out', out], /not empty.*--force/],
      [['--method', 'cat', '--format', 'gguf'], /--base-config/],
    ];
    for (const [extra, message] of bad) {
      const err = await cliError([...args.slice(1), '--out', join(dir, 'never'), ...extra]);
      assert.ok(err instanceof UsageError || err instanceof CommanderError, `${extra.join(' ')}: ${err}`);
      assert.match(err.message, message);
    }
    const failed = await runCli([...args, '--method', 'ties', '--out', join(dir, 'never')]);
    assert.equal(failed.code, 1);
    assert.match(failed.stderr, /same rank/);
    const help = await runCli(['merge-adapters', '--help']);
    assert.match(help.stdout, /cross terms/);
    assert.match(help.stdout, /Examples:/);
  });
});

describe('mergeAdapters: module sets, orientations and refusals', () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir('lf-merge-edge-');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('merges a module present in only some adapters over those, and leaves out one that cancels', async () => {
    const q = { name: 'model.layers.0.q_proj', kind: 'linear' as const, A: gaussian(4, 20, 1), B: gaussian(24, 4, 2), alpha: 8 };
    const v = { name: 'model.layers.0.v_proj', kind: 'linear' as const, A: gaussian(2, 20, 3), B: gaussian(24, 2, 4), alpha: 2 };
    const p = await writeAdapter(join(dir, 'p'), [q, v]);
    const r = await writeAdapter(join(dir, 'r'), [q]);
    const out = join(dir, 'partial');
    const report = await mergeAdapters({ adapters: [{ path: p, weight: 1 }, { path: r, weight: -1 }], method: 'svd', exact: true, out });
    const [rq, rv] = report.modules;
    assert.deepEqual([rq.name, rq.outputRank, rq.relError, rq.inputRanks], [q.name, 0, null, [4, 4]]);
    assert.match(rq.omitted!, /zero/);
    assert.deepEqual([rv.outputRank, rv.inputRanks], [2, [2, null]]);
    assert.ok(rv.relError! < 1e-6);
    const merged = await readPeftAdapter(out);
    assert.deepEqual(merged.modules.map((m) => m.name), [v.name]);
    const want = product(v.B, v.A, 1); // alpha = r: scaling 1
    assert.ok(relMaxDiff(product(merged.modules[0].B, merged.modules[0].A).data, want.data) < 1e-5);

    await assert.rejects(
      mergeAdapters({ adapters: [{ path: r, weight: 1 }, { path: r, weight: -1 }], method: 'svd', out: join(dir, 'zero') }),
      /zero in every module/,
    );
  });

  it('reads rsLoRA and alpha_pattern scalings and keeps embeddings in PEFT\'s orientation (cat)', async () => {
    // embedding weight is vocab 30 × hidden 12: B is 30 × r, A is r × 12 in weight orientation
    const e1 = { name: 'model.embed_tokens', kind: 'embedding' as const, A: gaussian(4, 12, 5), B: gaussian(30, 4, 6), alpha: 8 };
    const o1 = { name: 'model.layers.0.o_proj', kind: 'linear' as const, A: gaussian(4, 16, 7), B: gaussian(16, 4, 8), alpha: 3 };
    const e2 = { name: 'model.embed_tokens', kind: 'embedding' as const, A: gaussian(2, 12, 9), B: gaussian(30, 2, 10), alpha: 2 };
    const a1 = await writeAdapter(join(dir, 'rs1'), [e1, o1], { useRslora: true }); // alpha_pattern for o_proj
    const a2 = await writeAdapter(join(dir, 'plain2'), [e2]);
    const out = join(dir, 'emb-cat');
    await mergeAdapters({ adapters: [{ path: a1, weight: 0.5 }, { path: a2, weight: 2 }], method: 'cat', out });
    const merged = await readPeftAdapter(out);
    const emb = merged.modules.find((m) => m.name === e1.name)!;
    const s1 = 8 / Math.sqrt(4);
    const s2 = 2 / 2;
    const want = weightedSum([{ m: e1, weight: 0.5, scaling: s1 }, { m: e2, weight: 2, scaling: s2 }]);
    assert.equal(emb.kind, 'embedding');
    assert.ok(relMaxDiff(product(emb.B, emb.A).data, want.data) < 1e-6);
    // PEFT puts w·s on lora_embedding_A, which is B in the weight's orientation; A stacks unchanged
    assert.deepEqual(Array.from(emb.B.data.subarray(0, 4)), Array.from(e1.B.data.subarray(0, 4), (x) => Math.fround(Math.fround(x * 0.5) * s1)));
    assert.deepEqual(emb.A.data.subarray(0, 12), e1.A.data.subarray(0, 12));
    const o = merged.modules.find((m) => m.name === o1.name)!;
    assert.ok(relMaxDiff(product(o.B, o.A).data, product(o1.B, o1.A, 0.5 * (3 / Math.sqrt(4))).data) < 1e-6);
  });

  it('refuses MoE expert stacks (target_parameters) with a way out, before writing anything', async () => {
    const pair = await writeMoePair(join(dir, 'moe'), 'out-in', 'qwen3_moe');
    const moe = join(dir, 'moe', 'adapter');
    await extractLora({ modelA: pair.a, modelB: pair.b, out: moe, policy: { mode: 'rank', rank: 2 } });
    const out = join(dir, 'moe-merged');
    await assert.rejects(
      mergeAdapters({ adapters: [{ path: moe, weight: 1 }, { path: moe, weight: 0.5 }], method: 'linear', out }),
      /"model\.layers\.0\.mlp\.experts\.(gate_up|down)_proj" is an MoE expert stack .*4 experts.*`loraforge apply`/,
    );
    await assert.rejects(readdir(out), { code: 'ENOENT' });
  });

  it('refuses DoRA adapters, shape mismatches and a modules_to_save tensor in two adapters; carries it from one', async () => {
    const base = { name: 'model.layers.0.q_proj', kind: 'linear' as const, A: gaussian(2, 8, 11), B: gaussian(10, 2, 12), alpha: 2 };
    const dora = await writeAdapter(join(dir, 'dora'), [{ ...base, magnitude: new Float32Array(10).fill(1) }]);
    const plain = await writeAdapter(join(dir, 'plain'), [base]);
    const wide = await writeAdapter(join(dir, 'wide'), [{ ...base, A: gaussian(2, 9, 13) }]);
    const head = new Float32Array([1, 2, 3]);
    const withHead = await writeAdapter(join(dir, 'head1'), [base], { full: { 'lm_head.weight': head } });
    const withHead2 = await writeAdapter(join(dir, 'head2'), [base], { full: { 'lm_head.weight': head } });
    const two = (x: string, y: string) => [{ path: x, weight: 1 }, { path: y, weight: 1 }];
    await assert.rejects(mergeAdapters({ adapters: two(plain, dora), method: 'cat', out: join(dir, 'x1') }), /DoRA adapters cannot be merged yet; convert them to LoRA first with `loraforge convert`/);
    await assert.rejects(mergeAdapters({ adapters: two(plain, wide), method: 'cat', out: join(dir, 'x2') }), /linear 10×8 in .*plain but linear 10×9 in .*wide/);
    await assert.rejects(mergeAdapters({ adapters: two(withHead, withHead2), method: 'cat', out: join(dir, 'x3') }), /lm_head\.weight.*modules_to_save.*remove it from all but one/);
    await assert.rejects(mergeAdapters({ adapters: two(plain, plain), method: 'cat', out: plain }), /never overwrites an input/);
    const out = join(dir, 'carried');
    const report = await mergeAdapters({ adapters: two(plain, withHead), method: 'cat', out });
    assert.deepEqual(report.carriedTensors, ['lm_head.weight']);
    const adapter = await openPeftAdapter(out);
    assert.deepEqual(await adapter.readFull('lm_head.weight'), head);
    await adapter.close();
  });

  it('writes PEFT and GGUF side by side with --format both (the CLI reads --base-config)', async () => {
    const o1 = { name: 'model.layers.0.self_attn.o_proj', kind: 'linear' as const, A: gaussian(2, 16, 31), B: gaussian(16, 2, 32), alpha: 4 };
    const o2 = { name: 'model.layers.0.self_attn.o_proj', kind: 'linear' as const, A: gaussian(3, 16, 33), B: gaussian(16, 3, 34), alpha: 3 };
    const a = await writeAdapter(join(dir, 'g1'), [o1]);
    const b = await writeAdapter(join(dir, 'g2'), [o2]);
    const config = join(dir, 'config.json');
    const llama = { architectures: ['LlamaForCausalLM'], num_attention_heads: 4, num_key_value_heads: 2, hidden_size: 16, tie_word_embeddings: false };
    await writeFile(config, JSON.stringify(llama));
    const out = join(dir, 'both');
    const r = await runCli(['merge-adapters', '--adapter', a, '--adapter', `${b}:-1`, '--method', 'cat', '--format', 'both', '--base-config', config, '--out', out, '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    const peft = (await readPeftAdapter(out)).modules[0];
    const file = await openGguf(join(out, 'adapter.gguf'));
    try {
      const loraA = matrix(5, 16, await file.read('blk.0.attn_output.weight.lora_a'));
      const loraB = matrix(16, 5, await file.read('blk.0.attn_output.weight.lora_b'));
      const want = weightedSum([{ m: o1, weight: 1, scaling: 2 }, { m: o2, weight: -1, scaling: 1 }]);
      assert.ok(relMaxDiff(product(loraB, loraA).data, want.data) < 1e-6);
      assert.ok(relMaxDiff(product(peft.B, peft.A).data, want.data) < 1e-6);
    } finally {
      await file.close();
    }
  });

  it('writes a fresh RNG path for DARE that is reproducible with --seed', async () => {
    const q = { name: 'model.layers.0.q_proj', kind: 'linear' as const, A: gaussian(4, 20, 21), B: gaussian(24, 4, 22), alpha: 4 };
    const k = { name: 'model.layers.0.q_proj', kind: 'linear' as const, A: gaussian(4, 20, 23), B: gaussian(24, 4, 24), alpha: 4 };
    const a = await writeAdapter(join(dir, 'da'), [q]);
    const b = await writeAdapter(join(dir, 'db'), [k]);
    const run = async (name: string, seed: number) => {
      const out = join(dir, name);
      await mergeAdapters({ adapters: [{ path: a, weight: 1 }, { path: b, weight: 1 }], method: 'dare_linear', density: 0.5, seed, out });
      return (await readPeftAdapter(out)).modules[0];
    };
    const [x, y, z] = [await run('s1', 5), await run('s1b', 5), await run('s2', 6)];
    assert.deepEqual(x.A.data, y.A.data);
    assert.notDeepEqual(x.A.data, z.A.data);
    // entries of A' are 0 (dropped in both), one rescaled survivor, or the sum of two: ~25% zeros
    const zeros = x.A.data.filter((v) => v === 0).length / x.A.data.length;
    assert.ok(zeros > 0.1 && zeros < 0.45, `zeros ${zeros}`);
    const survivor = x.A.data.findIndex((v, i) => v !== 0 && (v === 2 * Math.fround(q.A.data[i]) || v === 2 * Math.fround(k.A.data[i])));
    assert.ok(survivor >= 0, 'a kept entry should be rescaled by 1/density');
  });
});
