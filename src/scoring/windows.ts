/**
 * Token streams and the windows perplexity is measured on.
 *
 * Two ways to turn a text into a stream:
 * - whole text (default): the file encoded as one text, without special tokens;
 * - lines (`lines: true`): each line encoded on its own and followed by the model's EOS, as the
 *   tinyfam references and many published numbers do for sentence-per-line corpora.
 *
 * Windows: `ctx` tokens each, starting every `stride` tokens (stride = ctx: non-overlapping);
 * a final window shorter than ctx is dropped (as llama.cpp's perplexity tool does). Every window
 * is an independent sequence, prefixed with BOS where the tokenizer adds one (llama.cpp puts BOS
 * at the start of each chunk; the HF perplexity guide's sliding window scores the same targets).
 * Scored targets: in the first window every token the model predicts (all ctx tokens after a
 * BOS, ctx − 1 without); in a later window only the `stride` tokens no earlier window scored,
 * the HF guide's rule, so each token is scored once, with ctx − stride tokens of context at least
 * (without a BOS a window's first token is never scored: nothing before it predicts it).
 */
import { InputError } from '../errors.js';
import { readInputText } from '../io/inputs.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';

export interface Window {
  /** input ids (BOS first when the model has one) */
  input: number[];
  /** per input position: the id it must predict, or −1 when that position is not scored */
  targets: Int32Array;
}

/** The token stream of `text`; in lines mode, encoding stops once `maxTokens` are there. */
export function textStream(tok: Tokenizer, text: string, lines: boolean, maxTokens = Infinity): number[] {
  if (!lines) return tok.encode(text, { addSpecialTokens: false }).slice(0, maxTokens);
  const parts = text.split('\n');
  if (parts.length > 0 && parts[parts.length - 1] === '') parts.pop();
  const out: number[] = [];
  for (const line of parts) {
    if (out.length >= maxTokens) break;
    for (const id of tok.encode(line, { addSpecialTokens: false })) out.push(id);
    out.push(tok.eosId);
  }
  return out.slice(0, maxTokens);
}

export function windows(stream: readonly number[], ctx: number, stride: number, bos: number | undefined): Window[] {
  const out: Window[] = [];
  for (let start = 0; start + ctx <= stream.length; start += stride) {
    const body = stream.slice(start, start + ctx);
    const input = bos === undefined ? body : [bos, ...body];
    const shift = input.length - body.length; // 1 with BOS
    const targets = new Int32Array(input.length).fill(-1);
    // a window after the first scores only its last `stride` tokens; without a BOS, nothing predicts the first
    const firstScored = Math.max(start === 0 ? 0 : ctx - stride, bos === undefined ? 1 : 0);
    for (let t = firstScored; t < ctx; t++) targets[t + shift - 1] = body[t]!;
    out.push({ input, targets });
  }
  return out;
}

/** One prompt scored on its own: BOS first where the tokenizer adds one, every later position scored. */
export function promptWindow(ids: readonly number[], bos: number | undefined): Window {
  const input = bos === undefined ? [...ids] : [bos, ...ids];
  const targets = new Int32Array(input.length).fill(-1);
  for (let i = 0; i + 1 < input.length; i++) targets[i] = input[i + 1]!;
  return { input, targets };
}

/** Prompts, one per line (blank lines skipped), from `text` read out of `file`; an InputError when there are none. */
export function promptLines(text: string, file: string): string[] {
  const prompts = text.split('\n').filter((l) => l.trim() !== '');
  if (prompts.length === 0) throw new InputError(`${file}: no prompts (one per line)`, { file });
  return prompts;
}

/** The prompts of a file (see promptLines), noted as an input of the run. */
export async function readPrompts(file: string): Promise<string[]> {
  return promptLines(await readInputText(file), file);
}
