import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLora } from '../../src/extract/index.js';
import { inspectPath } from '../../src/inspect/inspect.js';
import { openSafetensors, writeSafetensorsFile } from '../../src/io/safetensors.js';
import { getBackend } from '../../src/linalg/index.js';
import { createRng } from '../../src/linalg/random.js';
import { expertDeltaTensor, openPeftAdapter, PeftAdapterWriter, readPeftAdapter, type ExpertLayout } from '../../src/lora/adapter.js';
import { matrix } from '../../src/tensor/matrix.js';
import { runCli } from '../helpers/cli.js';
import { product, relDiff } from '../helpers/extract.js';
import { DOWN, extractedMoeAdapters, GATE_UP, MOE, Q, sumSquares, writeMoePair, type MoePair } from '../helpers/lora-experts.js';
import { makeTempDir } from '../helpers/synthetic.js';

const { experts: E, hidden: H, intermediate: I } = MOE;
const PREFIX = 'base_model.model.';

let root: string;
let pairs: Record<ExpertLayout, MoePair>;
let adapters: Record<ExpertLayout, string>;

before(async () => {
  root = await makeTempDir('loraforge-adapter-experts-');
  ({ pairs, adapters } = await extractedMoeAdapters(root));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** What our extract writes for the planted pair: wrapper path, per-expert rank and (out, in) of each expert. */
const EXPECTED = [
  { name: 'model.layers.0.mlp.experts', parameter: DOWN, rank: 2, out: H, in: I },
  { name: 'model.layers.0.mlp.experts.base_layer', parameter: GATE_UP, rank: 4, out: 2 * I, in: H },
];

describe('openPeftAdapter: extracted MoE adapters (target_parameters) read back', () => {
  for (const layout of ['out-in', 'in-out'] as const) {
    it(`${layout}: each expert's ΔW = scaling·B_e·A_e is the planted delta, and the 3-D Δ lands in the base layout`, async () => {
      const pair = pairs[layout];
      const backend = await getBackend({ prefer: 'ref' });
      const adapter = await openPeftAdapter(adapters[layout]);
      try {
        const experts = adapter.modules.filter((m) => m.experts).sort((x, y) => x.name.localeCompare(y.name));
        assert.deepEqual(
          experts.map((m) => ({ name: m.name, parameter: m.experts!.parameter, rank: m.experts!.rank, out: m.outFeatures, in: m.inFeatures })),
          EXPECTED,
        );
        for (const m of experts) {
          assert.equal(m.experts!.count, E);
          assert.equal(m.rank, m.experts!.rank * E, 'rank is the stored width r·E');
          assert.equal(m.scaling, 1, 'extract sets alpha = r per parameter');
        }

        for (const { name, parameter, rank, out, in: inF } of EXPECTED) {
          const truth = pair.deltas[parameter as typeof GATE_UP];
          const mod = await adapter.loadExperts(name);
          assert.equal(mod.parameter, parameter);
          assert.equal(mod.experts.length, E);
          mod.experts.forEach((x, e) => {
            assert.equal(x.name, `${parameter}[${e}]`);
            assert.deepEqual([x.A.rows, x.A.cols, x.B.rows, x.B.cols], [rank, inF, out, rank]);
            const delta = product(x.B.data, x.A.data, out, rank, inF, mod.scaling);
            if (sumSquares(truth[e]) === 0) assert.ok(sumSquares(delta) < 1e-12, `${parameter}[${e}] did not change`);
            else assert.ok(relDiff(delta, truth[e]) < 1e-4, `${parameter}[${e}]: ${relDiff(delta, truth[e])}`);
          });

          // the base tensor's shape tells the layout; the whole Δ then matches B − A as stored
          const base = pair.stacked[parameter];
          assert.equal(adapter.expertLayout(name, base.shape), layout);
          const full = await expertDeltaTensor(backend, mod, layout);
          assert.ok(relDiff(full, base.data) < 1e-4, `${parameter} as [${base.shape}]: ${relDiff(full, base.data)}`);

          await assert.rejects(adapter.load(name), new RegExp(`adapter_model\\.safetensors: module "${name.replaceAll('.', '\\.')}" holds the LoRA of parameter "${parameter}" \\(4 experts.*loadExperts`));
        }

        // the stacked factors are the file's tensors, untouched
        const stack = await adapter.loadExpertStack('model.layers.0.mlp.experts');
        const file = await openSafetensors(join(adapters[layout], 'adapter_model.safetensors'));
        try {
          assert.deepEqual(stack.A.data, await file.read(`${PREFIX}model.layers.0.mlp.experts.lora_A.weight`));
          assert.deepEqual(stack.B.data, await file.read(`${PREFIX}model.layers.0.mlp.experts.lora_B.weight`));
          assert.deepEqual([stack.A.rows, stack.B.cols, stack.count, stack.rank], [2 * E, 2 * E, E, 2]);
        } finally {
          await file.close();
        }

        // plain LoRA beside them reads as before
        const q = adapter.modules.find((m) => m.name === 'model.layers.0.self_attn.q_proj')!;
        assert.equal(q.experts, undefined);
        const qm = await adapter.load(q.name);
        assert.ok(relDiff(product(qm.B.data, qm.A.data, H, q.rank, H, q.scaling), pair.deltas[Q]) < 1e-4);
      } finally {
        await adapter.close();
      }

      const all = await readPeftAdapter(adapters[layout]);
      assert.deepEqual(all.modules.map((m) => m.name), ['model.layers.0.self_attn.q_proj']);
      assert.deepEqual(all.experts.map((m) => m.parameter).sort(), [DOWN, GATE_UP]);
    });
  }

  it('an unchanged sibling parameter stays in target_parameters, so PEFT nests the wrappers as the keys were written', async () => {
    const pair = await writeMoePair(join(root, 'down-unchanged'), 'out-in', 'qwen3_moe', { downUnchanged: true });
    const out = join(root, 'down-unchanged', 'adapter');
    const report = await extractLora({ modelA: pair.a, modelB: pair.b, out, policy: { mode: 'energy', energy: 0.9999, maxRank: 8 } });
    assert.deepEqual(report.skippedIdentical, [DOWN]);
    const adapter = await openPeftAdapter(out);
    try {
      assert.deepEqual(adapter.config.target_parameters, [DOWN, GATE_UP]);
      const stack = adapter.modules.find((m) => m.experts?.parameter === GATE_UP)!;
      assert.equal(stack.name, 'model.layers.0.mlp.experts.base_layer', 'gate_up_proj is the inner wrapper, as planned');
      const experts = await adapter.loadExperts(stack.name);
      for (let e = 0; e < E; e++) {
        const { A, B } = experts.experts[e];
        const got = product(B.data, A.data, B.rows, A.rows, A.cols, experts.scaling);
        assert.ok(relDiff(got, pair.deltas[GATE_UP][e]) < 1e-4, `expert ${e}`);
      }
    } finally {
      await adapter.close();
    }
  });

  it('a base tensor of the wrong shape is refused, naming the file, module and parameter', async () => {
    const adapter = await openPeftAdapter(adapters['out-in']);
    try {
      assert.throws(
        () => adapter.expertLayout('model.layers.0.mlp.experts', [E, H, H]),
        /adapter_model\.safetensors: module "model\.layers\.0\.mlp\.experts" \(parameter "model\.layers\.0\.mlp\.experts\.down_proj"\): the base tensor is 4×32×32, .* fits neither 4×32×24 nor 4×24×32/,
      );
      assert.throws(() => adapter.expertLayout('model.layers.0.self_attn.q_proj', [H, H]), /q_proj" is an ordinary LoRA module/);
      await assert.rejects(adapter.loadExperts('model.layers.0.self_attn.q_proj'), /is an ordinary LoRA module, not a targeted parameter; load it with load\(\)/);
    } finally {
      await adapter.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// An adapter written by hand in PEFT's own key naming and config conventions
// ---------------------------------------------------------------------------------------------

/** 3 experts; gate_up is square (6 × 6) so its layout cannot be told from its shape, down is 6 × 3. */
const HE = 3;
const HH = 6;
const HI = 3;

interface HandTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

function random(shape: number[], seed: number): HandTensor['data'] {
  const data = new Float32Array(shape.reduce((x, y) => x * y, 1));
  createRng(seed).fillNormal(data);
  return data;
}

/**
 * PEFT's ΔW of expert e, loop by loop from lora/layer.py ParamWrapper.get_delta_weight: A viewed
 * as [E, r, in], B as [out, r, E], Δ[e] = s · Σ_j B[o, j, e] · A[e, j, i], returned [out, in]
 * ("e o i") or [in, out] ("e i o").
 */
function peftDelta(A: Float32Array, B: Float32Array, E: number, r: number, out: number, inF: number, s: number, e: number, order: 'e o i' | 'e i o'): Float32Array {
  const d = new Float32Array(out * inF);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inF; i++) {
      let acc = 0;
      for (let j = 0; j < r; j++) acc += B[o * r * E + j * E + e] * A[e * r * inF + j * inF + i];
      d[order === 'e o i' ? o * inF + i : i * out + o] = s * acc;
    }
  }
  return d;
}

/**
 * Layer 0: gate_up_proj and down_proj both targeted (gate_up, declared first, is the inner
 * wrapper: `experts.base_layer`); layer 1: only gate_up_proj (`experts`). q_proj is ordinary LoRA,
 * o_proj a targeted 2-D `weight`.
 */
const HAND = {
  gateUp0: { key: 'model.layers.0.mlp.experts.base_layer', parameter: 'model.layers.0.mlp.experts.gate_up_proj', r: 2, alpha: 8, out: 2 * HI, in: HH },
  down0: { key: 'model.layers.0.mlp.experts', parameter: 'model.layers.0.mlp.experts.down_proj', r: 3, alpha: 8, out: HH, in: HI },
  gateUp1: { key: 'model.layers.1.mlp.experts', parameter: 'model.layers.1.mlp.experts.gate_up_proj', r: 2, alpha: 5, out: 2 * HI, in: HH },
};

const HAND_CONFIG = {
  peft_type: 'LORA',
  task_type: 'CAUSAL_LM',
  base_model_name_or_path: 'tiny-moe',
  r: 2,
  lora_alpha: 8,
  target_modules: ['q_proj'],
  // short forms, matched as suffixes the way PEFT does; down_proj only in layer 0
  target_parameters: ['mlp.experts.gate_up_proj', 'model.layers.0.mlp.experts.down_proj', 'self_attn.o_proj.weight'],
  rank_pattern: { 'layers.0.mlp.experts.down_proj': 3 },
  alpha_pattern: { 'layers.1.mlp.experts.gate_up_proj': 5, 'o_proj.weight': 2 },
  lora_dropout: 0,
  bias: 'none',
  fan_in_fan_out: false,
  use_rslora: false,
  use_dora: false,
};

async function writeHandAdapter(dir: string, config: Record<string, unknown>, extra: HandTensor[] = []): Promise<HandTensor[]> {
  const tensors: HandTensor[] = [];
  let seed = 500;
  for (const m of Object.values(HAND)) {
    tensors.push({ name: `${PREFIX}${m.key}.lora_A.weight`, shape: [m.r * HE, m.in], data: random([m.r * HE, m.in], seed++) });
    tensors.push({ name: `${PREFIX}${m.key}.lora_B.weight`, shape: [m.out, m.r * HE], data: random([m.out, m.r * HE], seed++) });
  }
  for (const proj of ['q_proj', 'o_proj']) {
    tensors.push({ name: `${PREFIX}model.layers.0.self_attn.${proj}.lora_A.weight`, shape: [2, HH], data: random([2, HH], seed++) });
    tensors.push({ name: `${PREFIX}model.layers.0.self_attn.${proj}.lora_B.weight`, shape: [HH, 2], data: random([HH, 2], seed++) });
  }
  tensors.push(...extra);
  await mkdir(dir, { recursive: true });
  await writeSafetensorsFile(join(dir, 'adapter_model.safetensors'), tensors.map((t) => ({ ...t, dtype: 'F32' as const })));
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2));
  return tensors;
}

describe('openPeftAdapter: a hand-made adapter in PEFT’s key naming', () => {
  it('maps nested wrappers to parameters, takes r and alpha per parameter, and ΔW_e follows PEFT’s formula', async () => {
    const dir = join(root, 'hand');
    const tensors = await writeHandAdapter(dir, HAND_CONFIG);
    const raw = (name: string) => tensors.find((t) => t.name === `${PREFIX}${name}`)!.data;
    const backend = await getBackend({ prefer: 'ref' });
    const adapter = await openPeftAdapter(dir);
    try {
      for (const m of Object.values(HAND)) {
        const info = adapter.module(m.key);
        assert.deepEqual(info.experts, { parameter: m.parameter, count: HE, rank: m.r });
        assert.deepEqual([info.rank, info.outFeatures, info.inFeatures, info.alpha, info.scaling], [m.r * HE, m.out, m.in, m.alpha, m.alpha / m.r]);

        const mod = await adapter.loadExperts(m.key);
        const A = raw(`${m.key}.lora_A.weight`);
        const B = raw(`${m.key}.lora_B.weight`);
        mod.experts.forEach((x, e) => {
          const ours = product(x.B.data, x.A.data, m.out, m.r, m.in, mod.scaling);
          assert.ok(relDiff(ours, peftDelta(A, B, HE, m.r, m.out, m.in, m.alpha / m.r, e, 'e o i')) < 1e-6, `${m.parameter}[${e}]`);
        });
        // the [E, in, out] tensor is PEFT's "e i o" einsum, expert after expert
        const full = await expertDeltaTensor(backend, mod, 'in-out');
        const expected = new Float32Array(HE * m.out * m.in);
        for (let e = 0; e < HE; e++) expected.set(peftDelta(A, B, HE, m.r, m.out, m.in, m.alpha / m.r, e, 'e i o'), e * m.out * m.in);
        assert.ok(relDiff(full, expected) < 1e-6, `${m.parameter} in-out`);
      }

      // the square gate_up cannot be placed from its shape alone; down can
      assert.throws(() => adapter.expertLayout(HAND.gateUp0.key, [HE, HH, HH]), /each expert is 6×6, so the base tensor's shape cannot tell/);
      assert.equal(adapter.expertLayout(HAND.gateUp0.key, [HE, HH, HH], 'in-out'), 'in-out');
      assert.equal(adapter.expertLayout(HAND.down0.key, [HE, HI, HH], 'out-in'), 'in-out', 'the shape wins over the preference');

      // a targeted 2-D `weight` is ordinary LoRA, scaled by the pattern for its parameter path
      const o = adapter.module('model.layers.0.self_attn.o_proj');
      assert.deepEqual([o.experts, o.rank, o.alpha, o.scaling], [undefined, 2, 2, 1]);
      const q = adapter.module('model.layers.0.self_attn.q_proj');
      assert.deepEqual([q.experts, q.rank, q.alpha, q.scaling], [undefined, 2, 8, 4]);
      const om = await adapter.load(o.name);
      assert.deepEqual(om.A.data, raw('model.layers.0.self_attn.o_proj.lora_A.weight'));
    } finally {
      await adapter.close();
    }
  });

  it('rsLoRA scales each expert by alpha / √r', async () => {
    const dir = join(root, 'hand-rslora');
    await writeHandAdapter(dir, { ...HAND_CONFIG, use_rslora: true, alpha_pattern: {} });
    const adapter = await openPeftAdapter(dir);
    try {
      assert.equal(adapter.module(HAND.down0.key).scaling, 8 / Math.sqrt(3));
      assert.equal(adapter.module(HAND.gateUp1.key).scaling, 8 / Math.sqrt(2));
    } finally {
      await adapter.close();
    }
  });

  it('configs that do not fit the weights, and what PEFT would not load, are refused naming file and module', async () => {
    const cases: Array<[string, Record<string, unknown>, RegExp, HandTensor[]?]> = [
      [
        'rank',
        { ...HAND_CONFIG, rank_pattern: { 'layers.0.mlp.experts.down_proj': 4 } },
        /adapter_model\.safetensors: module "model\.layers\.0\.mlp\.experts" holds the LoRA of target parameter "model\.layers\.0\.mlp\.experts\.down_proj": lora_A has 9 rows, which is not r rows per expert for its rank r = 4/,
      ],
      [
        'nesting',
        { ...HAND_CONFIG, target_parameters: ['mlp.experts.gate_up_proj'] },
        /module "model\.layers\.0\.mlp\.experts\.base_layer" is nested 1 wrapper\(s\) deep, but target_parameters selects only gate_up_proj of "model\.layers\.0\.mlp\.experts"/,
      ],
      [
        'order',
        { ...HAND_CONFIG, target_parameters: ['mlp.experts.gate_up_proj', 'mlp.experts.up_extra'] },
        /target_parameters selects gate_up_proj, up_extra of module "model\.layers\.0\.mlp\.experts"; PEFT nests their LoRA wrappers in the order the model declares/,
      ],
      ['type', { ...HAND_CONFIG, target_parameters: 'mlp.experts.gate_up_proj' }, /adapter_config\.json: "target_parameters" must be a list/],
      [
        'dora',
        HAND_CONFIG,
        /module "model\.layers\.1\.mlp\.experts" holds the LoRA of target parameter "model\.layers\.1\.mlp\.experts\.gate_up_proj", but has DoRA or latent tensors/,
        [{ name: `${PREFIX}model.layers.1.mlp.experts.lora_magnitude_vector`, shape: [2 * HI], data: new Float32Array(2 * HI).fill(1) }],
      ],
    ];
    for (const [name, config, message, extra] of cases) {
      const dir = join(root, `bad-${name}`);
      await writeHandAdapter(dir, config, extra);
      await assert.rejects(openPeftAdapter(dir), message, name);
    }
  });
});

describe('inspect on an adapter with expert stacks', () => {
  it('lists each targeted parameter with its experts, rank per expert and shape; plain adapters get none', async () => {
    const expected = EXPECTED.map((x) => ({ parameter: x.parameter, module: x.name, count: E, rank: x.rank, alpha: x.rank, scaling: 1, outFeatures: x.out, inFeatures: x.in }));
    const byParameter = (a: { parameter: string }, b: { parameter: string }) => a.parameter.localeCompare(b.parameter);
    const r = await inspectPath({ path: adapters['in-out'] });
    assert.equal(r.kind, 'peft-adapter');
    assert.deepEqual([...r.experts!].sort(byParameter), expected);

    const cli = await runCli(['inspect', adapters['in-out'], '--json']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.deepEqual(JSON.parse(cli.stdout).experts.sort(byParameter), expected);
    const text = await runCli(['inspect', adapters['in-out']]);
    assert.match(text.stdout, new RegExp(`${GATE_UP.replace(/\./g, '\\.')}: ${E} experts × rank 4, ΔW_e ${2 * I}×${H}, scaling 1 \\(factors under model\\.layers\\.0\\.mlp\\.experts\\.base_layer\\)`));

    const plain = join(root, 'plain');
    const w = await PeftAdapterWriter.create(plain);
    await w.addModule({ name: 'model.layers.0.self_attn.q_proj', kind: 'linear', A: matrix(2, 4), B: matrix(4, 2), alpha: 4 });
    await w.finish();
    assert.equal((await inspectPath({ path: plain })).experts, undefined);
  });
});
