/**
 * The eval engine (src/model) on tiny synthetic models of every family it runs, against two
 * independent computations of the same logits: `referenceLogits`, an f64 forward pass written
 * from transformers' modeling files (exact GELU), and llama.cpp on the model converted by
 * `to-gguf` (f32 weights, f32 KV cache).
 *
 * Tolerances are relative to the largest |logit| (a few units here). The engine computes in f32
 * with f64 sums in its element-wise kernels; at these widths (hidden 32, head_dim 8, 2 layers) its
 * rounding moves logits by ~1e-6 of their scale, so 1e-4 leaves two orders of margin while any
 * semantic slip (a RoPE frequency, one masked key, a norm's 1 + w, a routed expert) moves them by
 * 1e-2 or more. llama.cpp sums in a different order and rounds its RoPE tables differently:
 * 1e-3, as the brief and tinyfam's llama.cpp tests use.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { getBackend } from '../../src/linalg/index.js';
import type { LinalgBackend } from '../../src/linalg/backend.js';
import { createAdapterSink, GGUF_LORA_FILE } from '../../src/lora/sink.js';
import { Engine } from '../../src/model/engine.js';
import { generateGreedy } from '../../src/model/generate.js';
import { batchSequence } from '../../src/model/layer.js';
import { argmax } from '../../src/scoring/score.js';
import { createRng } from '../../src/linalg/random.js';
import { convertToGguf } from '../../src/to-gguf/to-gguf.js';
import { llamaLogits, plantLowRankDeltas, referenceLogits, tinyLlamaConfig, tinyLlamaWeights, useLlamaCppVocab, writeTinyLlama } from '../helpers/llamacpp.js';
import { tinyFamilyConfig, tinyFamilyWeights } from '../helpers/tiny-families.js';

type Tensors = Record<string, { shape: number[]; data: Float32Array }>;

const fixture = useLlamaCppVocab('llama-spm');
const SHAPE = { vocab: 32000, hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48 };
const MOE = { experts: 4, used: 2, expertFf: 24 };
// 12 tokens: longer than the sliding windows below, long enough for RoPE scaling to matter
const TOKENS = [1, 15043, 3186, 29991, 450, 4996, 17354, 1701, 29916, 432, 17204, 975];

let backend: LinalgBackend;
before(async () => {
  backend = await getBackend();
});
after(() => backend.dispose?.());

interface Case {
  name: string;
  config: Record<string, unknown>;
  tensors: Tensors;
  /** llama.cpp: compared at the last 4 positions (default), at the first n, or not at all */
  llamaCpp?: 'none' | number;
}

function qwen2(): Case {
  const config = { ...tinyLlamaConfig(SHAPE), architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', rope_theta: 1000000, rms_norm_eps: 1e-6 };
  const tensors = tinyLlamaWeights(SHAPE, 5);
  const rng = createRng(55);
  const hd = SHAPE.hidden / SHAPE.heads;
  for (let l = 0; l < SHAPE.layers; l++) {
    for (const [p, n] of [['q', SHAPE.heads * hd], ['k', SHAPE.kvHeads * hd], ['v', SHAPE.kvHeads * hd]] as const) {
      tensors[`model.layers.${l}.self_attn.${p}_proj.bias`] = { shape: [n], data: Float32Array.from({ length: n }, () => rng.next() - 0.5) };
    }
  }
  return { name: 'qwen2', config, tensors };
}

const CASES: Array<() => Case> = [
  () => ({ name: 'llama', config: tinyLlamaConfig(SHAPE), tensors: tinyLlamaWeights(SHAPE, 3) }),
  () => ({
    name: 'llama (llama3 rope scaling)',
    // θ = 100 and an old context of 32 put head_dim 8's four frequencies in all three bands (kept, blended, divided)
    config: tinyLlamaConfig(SHAPE, {
      rope_theta: 100,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 },
    }),
    tensors: tinyLlamaWeights(SHAPE, 4),
  }),
  () => ({
    name: 'mistral (sliding window 5 < 12 tokens)',
    config: tinyLlamaConfig(SHAPE, { architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: 5 }),
    tensors: tinyLlamaWeights(SHAPE, 6),
    // llama.cpp's llama arch (Mistral's GGUF) attends over everything: only positions inside the window compare
    llamaCpp: 5,
  }),
  qwen2,
  ...(['qwen3', 'mixtral', 'mixtral-fused', 'qwen3_moe', 'qwen3_moe-fused', 'gemma2'] as const).map((f) => () => {
    const moe = f.includes('mixtral') || f.includes('moe') ? MOE : undefined;
    const config = tinyFamilyConfig(f, SHAPE, moe);
    // the builder's final cap of 3 saturates most logits (raw ones reach ~65), which would hide errors upstream
    if (f === 'gemma2') config['final_logit_softcapping'] = 30;
    // llama.cpp's GELU is an f16 table (4e-3 off the exact one here): Gemma 2 is checked against the reference only
    return { name: f, config, tensors: tinyFamilyWeights(f, SHAPE, 31, moe), llamaCpp: f === 'gemma2' ? ('none' as const) : undefined };
  }),
];

