/**
 * apply on adapters with MoE expert stacks (PEFT target_parameters): models A and B differ by
 * planted per-expert deltas; extract writes the adapter A → B, and apply must turn A back into B,
 * in both expert layouts, leaving every tensor the adapter does not touch bit for bit.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { access, cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { applyAdapters } from '../../src/apply/apply.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import type { ExpertLayout } from '../../src/lora/adapter.js';
import { roundTo } from '../../src/tensor/dtype.js';
import { runCli } from '../helpers/cli.js';
import { relDiff } from '../helpers/extract.js';
import { DOWN, extractedMoeAdapters, GATE_UP, MOE, MOE_LAYOUTS, Q, type MoePair } from '../helpers/lora-experts.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

const { experts: E, hidden: H, intermediate: I } = MOE;
const GATE_UP_WRAPPER = 'model.layers.0.mlp.experts.base_layer';
const DOWN_WRAPPER = 'model.layers.0.mlp.experts';

type Tensors = Map<string, { shape: number[]; data: Float32Array }>;

async function readAll(dir: string): Promise<Tensors> {
  const ckpt = await openCheckpoint(dir);
  try {
    const out: Tensors = new Map();
    for (const t of ckpt.list()) out.set(t.name, { shape: t.shape, data: await ckpt.read(t.name) });
    return out;
  } finally {
    await ckpt.close();
  }
}

function maxAbsDiff(x: Float32Array, y: Float32Array): number {
  assert.equal(x.length, y.length);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

/** a + w·(b − a), elementwise in f64 */
function lerp(a: Float32Array, b: Float32Array, w: number): Float32Array {
  return Float32Array.from(a, (v, i) => v + w * (b[i] - v));
}

/**
 * Extraction with energy 0.9999 recovers the planted ranks (≤ 4) exactly up to f32 SVD error, so
 * the merged f32 tensor matches B to f32 rounding (measured: at most 2e-8; an f32 step at 0.3 is 3e-8).
 */
const F32_TOLERANCE = 5e-7;

let root: string;
let pairs: Record<ExpertLayout, MoePair>;
let adapters: Record<ExpertLayout, string>;

