import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { classifyTensor } from '../../src/delta/targets.js';
import { checkFixedRankFits, chooseAdaptiveRank, residualFraction } from '../../src/lowrank/rank-policy.js';
import { expertLayout } from '../../src/arch/experts.js';
import { splitExpertFactors, stackExpertFactors, wrapperPath } from '../../src/lora/expert-stack.js';
import { subtractInPlace } from '../../src/delta/delta.js';
import { matrix } from '../../src/tensor/matrix.js';
import { product } from '../helpers/extract.js';
import { decompose } from '../../src/lowrank/decompose.js';
import { getBackend } from '../../src/linalg/index.js';
import { plantedMatrix, tailNorm } from '../linalg/planted.js';

describe('classifyTensor', () => {
  it('targets the linear weights of decoder layers by default', () => {
    assert.deepEqual(classifyTensor('model.layers.3.self_attn.q_proj.weight', [8, 8]), { kind: 'linear', module: 'model.layers.3.self_attn.q_proj' });
    assert.deepEqual(classifyTensor('transformer.h.0.mlp.dense_4h_to_h.weight', [8, 32]).kind, 'linear');
    assert.deepEqual(classifyTensor('model.layers.1.block_sparse_moe.experts.5.w2.weight', [8, 16]).kind, 'linear');
    for (const other of ['model.layers.3.self_attn.q_proj.bias', 'model.layers.3.input_layernorm.weight', 'model.layers.0.mlp.gate.weight', 'model.vision.q_proj.weight']) {
      assert.deepEqual(classifyTensor(other, other.endsWith('bias') || other.includes('norm') ? [8] : [8, 8]), { kind: 'other' }, other);
    }
  });

  it('--target-modules replaces the list and is not limited to decoder layers', () => {
    const sel = { targetModules: ['q_proj', 'proj'] };
    assert.equal(classifyTensor('model.vision.q_proj.weight', [8, 8], sel).kind, 'linear');
    assert.equal(classifyTensor('model.layers.0.self_attn.k_proj.weight', [8, 8], sel).kind, 'other');
  });

  it('--include / --exclude filter the targets by tensor name', () => {
    const name = 'model.layers.12.mlp.up_proj.weight';
    assert.equal(classifyTensor(name, [8, 8], { include: /layers\.1\d\./ }).kind, 'linear');
    assert.equal(classifyTensor(name, [8, 8], { include: /layers\.2\d\./ }).kind, 'other');
    assert.equal(classifyTensor(name, [8, 8], { exclude: /up_proj/ }).kind, 'other');
  });

  it('recognises embeddings, LM heads and 3-D expert stacks', () => {
    assert.deepEqual(classifyTensor('model.embed_tokens.weight', [10, 4]), { kind: 'embedding', module: 'model.embed_tokens' });
    assert.deepEqual(classifyTensor('lm_head.weight', [10, 4]), { kind: 'lm-head', module: 'lm_head' });
    assert.deepEqual(classifyTensor('model.layers.0.mlp.experts.gate_up_proj', [4, 16, 8]), {
      kind: 'experts',
      module: 'model.layers.0.mlp.experts',
      param: 'gate_up_proj',
    });
    assert.equal(classifyTensor('model.layers.0.mlp.other3d', [4, 16, 8]).kind, 'other');
  });
});

describe('rank policy', () => {
  it('chooses the smallest rank meeting the bound, or the cap', () => {
    const errs = [1, 0.5, 0.2, 0.05, 0.01];
    assert.deepEqual(chooseAdaptiveRank(errs, residualFraction({ mode: 'max-rel-error', maxRelError: 0.2, maxRank: 8 }), 8), { rank: 2, targetMet: true });
    // energy 0.99 → residual 0.01 → error ≤ 0.1
    assert.deepEqual(chooseAdaptiveRank(errs, residualFraction({ mode: 'energy', energy: 0.99, maxRank: 8 }), 8), { rank: 3, targetMet: true });
    assert.deepEqual(chooseAdaptiveRank(errs, 1e-6, 3), { rank: 3, targetMet: false });
    assert.deepEqual(chooseAdaptiveRank(errs, 1e-6, 100), { rank: 4, targetMet: false });
  });

  it('a fixed rank larger than the tensor is refused with the ways out', () => {
    assert.doesNotThrow(() => checkFixedRankFits(8, 't', 8, 100, [8, 100]));
    assert.throws(() => checkFixedRankFits(9, 'model.x.weight', 8, 100, [8, 100]), /"model\.x\.weight" \(shape \[8, 100\]\).*at most 8.*--exclude.*--energy/);
  });
});

