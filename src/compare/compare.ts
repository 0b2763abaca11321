/**
 * `compare`: the same prompts answered by two models (each a folder plus adapters applied on the
 * fly), greedily and deterministically, side by side. One model is loaded at a time: the first
 * answers every prompt, then the second. A model whose f32 weights fit the memory budget is kept
 * resident; a larger one is streamed layer by layer for every token (slow, with a warning).
 */
import { writeFile } from 'node:fs/promises';
import { freemem } from 'node:os';
import { join } from 'node:path';
import { withAtomicOutput } from '../io/atomic.js';
import { withInputTracking } from '../io/inputs.js';
import { getBackend } from '../linalg/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import type { AdapterSpec } from '../lora/adapter-spec.js';
import { Engine } from '../model/engine.js';
import { generateGreedy } from '../model/generate.js';
import { readPrompts } from '../scoring/windows.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { UsageError } from '../errors.js';
import type { OnProgress } from '../progress.js';
import type { HubOptions } from '../io/hub/index.js';
import { localAdapters, localInput } from '../io/local-inputs.js';

export interface CompareSide {
  model: string;
  adapters?: AdapterSpec[];
}

export interface CompareOptions {
  model: CompareSide;
  against: CompareSide;
  /** a file with one prompt per line */
  prompts: string;
  /** default 128 */
  maxNewTokens?: number;
  /** render each prompt as a user turn with the model's chat template */
  chat?: boolean;
  /** keep generating after an end-of-sequence token */
  ignoreEos?: boolean;
  /** folder for results.jsonl and results.md (written atomically) */
  out?: string;
  overwrite?: boolean;
  /** bytes the weights of one model may take in memory (as f32); default 70 % of the free memory */
  maxMemory?: number;
  /** a model over the budget: one line per such model, before it answers */
  onWarning?: (message: string) => void;
  backend?: LinalgBackend;
  /** how Hub ids among the inputs are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
  onProgress?: OnProgress;
}

export interface Answer {
  text: string;
  ids: number[];
  /** smallest top-1 − top-2 logit margin over the answer: near-ties are where two runs may part */
  minMargin: number;
  tokensPerSecond: number;
}

export interface CompareRow {
  prompt: string;
  /** the text the models were given (the chat template's rendering with --chat) */
  input: string;
  model: Answer;
  against: Answer;
  /** generated tokens both sides share from the start */
  commonPrefix: number;
}

export interface CompareReport {
  model: CompareSide;
  against: CompareSide;
  maxNewTokens: number;
  chat: boolean;
  rows: CompareRow[];
  /** the memory budget (bytes) and the models streamed for being over it */
  memory: { budget: number; streamed: string[] };
  warnings: string[];
  files: string[];
  seconds: number;
}

/** Share of the free memory the weights may take by default: the rest for activations, the KV cache and the system. */
const FREE_SHARE = 0.7;

async function answerAll(
  side: CompareSide,
  prompts: string[],
  opts: CompareOptions & { maxMemory: number },
  backend: LinalgBackend,
  onPrompt: (i: number) => void,
  warn: (message: string) => void,
): Promise<{ inputs: string[]; answers: Answer[] }> {
  const engine = await Engine.open(side.model, side.adapters ?? [], backend);
  try {
    const bytes = engine.f32Bytes();
    if (bytes <= opts.maxMemory) engine.resident();
    else {
      warn(
        `${side.model}: its weights take ${gb(bytes)} as f32, over the memory budget of ${gb(opts.maxMemory)} (--max-memory); ` +
          'generation streams them and re-reads every layer for every token, which is slow',
      );
    }
    const tok = await loadTokenizer(side.model);
    const inputs = prompts.map((p) => (opts.chat ? tok.applyChatTemplate([{ role: 'user', content: p }], { addGenerationPrompt: true }) : p));
    const answers: Answer[] = [];
    for (let i = 0; i < prompts.length; i++) {
      // a chat template writes its own BOS where the model wants one
      const ids = opts.chat ? tok.encode(inputs[i]!, { addSpecialTokens: false }) : tok.encode(inputs[i]!, { addSpecialTokens: true });
      const r = await generateGreedy(engine, ids, { maxNewTokens: opts.maxNewTokens ?? 128, stopIds: opts.ignoreEos ? [] : tok.stopIds });
      answers.push({
        text: tok.decode(r.newIds, { skipSpecialTokens: true }),
        ids: r.newIds,
        minMargin: Math.min(...r.margins),
        tokensPerSecond: r.tokensPerSecond,
      });
      onPrompt(i);
    }
    return { inputs, answers };
  } finally {
    await engine.close();
  }
}

