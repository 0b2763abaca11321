import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLora } from '../../src/extract/index.js';
import { openSafetensors } from '../../src/io/safetensors.js';
import { lookupPattern, openPeftAdapter, type PeftConfig } from '../../src/lora/adapter.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { planted, relDiff, withDeltas, writePair, type Tensors } from '../helpers/extract.js';
import { createRng } from '../../src/linalg/random.js';

let root: string;
let count = 0;
const sub = (name: string) => join(root, `${name}${count++}`);

const E = 4;
const HIDDEN = 32;
const INTER = 24;
const GATE_UP = 'model.layers.0.mlp.experts.gate_up_proj';
const DOWN = 'model.layers.0.mlp.experts.down_proj';
const ROUTER = 'model.layers.0.mlp.gate.weight';
const Q = 'model.layers.0.self_attn.q_proj.weight';

function noise(shape: number[], seed: number): { shape: number[]; data: Float32Array } {
  const data = new Float32Array(shape.reduce((x, y) => x * y, 1));
  createRng(seed).fillNormal(data);
  for (let i = 0; i < data.length; i++) data[i] *= 0.02;
  return { shape, data };
}

/** Expert e's planted ΔW_e (out × in) for gate_up has rank e + 1; only expert 2 of down changes (rank 2). */
const gateUpDelta = Array.from({ length: E }, (_, e) => planted(2 * INTER, HIDDEN, [0.3, 0.25, 0.2, 0.15].slice(0, e + 1), 50 + e));
const downDelta = Array.from({ length: E }, (_, e) => (e === 2 ? planted(HIDDEN, INTER, [0.3, 0.1], 60) : new Float32Array(HIDDEN * INTER)));
const qDelta = planted(HIDDEN, HIDDEN, [0.2, 0.1], 70);

/** The 3-D tensor holding per-expert weights W_e (out × in) in the given layout. */
function stack(perExpert: Float32Array[], out: number, inF: number, layout: 'out-in' | 'in-out'): Float32Array {
  const data = new Float32Array(E * out * inF);
  perExpert.forEach((w, e) => {
    for (let o = 0; o < out; o++) {
      for (let i = 0; i < inF; i++) data[e * out * inF + (layout === 'out-in' ? o * inF + i : i * out + o)] = w[o * inF + i];
    }
  });
  return data;
}

function moeModels(layout: 'out-in' | 'in-out'): { a: Tensors; b: Tensors } {
  const shape3 = (out: number, inF: number) => (layout === 'out-in' ? [E, out, inF] : [E, inF, out]);
  const a: Tensors = {
    'model.embed_tokens.weight': noise([40, HIDDEN], 1),
    [Q]: noise([HIDDEN, HIDDEN], 2),
    [ROUTER]: noise([E, HIDDEN], 3),
    [GATE_UP]: noise(shape3(2 * INTER, HIDDEN), 4),
    [DOWN]: noise(shape3(HIDDEN, INTER), 5),
    'lm_head.weight': noise([40, HIDDEN], 6),
  };
  const b = withDeltas(a, {
    [Q]: qDelta,
    [ROUTER]: planted(E, HIDDEN, [0.1], 80),
    [GATE_UP]: stack(gateUpDelta, 2 * INTER, HIDDEN, layout),
    [DOWN]: stack(downDelta, HIDDEN, INTER, layout),
  });
  return { a, b };
}

const config = (modelType: string) => ({ model_type: modelType, hidden_size: HIDDEN, num_local_experts: E });

let outIn: { a: string; b: string };
let inOut: { a: string; b: string };
before(async () => {
  root = await makeTempDir('loraforge-moe-');
  const m1 = moeModels('out-in');
  outIn = await writePair(sub('qwen3moe'), m1.a, m1.b, { dtype: 'F32', config: config('qwen3_moe') });
  const m2 = moeModels('in-out');
  inOut = await writePair(sub('gptoss'), m2.a, m2.b, { dtype: 'F32', config: config('gpt_oss') });
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/**
 * ΔW_e the way PEFT's ParamWrapper computes it (lora/layer.py get_delta_weight), written out
 * independently: A reshaped (E, r, in), B reshaped (out, r, E), Δ[e] = s · Σ_j B[:, j, e] · A[e, j, :].
 * Returned in the tensor's own layout: (out × in) for out-in, (in × out) for in-out.
 */
function peftExpertDelta(A: Float32Array, B: Float32Array, r: number, out: number, inF: number, e: number, s: number, layout: 'out-in' | 'in-out'): Float32Array {
  const d = new Float32Array(out * inF);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inF; i++) {
      let acc = 0;
      for (let j = 0; j < r; j++) acc += B[o * (r * E) + j * E + e] * A[(e * r + j) * inF + i];
      d[layout === 'out-in' ? o * inF + i : i * out + o] = s * acc;
    }
  }
  return d;
}

function transposeOf(w: Float32Array, out: number, inF: number): Float32Array {
  const t = new Float32Array(w.length);
  for (let o = 0; o < out; o++) for (let i = 0; i < inF; i++) t[i * out + o] = w[o * inF + i];
  return t;
}

