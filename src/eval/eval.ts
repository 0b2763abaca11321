/**
 * `eval`: perplexity of a model (plus adapters, applied on the fly) over a text or a prompt list,
 * and, given a reference model, how far its next-token distributions are from the reference's:
 * KL both ways, the symmetric sum, top-1 agreement and the perplexity ratio.
 *
 * Windows go through the engine in groups: every window of a group passes layer l before layer
 * l + 1 is read, so a model is read once per group, and a group holds as many windows as the
 * activation budget allows (`batchTokens`).
 */
import { readInputText } from '../io/inputs.js';
import { getBackend } from '../linalg/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import type { AdapterSpec } from '../lora/adapter-spec.js';
import { Engine } from '../model/engine.js';
import { loadTokenizer, type Tokenizer } from '../tokenizer/tokenizer.js';
import { InputError, UsageError } from '../errors.js';
import type { OnProgress } from '../progress.js';
import { scoreWindows, summarize, type KlPositions } from '../scoring/scoring.js';
import { promptLines, promptWindow, textStream, windows as cutWindows, type Window } from '../scoring/windows.js';
import type { HubOptions } from '../io/hub/index.js';
import { localAdapters, localInput } from '../io/local-inputs.js';

export type { KlPositions } from '../scoring/scoring.js';

export interface EvalOptions {
  /** model folder */
  model: string;
  /** applied on the fly, in order, each with its weight */
  adapters?: AdapterSpec[];
  /** a text file: perplexity over windows of its token stream */
  text?: string;
  /** a file of prompts, one per line, each scored on its own */
  prompts?: string;
  /** prompts given directly instead of a file (library callers) */
  promptTexts?: readonly string[];
  /** each line of `text` is a sentence followed by EOS (the tinyfam / sentence-corpus convention) */
  lines?: boolean;
  /** window length in tokens (default 512) */
  ctx?: number;
  /** tokens between window starts (default ctx: non-overlapping windows) */
  stride?: number;
  /** use only the first N tokens of the stream */
  maxTokens?: number;
  /** compare next-token distributions with this model (same tokenizer) */
  reference?: { model: string; adapters?: AdapterSpec[] };
  /** whole tensors of the model replaced (same shapes): evaluate a candidate that exists only in memory */
  overrides?: ReadonlyMap<string, Float32Array>;
  /** approximate KL over the reference's K most likely tokens plus the rest as one bucket (default: exact, whole vocabulary) */
  klTopK?: number;
  /** positions KL and top-1 agreement are measured on (default all scored positions) */
  klPositions?: KlPositions;
  /** hidden-state rows per group of windows (default from the model's width: about 64 MB of activations) */
  batchTokens?: number;
  backend?: LinalgBackend;
  /** how Hub ids among the inputs are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
  onProgress?: OnProgress;
}

export interface PerplexityStats {
  perplexity: number;
  meanNll: number;
  scoredPositions: number;
}

export interface PromptScore extends PerplexityStats {
  prompt: string;
  tokens: number;
}

export interface ReferenceComparison {
  model: string;
  adapters: AdapterSpec[];
  perplexity: number;
  meanNll: number;
  /** model ÷ reference */
  pplRatio: number;
  kl: {
    /** mean KL(reference ‖ model), nats */
    forward: number;
    /** mean KL(model ‖ reference) */
    reverse: number;
    /** the mean of forward and reverse */
    symmetric: number;
    positions: number;
    topK?: number;
    on: string;
  };
  /** share of measured positions where both models' most likely token is the same */
  top1Agreement: number;
}

export interface EvalReport extends PerplexityStats {
  model: string;
  adapters: AdapterSpec[];
  source: { file: string; mode: 'text' | 'lines' | 'prompts' };
  ctx?: number;
  stride?: number;
  streamTokens?: number;
  windows: number;
  /** mean NLL in bits ÷ the stream's UTF-8 bytes per token (the stream decoded back to text) */
  bitsPerByte?: number;
  prompts?: PromptScore[];
  reference?: ReferenceComparison;
  tokenizer: { bosId?: number; eosId: number; eosSource: string };
  seconds: number;
}

export async function evaluate(params: EvalOptions): Promise<EvalReport> {
  const { adapters, ...rest } = params;
  return (await evaluateAdapterSets({ ...rest, adapterSets: [adapters ?? []] }))[0]!;
}

/**
 * `evaluate` of one model under several adapter sets, each against the same reference: one report
 * per set, each the one `evaluate` gives for it, with the reference's forward passes and logits
 * computed once for all the sets.
 */