export async function compareModels(params: CompareOptions): Promise<CompareReport> {
  const local = async (side: CompareSide): Promise<CompareSide> => ({
    model: await localInput(side.model, 'model', params),
    adapters: side.adapters && (await localAdapters(side.adapters, params)),
  });
  const opts = { ...params, model: await local(params.model), against: await local(params.against) };
  const started = Date.now();
  const maxNewTokens = opts.maxNewTokens ?? 128;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new UsageError(`--max-new-tokens must be a positive integer, got ${maxNewTokens}`);
  return withInputTracking(async () => {
    const backend = opts.backend ?? (await getBackend());
    const prompts = await readPrompts(opts.prompts);
    const maxMemory = opts.maxMemory ?? Math.floor(FREE_SHARE * freemem());
    if (!(maxMemory > 0)) throw new UsageError(`--max-memory must be a positive size, got ${maxMemory}`);
    const warnings: string[] = [];
    const streamed: string[] = [];
    const warn = (side: CompareSide) => (message: string) => {
      warnings.push(message);
      streamed.push(side.model);
      opts.onWarning?.(message);
    };
    const total = 2 * prompts.length;
    const tick = (side: string, offset: number) => (i: number) => opts.onProgress?.({ phase: side, index: offset + i, total, name: prompts[i]!.slice(0, 40) });
    const a = await answerAll(opts.model, prompts, { ...opts, maxNewTokens, maxMemory }, backend, tick('model', 0), warn(opts.model));
    const b = await answerAll(opts.against, prompts, { ...opts, maxNewTokens, maxMemory }, backend, tick('against', prompts.length), warn(opts.against));
    const rows: CompareRow[] = prompts.map((prompt, i) => {
      const x = a.answers[i]!;
      const y = b.answers[i]!;
      let common = 0;
      while (common < x.ids.length && common < y.ids.length && x.ids[common] === y.ids[common]) common++;
      return { prompt, input: a.inputs[i]!, model: x, against: y, commonPrefix: common };
    });
    const report: CompareReport = { model: opts.model, against: opts.against, maxNewTokens, chat: opts.chat ?? false, rows, memory: { budget: maxMemory, streamed }, warnings, files: [], seconds: 0 };
    if (opts.out) {
      await withAtomicOutput(opts.out, { overwrite: opts.overwrite }, async (tmp) => {
        await writeFile(join(tmp, 'results.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
        await writeFile(join(tmp, 'results.md'), compareMarkdown(report));
      });
      report.files = [join(opts.out, 'results.jsonl'), join(opts.out, 'results.md')];
    }
    report.seconds = (Date.now() - started) / 1000;
    return report;
  });
}

function gb(bytes: number): string {
  return `${(bytes / 1e9).toFixed(bytes < 1e8 ? 3 : 1)} GB`;
}

function sideName(s: CompareSide): string {
  return s.adapters?.length ? `${s.model} + ${s.adapters.map((a) => a.dir + (a.weight !== undefined ? `:${a.weight}` : '')).join(' + ')}` : s.model;
}

/** A table cell: one line, pipes escaped. */
function cell(text: string): string {
  return text.replace(/\r?\n/g, '↵').replace(/\|/g, '\\|');
}

/** The side-by-side Markdown: one row per prompt, both answers and their speeds. */
export function compareMarkdown(r: CompareReport): string {
  const lines = [
    `| prompt | ${cell(sideName(r.model))} | ${cell(sideName(r.against))} |`,
    '|---|---|---|',
    ...r.rows.map(
      (row) =>
        `| ${cell(row.prompt)} | ${cell(row.model.text)} (${row.model.tokensPerSecond.toFixed(1)} tok/s) | ${cell(row.against.text)} (${row.against.tokensPerSecond.toFixed(1)} tok/s) |`,
    ),
  ];
  const same = r.rows.filter((x) => x.commonPrefix === Math.max(x.model.ids.length, x.against.ids.length)).length;
  lines.push('', `${same} of ${r.rows.length} answers identical; greedy, ${r.maxNewTokens} new tokens at most${r.chat ? ', chat template' : ''}.`);
  return lines.join('\n') + '\n';
}
