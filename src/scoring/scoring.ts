/**
 * Scoring windows: final hidden states of groups of windows (one pass through the layers per
 * group), next-token NLL from the logits of the scored positions, and against a reference the KL
 * both ways and top-1 agreement. `evaluate` runs these once (the reference's side computed once for
 * all the models it compares); transplant's guard reuses them with cached hidden states and cached
 * reference chunks across trials.
 */
import type { Engine } from '../model/engine.js';
import { batchSequence, type Batch } from '../model/layer.js';
import type { Head } from '../model/head.js';
import type { OnProgress } from '../progress.js';
import { argmax, klDivergence, logSumExp } from './score.js';
import type { Window } from './windows.js';

export type KlPositions = 'all' | { tail: number };

export interface ScoringOptions {
  klTopK?: number;
  klPositions?: KlPositions;
  batchTokens?: number;
  onProgress?: OnProgress;
}

/**
 * Logit rows computed at once: about 128 MB of f32 whatever the vocabulary. A streamed lm_head is
 * read once per such chunk, so the chunk is large: 261 rows at a 128256-token vocabulary, a read
 * of the table for every 261 scored positions rather than every 65.
 */
const LOGIT_FLOATS = 32 << 20;

export interface WindowScore {
  nll: number;
  scored: number;
  klForward: number;
  klReverse: number;
  klPositions: number;
  agree: number;
  refNll: number;
}

export interface ScoreTotals {
  scored: number;
  meanNll: number;
  perplexity: number;
  reference?: {
    perplexity: number;
    meanNll: number;
    /** model ÷ reference */
    pplRatio: number;
    kl: { forward: number; reverse: number; symmetric: number; positions: number; topK?: number; on: string };
    top1Agreement: number;
  };
}

/** Pooled numbers of window scores (reference figures when the scores have a reference). */
export function summarize(scores: readonly WindowScore[], opts: ScoringOptions, withReference: boolean): ScoreTotals {
  const sum = (f: (s: WindowScore) => number) => scores.reduce((a, s) => a + f(s), 0);
  const scored = sum((s) => s.scored);
  const meanNll = sum((s) => s.nll) / scored;
  const out: ScoreTotals = { scored, meanNll, perplexity: Math.exp(meanNll) };
  if (withReference) {
    const refMean = sum((s) => s.refNll) / scored;
    const n = sum((s) => s.klPositions);
    const forward = sum((s) => s.klForward) / n;
    const reverse = sum((s) => s.klReverse) / n;
    out.reference = {
      perplexity: Math.exp(refMean),
      meanNll: refMean,
      pplRatio: Math.exp(meanNll - refMean),
      kl: { forward, reverse, symmetric: (forward + reverse) / 2, positions: n, ...(opts.klTopK ? { topK: opts.klTopK } : {}), on: describePositions(opts.klPositions) },
      top1Agreement: sum((s) => s.agree) / n,
    };
  }
  return out;
}

function describePositions(p: KlPositions | undefined): string {
  return !p || p === 'all' ? 'all scored positions' : `the last ${p.tail} scored positions of each window`;
}

/** Hidden-state rows a group of windows may hold: about 64 MB of f32 activations whatever the width. */
export function groupRows(hidden: number): number {
  return Math.max(512, Math.floor((16 << 20) / hidden));
}

/** Groups of consecutive windows whose rows fit the activation budget. */
export function groups(wins: Window[], budgetRows: number): Window[][] {
  const out: Window[][] = [];
  let current: Window[] = [];
  let rows = 0;
  for (const w of wins) {
    if (current.length > 0 && rows + w.input.length > budgetRows) {
      out.push(current);
      current = [];
      rows = 0;
    }
    current.push(w);
    rows += w.input.length;
  }
  if (current.length > 0) out.push(current);
  return out;
}

/** Final hidden states of every window of a group (one batch through all layers). */
export async function hiddenStates(engine: Engine, group: Window[], onLayer?: (l: number) => void): Promise<Batch> {
  const ids: number[] = [];
  const seqs = [];
  for (const w of group) {
    seqs.push(batchSequence(engine.spec, ids.length, w.input.length));
    for (const id of w.input) ids.push(id);
  }
  const b: Batch = { x: await engine.embed(ids), rows: ids.length, seqs };
  await engine.forward(b, onLayer);
  return b;
}

/** The final hidden states of the scored positions of one window, gathered into rows. */
function scoredRows(b: Batch, seqIndex: number, positions: number[], d: number): Float32Array {
  const s = b.seqs[seqIndex]!;
  const out = new Float32Array(positions.length * d);
  positions.forEach((p, i) => out.set(b.x.subarray((s.offset + p) * d, (s.offset + p + 1) * d), i * d));
  return out;
}

/** One model's side of scoring a group of windows: its engine, its output head and the group's final hidden states. */
export interface ModelStates {
  engine: Engine;
  head: Head;
  states: Batch;
}

/**
 * What comparing a model with the reference needs of one chunk of a window's scored positions:
 * per position the reference's NLL of the target, and at the KL positions among them its logit
 * rows and their log-sum-exps. Computed once, it serves any number of models (several adapter sets
 * in one eval) or candidates (transplant's guard keeps it across trials).
 */
export interface ReferenceChunk {
  nll: Float64Array;
  /** positions of the chunk before its first KL position (rows and lse start after them) */
  skip: number;
  rows: Float32Array;
  lse: Float64Array;
}

/** The reference chunk of a window's scored positions `part`, the chunk starting at the c0-th scored position. */
export type ReferenceSource = (c0: number, part: number[]) => Promise<ReferenceChunk>;