describe('decompose', () => {
  // σ = 1, 0.7, 0.49, …: energy captured by the first r is 1 − 0.49^r (normalised)
  const s = Array.from({ length: 40 }, (_, i) => 0.7 ** i);
  const { a } = plantedMatrix(120, 200, s, 3);
  const total = s.reduce((x, y) => x + y * y, 0);
  const trueRank = (fraction: number) => s.findIndex((_, r) => tailNorm(s, r + 1) ** 2 <= fraction * total) + 1;

  for (const adaptive of ['incremental', 'sketch'] as const) {
    it(`energy and max-rel-error pick the smallest sufficient rank (${adaptive})`, async () => {
      const backend = await getBackend();
      const e = await decompose(backend, a, total, { mode: 'energy', energy: 0.999, maxRank: 30 }, 1, { adaptive });
      assert.equal(e.rank, trueRank(0.001));
      assert.ok(Math.abs(e.relError - tailNorm(s, e.rank) / Math.sqrt(total)) < 1e-3);
      assert.equal(e.targetMet, true);
      const m = await decompose(backend, a, total, { mode: 'max-rel-error', maxRelError: 0.1, maxRank: 30 }, 1, { adaptive });
      assert.equal(m.rank, trueRank(0.01));
      const capped = await decompose(backend, a, total, { mode: 'energy', energy: 0.99999, maxRank: 5 }, 1, { adaptive });
      assert.deepEqual([capped.rank, capped.targetMet], [5, false]);
    });

    it(`max-rel-error tells apart bounds far below what f32 energy differences resolve (${adaptive})`, async () => {
      const backend = await getBackend();
      for (const bound of [1e-3, 3e-4, 1e-4, 3e-5]) {
        const m = await decompose(backend, a, total, { mode: 'max-rel-error', maxRelError: bound, maxRank: 36 }, 1, { adaptive });
        assert.equal(m.rank, trueRank(bound ** 2), `bound ${bound}`);
        const exact = tailNorm(s, m.rank) / Math.sqrt(total);
        assert.ok(Math.abs(m.relError - exact) <= 0.01 * exact, `bound ${bound}: reported ${m.relError}, exact ${exact}`);
      }
    });
  }
});

describe('MoE helpers', () => {
  it('layout: by model type, corrected by the hidden size when the shape only fits the other', () => {
    assert.equal(expertLayout({ model_type: 'qwen3_moe' }, 'gate_up_proj', [4, 64, 32]), 'out-in');
    assert.equal(expertLayout({ model_type: 'gpt_oss' }, 'gate_up_proj', [4, 32, 64]), 'in-out');
    assert.equal(expertLayout({ model_type: 'qwen3_moe', hidden_size: 32 }, 'gate_up_proj', [4, 32, 64]), 'in-out');
    assert.equal(expertLayout({ model_type: 'gpt_oss', hidden_size: 32 }, 'down_proj', [4, 32, 48]), 'out-in');
  });

  it('wrapper paths nest like PEFT: parameters declared first get one base_layer per later one', () => {
    const targeted = { 'm.experts': ['down_proj', 'gate_proj', 'up_proj'], 'n.experts': ['down_proj'] };
    const paths = Object.entries(targeted).flatMap(([module, params]) => params.map((p) => [`${module}.${p}`, wrapperPath(module, params, p)]));
    assert.deepEqual(Object.fromEntries(paths), {
      'm.experts.gate_proj': 'm.experts.base_layer.base_layer',
      'm.experts.up_proj': 'm.experts.base_layer',
      'm.experts.down_proj': 'm.experts',
      'n.experts.down_proj': 'n.experts',
    });
  });

  it('stacked factors give back every expert’s B·A, zero-padded ranks included', () => {
    const f = (r: number, seed: number) => {
      const A = matrix(r, 5, Float32Array.from({ length: r * 5 }, (_, i) => Math.sin(seed + i)));
      const B = matrix(3, r, Float32Array.from({ length: 3 * r }, (_, i) => Math.cos(seed * 3 + i)));
      return { A, B };
    };
    const experts = [f(2, 1), f(1, 2), f(2, 3)];
    const s = stackExpertFactors(experts, 2);
    assert.deepEqual([s.A.rows, s.A.cols, s.B.rows, s.B.cols], [6, 5, 3, 6]);
    const split = splitExpertFactors(s.A, s.B, 3);
    experts.forEach((x, e) => {
      const want = product(x.B.data, x.A.data, 3, x.A.rows, 5);
      const got = product(split[e].B.data, split[e].A.data, 3, 2, 5);
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-6);
    });
    assert.deepEqual(split[0].A.data, experts[0].A.data, 'a full-rank expert comes back exactly');
  });
});

describe('Δ and buffers', () => {
  it('subtractInPlace forms B − A, its norms and whether anything changed', () => {
    const a = Float32Array.from([1, 2, 3]);
    const stats = subtractInPlace(a, Float32Array.from([1, 4, 0]), { a: 'fa: tensor "t"', b: 'fb: tensor "t"' });
    assert.deepEqual([...a], [0, 2, -3]);
    assert.deepEqual(stats, { identical: false, frobSq: 13, baseFrobSq: 14 });
    assert.equal(subtractInPlace(Float32Array.from([5, -0]), Float32Array.from([5, 0]), { a: 'x', b: 'y' }).identical, true);
    assert.throws(() => subtractInPlace(Float32Array.from([1, Infinity]), Float32Array.from([1, 2]), { a: 'fa: tensor "t"', b: 'fb' }), /fa: tensor "t" holds Infinity at element 1/);
    assert.throws(() => subtractInPlace(Float32Array.from([1, 2]), Float32Array.from([NaN, 2]), { a: 'fa', b: 'fb: tensor "t"' }), /fb: tensor "t" holds NaN at element 0/);
  });

});