before(async () => {
  root = await makeTempDir('loraforge-apply-experts-');
  ({ pairs, adapters } = await extractedMoeAdapters(root));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('apply: LoRA on MoE expert stacks (target_parameters)', () => {
  for (const [layout] of MOE_LAYOUTS) {
    it(`${layout}: merging the extracted adapter into A gives B; untouched tensors stay bit-identical`, async () => {
      const pair = pairs[layout];
      const out = join(root, layout, 'merged');
      const report = await applyAdapters({ base: pair.a, adapters: [{ dir: adapters[layout] }], out });

      const [a, b, merged] = await Promise.all([readAll(pair.a), readAll(pair.b), readAll(out)]);
      assert.deepEqual([...merged.keys()].sort(), [...a.keys()].sort());
      for (const [name, t] of merged) {
        assert.deepEqual(t.shape, a.get(name)!.shape, name);
        if (name === GATE_UP || name === DOWN || name === Q) {
          const diff = maxAbsDiff(t.data, b.get(name)!.data);
          assert.ok(diff < F32_TOLERANCE, `${name}: |merged − B| = ${diff}`);
          assert.ok(maxAbsDiff(t.data, a.get(name)!.data) > 0.01, `${name} did change`);
        } else {
          assert.deepEqual(t.data, a.get(name)!.data, `${name} is A's, bit for bit`);
        }
      }
      // the planted Δ as the checkpoint stores it is what apply added
      for (const name of [GATE_UP, DOWN]) {
        const added = Float32Array.from(merged.get(name)!.data, (v, i) => v - a.get(name)!.data[i]);
        assert.ok(relDiff(added, pair.stacked[name].data) < 1e-4, `${name}: ${relDiff(added, pair.stacked[name].data)}`);
      }

      const stacks = report.updates.filter((u) => u.experts).sort((x, y) => x.tensor.localeCompare(y.tensor));
      assert.deepEqual(
        stacks.map((u) => ({ tensor: u.tensor, source: u.source, method: u.method, rank: u.rank, weight: u.weight, experts: u.experts })),
        [
          { tensor: DOWN, source: DOWN_WRAPPER, method: 'lora', rank: 2, weight: 1, experts: { count: E, layout } },
          { tensor: GATE_UP, source: GATE_UP_WRAPPER, method: 'lora', rank: 4, weight: 1, experts: { count: E, layout } },
        ],
      );
      assert.equal(report.changedTensors, 3);
      assert.equal(report.adapters[0].variant, 'lora');
    });
  }

  it('several adapters with weights: 0.25 and 0.75 of the same adapter give B; 0.5 alone gives A + ½(B − A)', async () => {
    const pair = pairs['in-out'];
    const dir = adapters['in-out'];
    const both = join(root, 'weights-both');
    const half = join(root, 'weights-half');
    await applyAdapters({ base: pair.a, adapters: [{ dir, weight: 0.25 }, { dir, weight: 0.75 }], out: both });
    const report = await applyAdapters({ base: pair.a, adapters: [{ dir, weight: 0.5 }], out: half });
    assert.ok(report.updates.filter((u) => u.experts).every((u) => u.weight === 0.5));

    const [a, b, sum, halfway] = await Promise.all([readAll(pair.a), readAll(pair.b), readAll(both), readAll(half)]);
    for (const name of [GATE_UP, DOWN, Q]) {
      const A = a.get(name)!.data;
      const B = b.get(name)!.data;
      assert.ok(maxAbsDiff(sum.get(name)!.data, B) < F32_TOLERANCE, `${name}: 0.25 + 0.75`);
      assert.ok(maxAbsDiff(halfway.get(name)!.data, lerp(A, B, 0.5)) < F32_TOLERANCE, `${name}: 0.5`);
      assert.ok(maxAbsDiff(halfway.get(name)!.data, B) > 0.01, `${name}: half is not all`);
    }
  });

  it('with --dtype bf16 the merged stacks are B rounded to bf16 (within one bf16 step)', async () => {
    const pair = pairs['out-in'];
    const out = join(root, 'bf16');
    await applyAdapters({ base: pair.a, adapters: [{ dir: adapters['out-in'] }], out, dtype: 'BF16' });
    const ckpt = await openCheckpoint(out);
    try {
      assert.equal(ckpt.info(GATE_UP).dtype, 'BF16');
    } finally {
      await ckpt.close();
    }
    const [a, b, merged] = await Promise.all([readAll(pair.a), readAll(pair.b), readAll(out)]);
    for (const name of [GATE_UP, DOWN]) {
      const want = roundTo(b.get(name)!.data, 'BF16');
      const got = merged.get(name)!.data;
      let exact = 0;
      for (let i = 0; i < got.length; i++) {
        // bf16 keeps 8 significant bits: neighbours are 2^(e−7) apart; a tie may round either way
        const step = 2 ** (Math.floor(Math.log2(Math.abs(want[i]) || 1e-30)) - 7);
        assert.ok(Math.abs(got[i] - want[i]) <= step, `${name}[${i}]: ${got[i]} vs ${want[i]}`);
        if (got[i] === want[i]) exact++;
      }
      assert.ok(exact > 0.99 * got.length, `${name}: ${exact} of ${got.length} equal`);
      assert.deepEqual(merged.get('model.embed_tokens.weight')!.data, roundTo(a.get('model.embed_tokens.weight')!.data, 'BF16'));
    }
  });

  it('an expert stack that does not fit the base tensor is refused, naming the file, module and parameter', async () => {
    const pair = pairs['out-in'];
    const a = await readAll(pair.a);
    const tensors = Object.fromEntries(a);
    const config = { model_type: 'qwen3_moe', hidden_size: H, num_local_experts: E };

    const wrongShape = join(root, 'wrong-shape');
    await writeModelFolder(wrongShape, { ...tensors, [GATE_UP]: { shape: [E, H, H], data: new Float32Array(E * H * H) } }, { dtype: 'F32', config });
    const out = join(root, 'wrong-out');
    await assert.rejects(
      applyAdapters({ base: wrongShape, adapters: [{ dir: adapters['out-in'] }], out }),
      new RegExp(
        'adapter_model\\.safetensors: module "model\\.layers\\.0\\.mlp\\.experts\\.base_layer" \\(parameter "model\\.layers\\.0\\.mlp\\.experts\\.gate_up_proj"\\): ' +
          `the base tensor is ${E}×${H}×${H}, .*fits neither ${E}×${2 * I}×${H} nor ${E}×${H}×${2 * I}.*\\(base tensor "model\\.layers\\.0\\.mlp\\.experts\\.gate_up_proj" in .*wrong-shape`,
      ),
    );
    await assert.rejects(access(out), 'no output folder is left behind');

    const missing = join(root, 'missing');
    const { [DOWN]: _dropped, ...withoutDown } = tensors;
    await writeModelFolder(missing, withoutDown, { dtype: 'F32', config });
    await assert.rejects(
      applyAdapters({ base: missing, adapters: [{ dir: adapters['out-in'] }], out }),
      /adapter: module "model\.layers\.0\.mlp\.experts" holds the LoRA of parameter "model\.layers\.0\.mlp\.experts\.down_proj" \(4 experts\), but the base .*missing has no tensor "model\.layers\.0\.mlp\.experts\.down_proj"/,
    );
    await assert.rejects(access(out));
  });

  it('DoRA on expert stacks is refused with a clear error', async () => {
    const dir = join(root, 'dora-experts');
    await cp(adapters['out-in'], dir, { recursive: true });
    const configPath = join(dir, 'adapter_config.json');
    const config = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
    await writeFile(configPath, JSON.stringify({ ...config, use_dora: true }));
    await assert.rejects(
      applyAdapters({ base: pairs['out-in'].a, adapters: [{ dir }], out: join(root, 'dora-out') }),
      /dora-experts: adapter_config\.json has use_dora: true, but module "model\.layers\.0\.mlp\.experts(\.base_layer)?" holds the LoRA of parameter .* DoRA\/EDoRA is not defined on expert stacks/,
    );
  });

  it('the CLI merges expert stacks and says so', async () => {
    const pair = pairs['in-out'];
    const out = join(root, 'cli-out');
    const r = await runCli(['apply', '--base', pair.a, '--adapter', adapters['in-out'], '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`expert stacks: 2 merged \\(${2 * E} experts in all, one LoRA each\\)`));
    const [b, merged] = await Promise.all([readAll(pair.b), readAll(out)]);
    assert.ok(maxAbsDiff(merged.get(GATE_UP)!.data, b.get(GATE_UP)!.data) < F32_TOLERANCE);
  });
});
