/**
 * End to end through a real client: a tiny Llama base and a fine-tuned model B (= base + planted
 * low-rank deltas on every projection, the embeddings and lm_head, with different ranks and
 * alphas) are converted to GGUF by loraforge, the LoRA is written as a llama.cpp GGUF adapter,
 * and llama.cpp itself must produce the same logits for base + LoRA as for B.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { convertToGguf } from '../../src/convert/to-gguf.js';
import type { LoraModule } from '../../src/lora/adapter.js';
import { createGgufLoraWriter } from '../../src/lora/gguf-lora.js';
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

/** Ranks and alphas differ per module, so one file-level alpha could not serve them all. */
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
  const logits: Record<'base' | 'withLora' | 'unpermuted' | 'finetuned', Float32Array[]> = {} as never;

  before(async () => {
    dir = await makeTempDir('loraforge-e2e-');
    llama = await loadLlama();
    const [vocab] = await extractFromLlamaCppSource(['models/ggml-vocab-llama-spm.gguf'], dir);

    const base = tinyLlamaWeights(SHAPE, 1234);
    const { tensors: finetuned, modules } = plantLowRankDeltas(base, plantedDeltas(), 99);
    await writeTinyLlama(join(dir, 'base'), base, CONFIG);
    await writeTinyLlama(join(dir, 'finetuned'), finetuned, CONFIG);

    await convertToGguf(join(dir, 'base'), join(dir, 'base.gguf'), { dtype: 'F32', vocabFrom: vocab! });
    // the fine-tuned model goes through the CLI, as a user would run it
    const cli = await runCli(['to-gguf', '--model', join(dir, 'finetuned'), '--out', join(dir, 'finetuned.gguf'), '--dtype', 'f32', '--vocab-from', vocab!, '--quiet']);
    assert.equal(cli.code, 0, cli.stderr);

    await writeLora(join(dir, 'lora.gguf'), modules);
    const unpermuted = modules.map((m) => {
      const nHead = qkPermuteHeadCount('llama', CONFIG, m.name);
      return nHead === undefined ? m : { ...m, B: unpermuteRows(m.B, nHead) };
    });
    await writeLora(join(dir, 'lora-unpermuted.gguf'), unpermuted);

    const baseModel = await llama.loadModel({ modelPath: join(dir, 'base.gguf'), gpuLayers: 0 });
    const tokens = baseModel.tokenize(TEXT);
    assert.ok(tokens.length >= 10, `the real vocabulary should split the text into several tokens, got ${tokens.length}`);
    logits.base = await llamaLogits(baseModel, tokens, SHAPE.vocab);
    logits.withLora = await llamaLogits(baseModel, tokens, SHAPE.vocab, { filePath: join(dir, 'lora.gguf') });
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

  it('base + LoRA reproduces the fine-tuned model to f32 precision', () => {
    const scale = maxAbs(logits.finetuned);
    const diff = maxAbsDiff(logits.withLora, logits.finetuned);
    process.stderr.write(`  logit scale ${scale.toFixed(3)}, max |base+LoRA − finetuned| = ${diff.toExponential(2)}\n`);
    assert.ok(scale > 1, `logits should not be degenerate (max |logit| ${scale})`);
    // f32 end to end (weights, LoRA, KV cache, no flash attention): only summation order differs
    assert.ok(diff <= 2e-5 * scale, `max logit difference ${diff} exceeds ${2e-5 * scale}`);
  });

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