export async function evaluateAdapterSets(params: Omit<EvalOptions, 'adapters'> & { adapterSets: AdapterSpec[][] }): Promise<EvalReport[]> {
  const reference = params.reference && { ...params.reference, model: await localInput(params.reference.model, 'model', params), adapters: params.reference.adapters && (await localAdapters(params.reference.adapters, params)) };
  const adapterSets: AdapterSpec[][] = [];
  for (const set of params.adapterSets) adapterSets.push(await localAdapters(set, params));
  const opts = { ...params, model: await localInput(params.model, 'model', params), adapterSets, reference };
  const started = Date.now();
  const sources = [opts.text, opts.prompts, opts.promptTexts].filter((x) => x !== undefined).length;
  if (sources !== 1) throw new UsageError('eval: give one of a text file (--text), a prompt file (--prompts) or prompt texts');
  const ctx = opts.ctx ?? 512;
  const stride = opts.stride ?? ctx;
  if (!Number.isInteger(ctx) || ctx < 2) throw new UsageError(`--ctx must be an integer of at least 2, got ${ctx}`);
  if (!Number.isInteger(stride) || stride < 1 || stride > ctx) throw new UsageError(`--stride must be an integer between 1 and --ctx (${ctx}), got ${stride}`);
  const backend = opts.backend ?? (await getBackend());
  const opened: Array<{ close(): Promise<void> }> = [];
  const keep = <C extends { close(): Promise<void> }>(r: C): C => {
    opened.push(r);
    return r;
  };
  try {
    const engines: Engine[] = [];
    for (const set of opts.adapterSets) engines.push(await Engine.open(opts.model, set, backend, keep, opts.overrides));
    const tok = await loadTokenizer(opts.model);
    const ref = opts.reference ? await Engine.open(opts.reference.model, opts.reference.adapters ?? [], backend, keep) : undefined;
    const vocab = engines[0]!.spec.vocab;
    if (ref && ref.spec.vocab !== vocab) {
      throw new InputError(`${opts.reference!.model} has a vocabulary of ${ref.spec.vocab} rows and ${opts.model} one of ${vocab}: KL needs two models with the same tokenizer`);
    }
    const bos = tok.addBos ? tok.bosId : undefined;
    const sourceFile = opts.text ?? opts.prompts ?? '(prompts given by the caller)';
    const text = opts.promptTexts ? opts.promptTexts.join('\n') : await readInputText(sourceFile);
    let wins: Window[];
    let promptTexts: string[] | undefined;
    let streamTokens: number | undefined;
    let bytesPerToken: number | undefined;
    if (opts.text === undefined) {
      promptTexts = promptLines(text, sourceFile);
      wins = promptTexts.map((p) => promptWindow(tok.encode(p, { addSpecialTokens: false }), bos));
    } else {
      const stream = textStream(tok, text, opts.lines ?? false, opts.maxTokens);
      streamTokens = stream.length;
      bytesPerToken = bytesPerTokenOf(tok, stream);
      if (stream.length < ctx) {
        throw new InputError(`${sourceFile}: ${stream.length} tokens, fewer than one window of ${ctx}; lower --ctx or give a longer text`, { file: sourceFile });
      }
      wins = cutWindows(stream, ctx, stride, bos);
    }
    const longest = Math.max(...wins.map((w) => w.input.length));
    for (const e of [...engines, ref]) {
      const max = e?.spec.maxPositions;
      if (e && max !== undefined && longest > max) {
        throw new InputError(`${e.path}: a window of ${longest} positions exceeds the model's max_position_embeddings (${max}); lower --ctx`);
      }
    }
    const perSet = await scoreWindows(engines, ref, wins, opts);
    const seconds = (Date.now() - started) / 1000;
    return perSet.map((scores, k) => {
      const totals = summarize(scores, opts, ref !== undefined);
      const { scored, meanNll } = totals;
      const report: EvalReport = {
        model: opts.model,
        adapters: opts.adapterSets[k]!,
        source: { file: sourceFile, mode: opts.text === undefined ? 'prompts' : opts.lines ? 'lines' : 'text' },
        ...(opts.text !== undefined ? { ctx, stride, streamTokens } : {}),
        windows: wins.length,
        scoredPositions: scored,
        perplexity: Math.exp(meanNll),
        meanNll,
        ...(bytesPerToken ? { bitsPerByte: (meanNll / Math.LN2) / bytesPerToken } : {}),
        tokenizer: { bosId: bos, eosId: tok.eosId, eosSource: tok.sources.eosId },
        seconds,
      };
      if (promptTexts) {
        report.prompts = promptTexts.map((prompt, i) => {
          const s = scores[i]!;
          return { prompt, tokens: wins[i]!.input.length, scoredPositions: s.scored, meanNll: s.nll / s.scored, perplexity: Math.exp(s.nll / s.scored) };
        });
      }
      if (ref) report.reference = { model: opts.reference!.model, adapters: opts.reference!.adapters ?? [], ...totals.reference! };
      return report;
    });
  } finally {
    for (const r of opened.reverse()) await r.close().catch(() => undefined);
  }
}

/**
 * UTF-8 bytes of text per stream token, for bits per byte: the stream decoded back to text (each
 * EOS separator of lines mode counted as the newline it stands for), so a stream cut at
 * --max-tokens is measured on the text it covers.
 */
function bytesPerTokenOf(tok: Tokenizer, stream: number[]): number {
  const separators = stream.filter((id) => id === tok.eosId).length;
  return (Buffer.byteLength(tok.decode(stream, { skipSpecialTokens: true }), 'utf8') + separators) / stream.length;
}