/** The scored positions of a window and the index among them of the first KL position. */
export function scoredPositions(win: Window, opts: ScoringOptions): { positions: number[]; klFrom: number } {
  const positions: number[] = [];
  win.targets.forEach((t, i) => t >= 0 && positions.push(i));
  const tail = opts.klPositions && opts.klPositions !== 'all' ? opts.klPositions.tail : Infinity;
  return { positions, klFrom: Math.max(0, positions.length - tail) };
}

/** Scored positions whose logits are computed at once (see LOGIT_FLOATS). */
export function chunkRows(vocab: number): number {
  return Math.max(1, Math.floor(LOGIT_FLOATS / vocab));
}

/**
 * Every model's scores of every window, each against the reference when there is one: per group
 * of windows one pass through each model's layers and the reference's, and the reference's logits
 * of each chunk of positions computed once for all the models.
 */
export async function scoreWindows(engines: Engine[], ref: Engine | undefined, wins: Window[], opts: ScoringOptions): Promise<WindowScore[][]> {
  const widest = Math.max(...engines.map((e) => e.spec.hidden), ref?.spec.hidden ?? 0);
  const plan = groups(wins, opts.batchTokens ?? groupRows(widest));
  const layers = engines.reduce((a, e) => a + e.spec.layers, 0) + (ref?.spec.layers ?? 0);
  const total = plan.length * layers;
  let step = 0;
  const tick = (name: string) => opts.onProgress?.({ phase: 'layers', index: step++, total, name });
  const name = (m: number) => (engines.length === 1 ? 'model' : `model ${m + 1}`);
  const heads = await Promise.all(engines.map((e) => e.head()));
  const refHead = ref ? await ref.head() : undefined;
  const out: WindowScore[][] = engines.map(() => []);
  for (const group of plan) {
    const models: ModelStates[] = [];
    for (let m = 0; m < engines.length; m++) {
      models.push({ engine: engines[m]!, head: heads[m]!, states: await hiddenStates(engines[m]!, group, (l) => tick(`${name(m)} layer ${l}`)) });
    }
    const refStates = ref ? { engine: ref, head: refHead!, states: await hiddenStates(ref, group, (l) => tick(`reference layer ${l}`)) } : undefined;
    for (let w = 0; w < group.length; w++) {
      const { klFrom } = scoredPositions(group[w]!, opts);
      const source = refStates && ((c0: number, part: number[]) => referenceChunk(refStates, group[w]!, w, part, Math.max(0, klFrom - c0)));
      const scores = await scoreWindow(models, group[w]!, w, opts, source);
      scores.forEach((s, m) => out[m]!.push(s));
    }
  }
  return out;
}

/** The reference's side of the scored positions `part` of window `win`, the w-th of its group; the first `skip` of them are not KL positions. */
export async function referenceChunk(ref: ModelStates, win: Window, w: number, part: number[], skip: number): Promise<ReferenceChunk> {
  const vocab = ref.engine.spec.vocab;
  const logits = await ref.engine.logits(ref.head, scoredRows(ref.states, w, part, ref.engine.spec.hidden), part.length);
  const first = Math.min(skip, part.length);
  const nll = new Float64Array(part.length);
  const lse = new Float64Array(part.length - first);
  for (let i = 0; i < part.length; i++) {
    const row = logits.subarray(i * vocab, (i + 1) * vocab);
    const l = logSumExp(row);
    nll[i] = l - row[win.targets[part[i]!]!]!;
    if (i >= first) lse[i - first] = l;
  }
  // a copy of only the KL rows: a cached chunk must not hold the rest of the logits
  return { nll, skip: first, rows: first === 0 ? logits : logits.slice(first * vocab), lse };
}

/** Each model's score of window `win`, the w-th of its group, against the reference chunks `reference` gives (none: perplexity only). */
export async function scoreWindow(models: ModelStates[], win: Window, w: number, opts: ScoringOptions, reference?: ReferenceSource): Promise<WindowScore[]> {
  const { positions, klFrom } = scoredPositions(win, opts);
  const chunk = chunkRows(models[0]!.engine.spec.vocab);
  const out = models.map((): WindowScore => ({ nll: 0, scored: positions.length, klForward: 0, klReverse: 0, klPositions: 0, agree: 0, refNll: 0 }));
  for (let c0 = 0; c0 < positions.length; c0 += chunk) {
    const part = positions.slice(c0, c0 + chunk);
    const ref = reference && (await reference(c0, part));
    for (let m = 0; m < models.length; m++) {
      const { engine, head, states } = models[m]!;
      const vocab = engine.spec.vocab;
      const s = out[m]!;
      const logits = await engine.logits(head, scoredRows(states, w, part, engine.spec.hidden), part.length);
      for (let i = 0; i < part.length; i++) {
        const row = logits.subarray(i * vocab, (i + 1) * vocab);
        const lse = logSumExp(row);
        s.nll += lse - row[win.targets[part[i]!]!]!;
        if (!ref) continue;
        s.refNll += ref.nll[i]!;
        if (c0 + i < klFrom) continue;
        const k = i - ref.skip;
        const refRow = ref.rows.subarray(k * vocab, (k + 1) * vocab);
        const refLse = ref.lse[k]!;
        s.klForward += klDivergence(refRow, refLse, row, lse, opts.klTopK);
        s.klReverse += klDivergence(row, lse, refRow, refLse, opts.klTopK);
        s.klPositions++;
        if (argmax(row) === argmax(refRow)) s.agree++;
      }
    }
  }
  return out;
}