async function checkAdapter(out: string, layout: 'out-in' | 'in-out'): Promise<void> {
  const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8')) as PeftConfig;
  assert.deepEqual(cfg.target_parameters, [DOWN, GATE_UP]);
  assert.deepEqual(cfg.target_modules, ['q_proj']);
  const rankOf = (param: string) => lookupPattern(cfg.rank_pattern, param) ?? cfg.r;
  const alphaOf = (param: string) => lookupPattern(cfg.alpha_pattern, param) ?? cfg.lora_alpha;
  assert.equal(rankOf(GATE_UP), 4, 'the largest rank any expert needs');
  assert.equal(rankOf(DOWN), 2);
  assert.equal(lookupPattern(cfg.rank_pattern, 'model.layers.0.self_attn.q_proj') ?? cfg.r, 2);

  const file = await openSafetensors(join(out, 'adapter_model.safetensors'));
  try {
    const prefix = 'base_model.model.model.layers.0.mlp.experts';
    // PEFT nests one ParamWrapper per parameter: gate_up_proj (declared first) is the inner one
    for (const [param, wrapper, out, inF, truth] of [
      [GATE_UP, `${prefix}.base_layer`, 2 * INTER, HIDDEN, gateUpDelta],
      [DOWN, prefix, HIDDEN, INTER, downDelta],
    ] as const) {
      const r = rankOf(param);
      assert.deepEqual(file.info(`${wrapper}.lora_A.weight`).shape, [r * E, inF]);
      assert.deepEqual(file.info(`${wrapper}.lora_B.weight`).shape, [out, r * E]);
      const A = await file.read(`${wrapper}.lora_A.weight`);
      const B = await file.read(`${wrapper}.lora_B.weight`);
      for (let e = 0; e < E; e++) {
        const rebuilt = peftExpertDelta(A, B, r, out, inF, e, alphaOf(param) / r, layout);
        const expected = layout === 'out-in' ? truth[e] : transposeOf(truth[e], out, inF);
        const norm = Math.sqrt(expected.reduce((x, y) => x + y * y, 0));
        if (norm === 0) assert.ok(rebuilt.every((x) => Math.abs(x) < 1e-7), `${param} expert ${e} did not change`);
        else assert.ok(relDiff(rebuilt, expected) < 1e-4, `${param} expert ${e}: ${relDiff(rebuilt, expected)}`);
      }
    }
  } finally {
    await file.close();
  }
}

describe('3-D MoE expert tensors', () => {
  it('(experts, out, in) as in transformers’ fused experts: one LoRA per expert, PEFT target_parameters layout', async () => {
    const out = sub('out');
    const r = await extractLora({ modelA: outIn.a, modelB: outIn.b, out, policy: { mode: 'energy', energy: 0.9999, maxRank: 8 }, verify: true });
    const rows = Object.fromEntries(r.tensors.map((t) => [t.name, t]));
    assert.deepEqual(rows[GATE_UP].experts, {
      count: E,
      layout: 'out-in',
      parameter: GATE_UP,
      ranks: [1, 2, 3, 4],
      relErrors: rows[GATE_UP].experts!.relErrors,
    });
    assert.equal(rows[GATE_UP].module, 'model.layers.0.mlp.experts.base_layer');
    assert.deepEqual(rows[DOWN].experts!.ranks, [0, 0, 2, 0]);
    assert.equal(rows[DOWN].module, 'model.layers.0.mlp.experts');
    for (const t of [rows[GATE_UP], rows[DOWN]]) assert.ok(t.exactRelError! < 1e-4, `${t.name}: ${t.exactRelError}`);
    assert.deepEqual(r.nonTargetDiffering.map((d) => d.name), [ROUTER]);
    await checkAdapter(out, 'out-in');
  });

  it('(experts, in, out) as gpt-oss and Llama 4 store them: ΔW_e is the slice’s transpose', async () => {
    const out = sub('out');
    const r = await extractLora({ modelA: inOut.a, modelB: inOut.b, out, policy: { mode: 'energy', energy: 0.9999, maxRank: 8 } });
    assert.deepEqual(r.tensors.filter((t) => t.kind === 'experts').map((t) => t.experts!.layout), ['in-out', 'in-out']);
    await checkAdapter(out, 'in-out');
  });

  it('--skip-3d leaves them out and says so', async () => {
    const r = await extractLora({ modelA: outIn.a, modelB: outIn.b, out: sub('out'), skip3d: true });
    assert.deepEqual(r.tensors.map((t) => t.name), [Q]);
    assert.deepEqual(r.skipped3d, [GATE_UP, DOWN]);
    assert.deepEqual(
      r.nonTargetDiffering.filter((d) => d.name !== ROUTER).map((d) => [d.name, d.reason]),
      [GATE_UP, DOWN].map((n) => [n, '3-D expert tensor skipped (--skip-3d)']),
    );
  });

  it('GGUF output with 3-D experts is refused before any work, pointing at --skip-3d', async () => {
    await assert.rejects(
      extractLora({ modelA: outIn.a, modelB: outIn.b, out: sub('out'), format: 'gguf' }),
      /cannot be written to a GGUF LoRA yet: pass --format peft, or --skip-3d/,
    );
  });

  it('our adapter reader sees the stacked factors under the wrapper paths', async () => {
    const out = sub('out');
    await extractLora({ modelA: outIn.a, modelB: outIn.b, out, policy: { mode: 'rank', rank: 4 } });
    const adapter = await openPeftAdapter(out);
    try {
      assert.deepEqual(adapter.modules.map((m) => [m.name, m.rank]).sort(), [
        ['model.layers.0.mlp.experts', 4 * E],
        ['model.layers.0.mlp.experts.base_layer', 4 * E],
        ['model.layers.0.self_attn.q_proj', 4],
      ]);
    } finally {
      await adapter.close();
    }
  });
});
