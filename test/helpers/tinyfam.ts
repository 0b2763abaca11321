/**
 * ../shared/testdata/tinyfam: small genuinely trained Llama / Qwen2 checkpoints with real
 * tokenizers and PyTorch reference numbers (its README says how each number was made).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from './cli.js';

export const TINYFAM = join(REPO_ROOT, '..', 'shared', 'testdata', 'tinyfam');

/** The token stream of one text file for one tokenizer family. */
export interface TinyfamStream {
  stream_tokens: number;
  windows: number;
  scored_positions: number;
  first_window_ids: number[];
}

export interface TinyfamGreedy {
  prompt: string;
  input_ids: number[];
  new_ids: number[];
  margins: number[];
  text: string;
  full_text: string;
}

/** The parts of reference.json the tests read (it holds more). */
export interface TinyfamReference {
  perplexity: Record<
    string,
    { llama: TinyfamStream; qwen: TinyfamStream; models: Record<string, { ppl: number; mean_nll: number; window_mean_nll_first8: number[] }> }
  >;
  kl: Record<string, { file: string; windows: number; positions: number; mean: number }>;
  debug_top5: Record<string, { input_ids: number[]; positions: Array<{ pos: number; top5_ids: number[]; top5_logits: number[] }> }>;
  greedy: { prompts: string[]; new_tokens: number; models: Record<string, TinyfamGreedy[]> };
}

let reference: Promise<TinyfamReference> | undefined;
/** reference.json, parsed once per test process. */
export function tinyfamReference(): Promise<TinyfamReference> {
  reference ??= readFile(join(TINYFAM, 'reference.json'), 'utf8').then((t) => JSON.parse(t) as TinyfamReference);
  return reference;
}

/** A tinyfam text file as its README says: UTF-8, split on "\n" only, the empty piece after the last "\n" dropped. */
export async function tinyfamLines(name: string): Promise<string[]> {
  const lines = (await readFile(join(TINYFAM, name), 'utf8')).split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}
