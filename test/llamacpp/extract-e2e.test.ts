/**
 * End to end through a real client: a tiny Llama base and a fine-tuned model B (= base + planted
 * low-rank deltas on every projection, the embeddings and lm_head, with different ranks) are
 * converted to GGUF by loraforge, `extractLora` recovers the LoRA from the two HF checkpoints
 * straight into a llama.cpp GGUF adapter (adaptive ranks + one alpha, so every module's scaling
 * differs and is baked), and llama.cpp itself must produce the same logits for base + LoRA as
 * for B. The planted factors written directly, with and without the Q/K permutation, check the
 * writer alone and that the permutation matters.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { convertToGguf } from '../../src/to-gguf/to-gguf.js';
import { extractLora } from '../../src/extract/index.js';
import type { LoraModule } from '../../src/lora/adapter.js';
import { createGgufLoraWriter } from '../../src/lora/gguf-lora.js';
import { GGUF_LORA_FILE } from '../../src/lora/sink.js';
import { qkPermuteHeadCount } from '../../src/lora/gguf-names.js';
import { runCli } from '../helpers/cli.js';
import {
  extractFromLlamaCppSource,
  llamaLogits,
  loadLlama,
  maxAbs,
  maxAbsDiff,
  plantLowRankDeltas,
  tinyLlamaConfig,
  tinyLlamaWeights,
  writeTinyLlama,
  type LlamaLike,
  type PlantedDelta,
} from '../helpers/llamacpp.js';
import { makeTempDir } from '../helpers/synthetic.js';

const SHAPE = { vocab: 32000, hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128 };
const CONFIG = tinyLlamaConfig(SHAPE);
const TEXT = 'The quick brown fox jumps over the lazy dog, and then it rests.';

/** Ranks (and, for the directly written factors, alphas) differ per module, so one file-level alpha could not serve them all. */
function plantedDeltas(): PlantedDelta[] {
  const out: PlantedDelta[] = [
    { module: 'model.embed_tokens', rank: 3, alpha: 3 },
    { module: 'lm_head', rank: 4, alpha: 16 },
  ];
  for (let l = 0; l < SHAPE.layers; l++) {
    const p = `model.layers.${l}.`;
    out.push(
      { module: `${p}self_attn.q_proj`, rank: 4, alpha: 8 },
      { module: `${p}self_attn.k_proj`, rank: 2, alpha: 2 },
      { module: `${p}self_attn.v_proj`, rank: 8, alpha: 32 },
      { module: `${p}self_attn.o_proj`, rank: 4, alpha: 4 },
      { module: `${p}mlp.gate_proj`, rank: 6, alpha: 12 },
      { module: `${p}mlp.up_proj`, rank: 3, alpha: 6 },
      { module: `${p}mlp.down_proj`, rank: 2, alpha: 8 },
    );
  }
  return out;
}

/**
 * Undoes llama.cpp's Q/K row permutation on B (out × r), written independently of
 * permuteQkRows: HF row h·d + j·d/2 + i comes from GGUF row h·d + 2i + j. Feeding the result to
 * the writer (which permutes) yields an adapter whose Q/K factors are NOT permuted.
 */
function unpermuteRows(B: LoraModule['B'], nHead: number): LoraModule['B'] {
  const d = B.rows / nHead;
  const out = new Float32Array(B.data.length);
  for (let h = 0; h < nHead; h++) {
    for (let i = 0; i < d / 2; i++) {
      for (let j = 0; j < 2; j++) {
        const hfRow = h * d + j * (d / 2) + i;
        const ggufRow = h * d + 2 * i + j;
        out.set(B.data.subarray(hfRow * B.cols, (hfRow + 1) * B.cols), ggufRow * B.cols);
      }
    }
  }
  return { rows: B.rows, cols: B.cols, data: out };
}

async function writeLora(path: string, modules: LoraModule[]): Promise<void> {
  const sink = await createGgufLoraWriter(path, { config: CONFIG, dtype: 'F32' });
  for (const m of modules) await sink.addModule(m);
  await sink.finish();
}