function compare(got: Float32Array[], want: ArrayLike<number>[]): { diff: number; scale: number } {
  let diff = 0;
  let scale = 0;
  got.forEach((row, i) =>
    row.forEach((v, j) => {
      diff = Math.max(diff, Math.abs(v - want[i]![j]!));
      scale = Math.max(scale, Math.abs(want[i]![j]!));
    }),
  );
  return { diff, scale };
}

/** The engine's logits at every position of `tokens` (one full forward pass). */
async function engineLogits(engine: Engine, tokens: number[]): Promise<Float32Array[]> {
  const b = { x: await engine.embed(tokens), rows: tokens.length, seqs: [batchSequence(engine.spec, 0, tokens.length)] };
  await engine.forward(b);
  const logits = await engine.logits(await engine.head(), b.x, tokens.length);
  const V = engine.spec.vocab;
  return tokens.map((_, i) => logits.slice(i * V, (i + 1) * V));
}

async function ggufOf(folder: string): Promise<string> {
  const out = `${folder}.gguf`;
  await convertToGguf({ model: folder, out, dtype: 'F32', vocabFrom: fixture.vocab });
  return out;
}

/**
 * llama.cpp's logits at the last `lastN` positions of `tokens` (they attend over all the others;
 * node-llama-cpp hands each position's 32000 logits over as a Map, ~50 ms apiece).
 */
async function llamaCpp(gguf: string, tokens: number[], lastN: number, lora?: string): Promise<Float32Array[]> {
  const model = await fixture.llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  try {
    return await llamaLogits(model, tokens, SHAPE.vocab, lora ? { filePath: lora } : undefined, lastN);
  } finally {
    await model.dispose();
  }
}

function report(name: string, what: string, r: { diff: number; scale: number }): void {
  process.stderr.write(`  ${name}: logit scale ${r.scale.toFixed(2)}, max |engine − ${what}| ${r.diff.toExponential(2)} (${(r.diff / r.scale).toExponential(1)} of scale)\n`);
}

