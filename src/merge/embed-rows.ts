/**
 * Embedding rows (embed_tokens, lm_head) of each model moved into the output vocabulary, as
 * mergekit's tokenizer/embed.py does before the merge method runs: a model's row for a token it
 * has is kept; a token it lacks gets a default row, which is
 *   - the tokens: block's source for that token (a model's row, a model's other token, or zeros;
 *     `force` makes every model take it),
 *   - else the row of the one model that has the token,
 *   - else base_model's row when it has the token,
 *   - else the mean of the rows of the models that have it (zeros when none has: a note says so).
 * Rows past the vocabulary (pad_to_multiple_of) are each model's mean row.
 * The planner builds a RowRemap per tensor; the readers apply it as the inputs are read
 * (compute.ts, worker.ts), so the methods only ever see rows in the output's order.
 */
import type { ModelRef, TokenSetting } from './config.js';
import type { OutputVocab } from './vocab.js';
import { UsageError } from '../errors.js';

export interface RowRemap {
  /** output rows: the vocabulary, then padding */
  rows: number;
  vocab: number;
  /** per input: output row → its own row, or -1 (the default row) */
  own: Int32Array[];
  /** per output row, the (input, row) pairs whose mean is the default row; none: zeros (CSR) */
  start: Int32Array;
  input: Int32Array;
  row: Int32Array;
}

export interface RowRemapParams {
  vocab: OutputVocab;
  tokens: ReadonlyMap<string, TokenSetting>;
  padToMultipleOf?: number;
  tensor: string;
  /** opened-model index of each input */
  models: readonly number[];
  /** index of base_model among the inputs */
  base: number | undefined;
  /** stored rows of each input */
  storedRows: readonly number[];
  labels: readonly string[];
  indexOf(ref: ModelRef): number;
}

/** The output rows and, per input, where each comes from; notes for tokens no model has. */
export function planRowRemap(p: RowRemapParams): { remap: RowRemap; notes: string[] } {
  const { size } = p.vocab;
  const pad = p.padToMultipleOf;
  const rows = pad && size % pad ? Math.ceil(size / pad) * pad : size;
  const byId: Array<string | undefined> = new Array(size);
  for (const [t, id] of p.vocab.tokenizer.vocab) byId[id] = t;
  const maps = p.models.map((m) => p.vocab.rows[m]);
  const own = maps.map((m) => Int32Array.from(m));
  const start = new Int32Array(size + 1);
  const input: number[] = [];
  const row: number[] = [];
  const missing: string[] = [];
  const inputOf = (ref: ModelRef, token: string): number => {
    let opened = -1;
    try {
      opened = p.indexOf(ref);
    } catch {
      // a folder no model of the merge is: said below, at the token's line
    }
    const i = opened < 0 ? -1 : p.models.indexOf(opened);
    if (i < 0) throw new UsageError(`${ref.where}: the row of token ${JSON.stringify(token)} comes from "${ref.name}", which is not merged into ${p.tensor}: name one of the merged models`);
    return i;
  };
  for (let t = 0; t < size; t++) {
    start[t] = input.length;
    const token = byId[t];
    const cfg = token === undefined ? undefined : p.tokens.get(token);
    if (cfg?.force) own.forEach((o) => (o[t] = -1));
    if (!own.some((o) => o[t] < 0)) continue;
    if (cfg && token !== undefined) {
      const src = cfg.source;
      if (src.kind === 'zero') continue;
      const i = inputOf(src.model, token);
      let r: number;
      if (src.kind === 'model') {
        r = maps[i][t];
        if (r < 0) throw new UsageError(`${cfg.where}: token ${JSON.stringify(token)} is not in the vocabulary of "${src.model.name}"; take it from a model that has it, or use {kind: model_token}`);
      } else {
        const id = src.tokenId ?? p.vocab.vocabs[p.models[i]].get(src.token as string);
        if (id === undefined) throw new UsageError(`${cfg.where}: token ${JSON.stringify(src.token)} is not in the vocabulary of "${src.model.name}"`);
        if (id >= p.storedRows[i]) throw new UsageError(`${cfg.where}: token id ${id} is out of range for "${src.model.name}" (${p.tensor} has ${p.storedRows[i]} rows)`);
        r = id;
      }
      input.push(i);
      row.push(r);
      continue;
    }
    const present = maps.flatMap((m, i) => (m[t] >= 0 ? [i] : []));
    if (present.length === 0) missing.push(JSON.stringify(token ?? `#${t}`));
    const from = present.length > 1 && p.base !== undefined && maps[p.base][t] >= 0 ? [p.base] : present;
    for (const i of from) {
      input.push(i);
      row.push(maps[i][t]);
    }
  }
  start[size] = input.length;
  maps.forEach((m, i) => {
    const beyond = m.findIndex((r) => r >= p.storedRows[i]);
    if (beyond >= 0) throw new Error(`${p.labels[i]}: token ${JSON.stringify(byId[beyond])} has id ${m[beyond]}, but ${p.tensor} has only ${p.storedRows[i]} rows: its config.json vocab_size and weights disagree`);
  });
  const notes = missing.length ? [`${p.tensor}: ${missing.length} token(s) are in no model's vocabulary (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''}): their rows are zeros, as in mergekit`] : [];
  return { remap: { rows, vocab: size, own, start, input: Int32Array.from(input), row: Int32Array.from(row) }, notes };
}

/** Fills `outs[i]` (rows × cols) from the stored `inputs[i]` by `remap`. */
export function applyRowRemap(remap: RowRemap, cols: number, inputs: readonly Float32Array[], outs: readonly Float32Array[]): void {
  outs.forEach((out, i) => {
    const own = remap.own[i];
    for (let t = 0; t < remap.vocab; t++) {
      const dst = out.subarray(t * cols, (t + 1) * cols);
      const r = own[t];
      if (r >= 0) {
        dst.set(inputs[i].subarray(r * cols, (r + 1) * cols));
        continue;
      }
      dst.fill(0);
      const a = remap.start[t];
      const b = remap.start[t + 1];
      for (let k = a; k < b; k++) {
        const src = inputs[remap.input[k]].subarray(remap.row[k] * cols, (remap.row[k] + 1) * cols);
        for (let c = 0; c < cols; c++) dst[c] += src[c];
      }
      if (b - a > 1) for (let c = 0; c < cols; c++) dst[c] /= b - a;
    }
    if (remap.rows === remap.vocab) return;
    // padding rows: the mean of the model's rows (mergekit, after Hewitt's vocabulary-expansion note)
    const mean = new Float64Array(cols);
    for (let t = 0; t < remap.vocab; t++) for (let c = 0; c < cols; c++) mean[c] += out[t * cols + c];
    const row = Float32Array.from(mean, (v) => v / remap.vocab);
    for (let t = remap.vocab; t < remap.rows; t++) out.set(row, t * cols);
  });
}
