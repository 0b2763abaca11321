/**
 * Scoring windows: final hidden states of groups of windows (one pass through the layers per
 * group), next-token NLL from the logits of the scored positions, and against a reference the KL
 * both ways and top-1 agreement. `evaluate` runs these once; transplant's guard reuses them with
 * cached hidden states across trials.
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

export async function scoreWindows(engine: Engine, ref: Engine | undefined, wins: Window[], opts: ScoringOptions): Promise<WindowScore[]> {
  const d = engine.spec.hidden;
  const budget = opts.batchTokens ?? groupRows(Math.max(d, ref?.spec.hidden ?? 0));
  const plan = groups(wins, budget);
  const layers = engine.spec.layers + (ref?.spec.layers ?? 0);
  const total = plan.length * layers;
  let step = 0;
  const tick = (name: string) => opts.onProgress?.({ phase: 'layers', index: step++, total, name });
  const head = await engine.head();
  const refHead = ref ? await ref.head() : undefined;
  const out: WindowScore[] = [];
  for (const group of plan) {
    const b = await hiddenStates(engine, group, (l) => tick(`model layer ${l}`));
    const rb = ref ? await hiddenStates(ref, group, (l) => tick(`reference layer ${l}`)) : undefined;
    for (let w = 0; w < group.length; w++) {
      out.push(await scoreWindow(engine, head, b, ref, refHead, rb, group[w]!, w, opts));
    }
  }
  return out;
}

export async function scoreWindow(
  engine: Engine,
  head: Head,
  b: Batch,
  ref: Engine | undefined,
  refHead: Head | undefined,
  rb: Batch | undefined,
  win: Window,
  w: number,
  opts: ScoringOptions,
): Promise<WindowScore> {
  const positions: number[] = [];
  win.targets.forEach((t, i) => t >= 0 && positions.push(i));
  const tail = opts.klPositions && opts.klPositions !== 'all' ? opts.klPositions.tail : Infinity;
  const klFrom = Math.max(0, positions.length - tail);
  const vocab = engine.spec.vocab;
  const chunk = Math.max(1, Math.floor(LOGIT_FLOATS / vocab));
  const s: WindowScore = { nll: 0, scored: positions.length, klForward: 0, klReverse: 0, klPositions: 0, agree: 0, refNll: 0 };
  for (let c0 = 0; c0 < positions.length; c0 += chunk) {
    const part = positions.slice(c0, c0 + chunk);
    const logits = await engine.logits(head, scoredRows(b, w, part, engine.spec.hidden), part.length);
    const refLogits = ref ? await ref.logits(refHead!, scoredRows(rb!, w, part, ref.spec.hidden), part.length) : undefined;
    for (let i = 0; i < part.length; i++) {
      const row = logits.subarray(i * vocab, (i + 1) * vocab);
      const target = win.targets[part[i]!]!;
      const lse = logSumExp(row);
      s.nll += lse - row[target]!;
      if (!refLogits) continue;
      const refRow = refLogits.subarray(i * vocab, (i + 1) * vocab);
      const refLse = logSumExp(refRow);
      s.refNll += refLse - refRow[target]!;
      if (c0 + i < klFrom) continue;
      s.klForward += klDivergence(refRow, refLse, row, lse, opts.klTopK);
      s.klReverse += klDivergence(row, lse, refRow, refLse, opts.klTopK);
      s.klPositions++;
      if (argmax(row) === argmax(refRow)) s.agree++;
    }
  }
  return s;
}
