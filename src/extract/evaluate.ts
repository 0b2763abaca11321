/**
 * `extract --eval-text`: the behavioural error of an extraction beside its Frobenius one. The
 * adapter just written is applied to A on the fly (never merged) and compared with B on a text:
 * perplexities of B, A and A + adapter, and KL(B ‖ A + adapter) with top-1 agreement. KL(B ‖ A)
 * comes with them, since a KL alone does not say whether the adapter closed much of the gap.
 * Both sets (A + adapter, A) are scored in one evaluation, so B's forward pass and logits are
 * computed once.
 */
import { access } from 'node:fs/promises';
import { evaluateAdapterSets } from '../eval/eval.js';
import { UsageError } from '../errors.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { withPath } from '../io/os-error.js';
import type { OnProgress } from '../progress.js';

export interface ExtractEvalOptions {
  /** the text file to measure on */
  text: string;
  /** each line is a sentence followed by EOS (the tinyfam / sentence-corpus convention) */
  lines?: boolean;
  /** window length in tokens (default 512); windows do not overlap */
  ctx?: number;
  /** use only the first N tokens of the text (default: all of it) */
  maxTokens?: number;
}

export interface ExtractEvalReport {
  text: string;
  mode: 'text' | 'lines';
  ctx: number;
  windows: number;
  scoredPositions: number;
  perplexity: { b: number; a: number; aPlusAdapter: number };
  /** mean KL(B ‖ A + adapter) per scored position, nats, over the whole vocabulary */
  kl: number;
  /** mean KL(B ‖ A): the gap the adapter had to close */
  klWithoutAdapter: number;
  /** share of scored positions where A + adapter and B rank the same token first */
  top1Agreement: number;
  /** the same for A alone */
  top1AgreementWithoutAdapter: number;
  seconds: number;
}

/** Refuses bad evaluation settings before the extraction runs, so a typo costs no extraction. */
export async function checkEvalOptions(o: ExtractEvalOptions): Promise<void> {
  if (o.ctx !== undefined && !(Number.isInteger(o.ctx) && o.ctx >= 2)) throw new UsageError(`eval ctx must be an integer of at least 2, got ${o.ctx}`);
  if (o.maxTokens !== undefined && !(Number.isInteger(o.maxTokens) && o.maxTokens >= 1)) throw new UsageError(`eval maxTokens must be a positive integer, got ${o.maxTokens}`);
  await access(o.text).catch((err: unknown) => {
    throw withPath(err, o.text);
  });
}

export interface EvaluateExtractionParams {
  modelA: string;
  modelB: string;
  /** the PEFT adapter folder written for A */
  adapter: string;
  eval: ExtractEvalOptions;
  backend?: LinalgBackend;
  onProgress?: OnProgress;
}

export async function evaluateExtraction(p: EvaluateExtractionParams): Promise<ExtractEvalReport> {
  const started = Date.now();
  const [adapted, plain] = await evaluateAdapterSets({
    model: p.modelA,
    adapterSets: [[{ dir: p.adapter }], []],
    text: p.eval.text,
    lines: p.eval.lines,
    ctx: p.eval.ctx,
    maxTokens: p.eval.maxTokens,
    reference: { model: p.modelB },
    backend: p.backend,
    onProgress: p.onProgress && ((e) => p.onProgress!({ ...e, phase: 'eval' })),
  });
  const ref = adapted!.reference!;
  return {
    text: p.eval.text,
    mode: p.eval.lines ? 'lines' : 'text',
    ctx: adapted!.ctx!,
    windows: adapted!.windows,
    scoredPositions: adapted!.scoredPositions,
    perplexity: { b: ref.perplexity, a: plain!.perplexity, aPlusAdapter: adapted!.perplexity },
    kl: ref.kl.forward,
    klWithoutAdapter: plain!.reference!.kl.forward,
    top1Agreement: ref.top1Agreement,
    top1AgreementWithoutAdapter: plain!.reference!.top1Agreement,
    seconds: (Date.now() - started) / 1000,
  };
}