describe('eval engine on every family against an f64 reference and llama.cpp', () => {
  for (const make of CASES) {
    const c = make();
    it(`${c.name}: logits at every position`, async () => {
      const folder = join(fixture.dir, c.name.replace(/\W+/g, '-'));
      await writeTinyLlama(folder, c.tensors, c.config);
      const engine = await Engine.open(folder, [], backend);
      let got: Float32Array[];
      try {
        got = await engineLogits(engine, TOKENS);
        if (c.name.endsWith('-fused')) {
          // resident weights take whole stacks and slice them in memory: the same numbers
          engine.resident();
          assert.deepEqual(await engineLogits(engine, TOKENS), got);
        }
      } finally {
        await engine.close();
      }
      const ref = compare(got, referenceLogits(c.tensors, c.config, TOKENS));
      report(c.name, 'f64 reference', ref);
      assert.ok(ref.scale > 0.5, 'logits are not degenerate');
      assert.ok(ref.diff <= 1e-4 * ref.scale, `${c.name}: engine vs reference ${ref.diff} (allowed ${1e-4 * ref.scale})`);
      if (c.llamaCpp === 'none') return;
      const gguf = await ggufOf(folder);
      const n = c.llamaCpp;
      const cpp = n === undefined ? compare(got.slice(-4), await llamaCpp(gguf, TOKENS, 4)) : compare(got.slice(0, n), await llamaCpp(gguf, TOKENS.slice(0, n), n));
      report(c.name, 'llama.cpp', cpp);
      assert.ok(cpp.diff <= 1e-3 * cpp.scale, `${c.name}: engine vs llama.cpp ${cpp.diff} (allowed ${1e-3 * cpp.scale})`);
    });
  }

  it('llama with a LoRA applied on the fly: matches the merged reference and llama.cpp with the GGUF LoRA', async () => {
    const config = tinyLlamaConfig(SHAPE);
    const base = tinyLlamaWeights(SHAPE, 8);
    const deltas = ['self_attn.q_proj', 'self_attn.v_proj', 'mlp.down_proj'].flatMap((m) => [0, 1].map((l) => ({ module: `model.layers.${l}.${m}`, rank: 4, alpha: 8 })));
    const { tensors: merged, modules } = plantLowRankDeltas(base, deltas, 9);
    const folder = join(fixture.dir, 'lora-base');
    await writeTinyLlama(folder, base, config);
    const adapter = join(fixture.dir, 'lora');
    const sink = await createAdapterSink(adapter, { format: 'both', baseConfig: config });
    for (const m of modules) await sink.addModule(m);
    await sink.finish();
    const engine = await Engine.open(folder, [{ dir: adapter }], backend);
    let got: Float32Array[];
    try {
      got = await engineLogits(engine, TOKENS);
    } finally {
      await engine.close();
    }
    const ref = compare(got, referenceLogits(merged, config, TOKENS));
    report('llama+lora', 'merged f64 reference', ref);
    assert.ok(ref.diff <= 1e-4 * ref.scale, `engine+lora vs reference ${ref.diff}`);
    // the LoRA matters: the base alone is far from the merged model
    const unadapted = compare(got, referenceLogits(base, config, TOKENS));
    assert.ok(unadapted.diff > 100 * ref.diff, `the LoRA changes the logits (${unadapted.diff})`);
    const cpp = compare(got.slice(-4), await llamaCpp(await ggufOf(folder), TOKENS, 4, join(adapter, GGUF_LORA_FILE)));
    report('llama+lora', 'llama.cpp with the GGUF LoRA', cpp);
    assert.ok(cpp.diff <= 1e-3 * cpp.scale, `engine+lora vs llama.cpp ${cpp.diff}`);
  });
});

describe('greedy generation with a KV cache', () => {
  for (const family of ['mistral', 'gemma2'] as const) {
    it(`${family} (sliding window shorter than the text): every new id is the argmax of a full forward pass`, async () => {
      const config = family === 'gemma2' ? tinyFamilyConfig('gemma2', SHAPE) : tinyLlamaConfig(SHAPE, { architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: 4 });
      const tensors = family === 'gemma2' ? tinyFamilyWeights('gemma2', SHAPE, 12) : tinyLlamaWeights(SHAPE, 12);
      const folder = join(fixture.dir, `greedy-${family}`);
      await writeTinyLlama(folder, tensors, config);
      const engine = await Engine.open(folder, [], backend);
      try {
        const prompt = TOKENS.slice(0, 3);
        const { newIds, margins } = await generateGreedy(engine, prompt, { maxNewTokens: 8 });
        assert.equal(newIds.length, 8);
        for (let i = 0; i < newIds.length; i++) {
          const ids = [...prompt, ...newIds.slice(0, i)];
          const full = await engineLogits(engine, ids);
          assert.equal(newIds[i], argmax(full[ids.length - 1]!), `step ${i} (margin ${margins[i]})`);
        }
      } finally {
        await engine.close();
      }
    });
  }
});
