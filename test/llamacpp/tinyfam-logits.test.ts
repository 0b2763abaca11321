/**
 * `to-gguf` on real trained checkpoints, checked by llama.cpp against PyTorch: tinyfam's
 * llama-base (SentencePiece-style BPE, untied, GQA) and qwen-base (byte-level BPE, tied, q/k/v
 * biases, 151936 embedding rows for a 151669-id tokenizer) converted to f32 GGUF must give
 * reference.json's top-5 next-token logits at every debug position within 1e-3. And a PEFT
 * LoRA converted to a GGUF LoRA, applied by llama.cpp at run time on the base, must match the
 * merged fine-tune (llama-ft-a, itself BF16-rounded) within 2e-2.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { llamaCppLogitsForFolder, maxAbsDiff } from '../helpers/llamacpp.js';

const TINYFAM = join(import.meta.dirname, '..', '..', '..', 'shared', 'testdata', 'tinyfam');

interface DebugTop5 {
  input_ids: number[];
  positions: Array<{ pos: number; top5_ids: number[]; top5_logits: number[] }>;
}

const reference = JSON.parse(await readFile(join(TINYFAM, 'reference.json'), 'utf8')) as { debug_top5: Record<string, DebugTop5> };

/** Top-5 ids (by logit, ties to the lower id) and logits of one row. */
function top5(row: Float32Array): Array<[number, number]> {
  const best: Array<[number, number]> = [];
  for (let id = 0; id < row.length; id++) {
    const v = row[id]!;
    if (best.length === 5 && v <= best[4]![1]) continue;
    best.push([id, v]);
    best.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
    if (best.length > 5) best.pop();
  }
  return best;
}

async function checkTop5(model: string): Promise<void> {
  const ref = reference.debug_top5[model]!;
  const rows = await llamaCppLogitsForFolder(join(TINYFAM, model), ref.input_ids);
  let worst = 0;
  for (const p of ref.positions) {
    const row = rows[p.pos]!;
    const got = top5(row);
    p.top5_ids.forEach((id, k) => {
      // the reference's k-th logit against ours for the same token, and against our k-th
      const diff = Math.abs(row[id]! - p.top5_logits[k]!);
      worst = Math.max(worst, diff);
      assert.ok(diff <= 1e-3, `${model} position ${p.pos}: token ${id} logit ${row[id]} vs PyTorch ${p.top5_logits[k]}`);
      if (got[k]![0] !== id) {
        // a different id in rank k is only allowed where the reference's neighbours nearly tie
        const near = [k - 1, k + 1].some((j) => j >= 0 && j < 5 && Math.abs(p.top5_logits[j]! - p.top5_logits[k]!) <= 1e-3);
        assert.ok(near, `${model} position ${p.pos}: rank ${k} is token ${got[k]![0]}, PyTorch has ${id}`);
      }
    });
  }
  process.stderr.write(`  ${model}: ${ref.positions.length} positions, max |llama.cpp − PyTorch| over top-5 ${worst.toExponential(2)}\n`);
}

describe('to-gguf on tinyfam, evaluated by llama.cpp against PyTorch', () => {
  it('llama-base (f32): top-5 logits at 16 positions within 1e-3', async () => {
    await checkTop5('llama-base');
  });

  it('qwen-base (f32, tied, q/k/v biases, padded vocabulary): top-5 logits at 16 positions within 1e-3', async () => {
    await checkTop5('qwen-base');
  });

  it('llama-base + lora-a as a GGUF LoRA at run time ≈ llama-ft-a (within 2e-2)', async () => {
    const tokens = reference.debug_top5['llama-base']!.input_ids;
    const viaLora = await llamaCppLogitsForFolder(join(TINYFAM, 'llama-base'), tokens, { lora: join(TINYFAM, 'lora-a') });
    const merged = await llamaCppLogitsForFolder(join(TINYFAM, 'llama-ft-a'), tokens);
    const base = await llamaCppLogitsForFolder(join(TINYFAM, 'llama-base'), tokens);
    const diff = maxAbsDiff(viaLora, merged);
    const effect = maxAbsDiff(base, merged);
    process.stderr.write(`  lora-a: max |base+LoRA − ft-a| ${diff.toExponential(2)}, LoRA effect ${effect.toFixed(3)}\n`);
    assert.ok(effect > 0.2, 'the fine-tune changes the logits visibly');
    assert.ok(diff <= 2e-2, `base + lora-a in llama.cpp differs from llama-ft-a by ${diff}`);
  });
});