describe('llama.cpp end to end: base GGUF + loraforge GGUF LoRA == fine-tuned GGUF', () => {
  let dir = '';
  let llama: LlamaLike | undefined;
  const logits: Record<'base' | 'extracted' | 'planted' | 'unpermuted' | 'finetuned', Float32Array[]> = {} as never;
  const plantedRanks = new Map(plantedDeltas().map((d) => [d.module, d.rank]));
  let extractedRanks = new Map<string, number>();

  before(async () => {
    dir = await makeTempDir('loraforge-e2e-');
    llama = await loadLlama();
    const [vocab] = await extractFromLlamaCppSource(['models/ggml-vocab-llama-spm.gguf'], dir);

    const base = tinyLlamaWeights(SHAPE, 1234);
    const { tensors: finetuned, modules } = plantLowRankDeltas(base, plantedDeltas(), 99);
    await writeTinyLlama(join(dir, 'base'), base, CONFIG);
    await writeTinyLlama(join(dir, 'finetuned'), finetuned, CONFIG);

    await convertToGguf({ model: join(dir, 'base'), out: join(dir, 'base.gguf'), dtype: 'F32', vocabFrom: vocab! });
    // the fine-tuned model goes through the CLI, as a user would run it
    const cli = await runCli(['to-gguf', '--model', join(dir, 'finetuned'), '--out', join(dir, 'finetuned.gguf'), '--dtype', 'f32', '--vocab-from', vocab!, '--quiet']);
    assert.equal(cli.code, 0, cli.stderr);

    const report = await extractLora({
      modelA: join(dir, 'base'),
      modelB: join(dir, 'finetuned'),
      out: join(dir, 'extracted'),
      format: 'gguf',
      dtype: 'F32',
      embeddings: 'lora',
      // the extractor's spectral error estimate resolves ~1e-3, so ask for 1e-2: the planted ranks are exact
      policy: { mode: 'max-rel-error', maxRelError: 1e-2, maxRank: 16 },
      alpha: 16,
      threads: 2,
    });
    extractedRanks = new Map(report.tensors.map((t) => [t.module, t.rank]));

    await writeLora(join(dir, 'planted.gguf'), modules);
    const unpermuted = modules.map((m) => {
      const nHead = qkPermuteHeadCount('llama', CONFIG, m.name);
      return nHead === undefined ? m : { ...m, B: unpermuteRows(m.B, nHead) };
    });
    await writeLora(join(dir, 'lora-unpermuted.gguf'), unpermuted);

    const baseModel = await llama.loadModel({ modelPath: join(dir, 'base.gguf'), gpuLayers: 0 });
    const tokens = baseModel.tokenize(TEXT);
    assert.ok(tokens.length >= 10, `the real vocabulary should split the text into several tokens, got ${tokens.length}`);
    logits.base = await llamaLogits(baseModel, tokens, SHAPE.vocab);
    logits.extracted = await llamaLogits(baseModel, tokens, SHAPE.vocab, { filePath: join(dir, 'extracted', GGUF_LORA_FILE) });
    logits.planted = await llamaLogits(baseModel, tokens, SHAPE.vocab, { filePath: join(dir, 'planted.gguf') });
    logits.unpermuted = await llamaLogits(baseModel, tokens, SHAPE.vocab, { filePath: join(dir, 'lora-unpermuted.gguf') });
    await baseModel.dispose();
    const finetunedModel = await llama.loadModel({ modelPath: join(dir, 'finetuned.gguf'), gpuLayers: 0 });
    logits.finetuned = await llamaLogits(finetunedModel, tokens, SHAPE.vocab);
    await finetunedModel.dispose();
  });

  after(async () => {
    await llama?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('extractLora finds each planted rank', () => {
    assert.deepEqual(Object.fromEntries(extractedRanks), Object.fromEntries(plantedRanks));
  });

  for (const which of ['extracted', 'planted'] as const) {
    it(`base + ${which} LoRA reproduces the fine-tuned model to f32 precision`, () => {
      const scale = maxAbs(logits.finetuned);
      const diff = maxAbsDiff(logits[which], logits.finetuned);
      process.stderr.write(`  logit scale ${scale.toFixed(3)}, max |base + ${which} LoRA − finetuned| = ${diff.toExponential(2)}\n`);
      assert.ok(scale > 1, `logits should not be degenerate (max |logit| ${scale})`);
      // f32 end to end (weights, LoRA, KV cache, no flash attention): only rounding differs
      assert.ok(diff <= 2e-5 * scale, `max logit difference ${diff} exceeds ${2e-5 * scale}`);
    });
  }

  it('the base alone is clearly different (the comparison can fail)', () => {
    const scale = maxAbs(logits.finetuned);
    const diff = maxAbsDiff(logits.base, logits.finetuned);
    process.stderr.write(`  max |base − finetuned| = ${diff.toFixed(3)}\n`);
    assert.ok(diff > 0.1 * scale, `base and fine-tuned logits differ by only ${diff}`);
  });

  it('a LoRA without the Q/K permutation does not match (the permutation matters)', () => {
    const scale = maxAbs(logits.finetuned);
    const diff = maxAbsDiff(logits.unpermuted, logits.finetuned);
    process.stderr.write(`  max |unpermuted LoRA − finetuned| = ${diff.toFixed(3)}\n`);
    assert.ok(diff > 0.05 * scale, `an unpermuted LoRA should be far off, got ${diff}`);
  });
});
