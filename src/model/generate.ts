/**
 * Greedy decoding with a KV cache: the prompt is run once, then one token per step, each the
 * argmax of the last position's logits (lowest id on an exact tie, as torch.argmax).
 */
import { argmax, topMargin } from '../scoring/score.js';
import { newKvCache } from './attention.js';
import type { Engine } from './engine.js';
import { batchSequence } from './layer.js';

export interface GreedyOptions {
  maxNewTokens: number;
  /** stop after generating one of these (it is kept in the output) */
  stopIds?: readonly number[];
}

export interface GreedyResult {
  newIds: number[];
  /** top-1 minus top-2 logit at each step: small margins are near-ties */
  margins: number[];
  /** generated tokens per second, prompt processing excluded */
  tokensPerSecond: number;
  promptSeconds: number;
}

export async function generateGreedy(engine: Engine, input: readonly number[], opts: GreedyOptions): Promise<GreedyResult> {
  const { spec } = engine;
  if (input.length === 0) throw new Error('generation needs at least one input token');
  const caches = Array.from({ length: spec.layers }, () => newKvCache(spec.kvHeads, spec.headDim, input.length + opts.maxNewTokens));
  const head = await engine.head();
  const stop = new Set(opts.stopIds ?? []);
  const newIds: number[] = [];
  const margins: number[] = [];
  const started = performance.now();
  let promptSeconds = 0;
  let chunk: number[] = [...input];
  while (newIds.length < opts.maxNewTokens) {
    const pos0 = caches[0]!.length;
    const b = { x: await engine.embed(chunk), rows: chunk.length, seqs: [batchSequence(spec, 0, chunk.length, pos0, caches)] };
    await engine.forward(b);
    const last = b.x.subarray((chunk.length - 1) * spec.hidden, chunk.length * spec.hidden);
    const logits = await engine.logits(head, last, 1);
    const next = argmax(logits);
    newIds.push(next);
    margins.push(topMargin(logits));
    if (newIds.length === 1) promptSeconds = (performance.now() - started) / 1000;
    if (stop.has(next)) break;
    chunk = [next];
  }
  const decodeSeconds = (performance.now() - started) / 1000 - promptSeconds;
  return { newIds, margins, promptSeconds, tokensPerSecond: newIds.length > 1 ? (newIds.length - 1) / decodeSeconds : 0 };
}
