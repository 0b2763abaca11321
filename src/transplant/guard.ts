/**
 * The perplexity guard of transplant, built to be asked many times (one search trial after
 * another): the base is opened once, the prompts tokenized once, and the base's own final hidden
 * states — the reference every candidate is compared with — computed once. A candidate that only
 * changes lm_head rows reuses the final hidden states of its embedding table, which it shares with
 * an earlier candidate: only the head products are recomputed.
 */
import { freemem } from 'node:os';
import type { LinalgBackend } from '../linalg/backend.js';
import { Engine } from '../model/engine.js';
import { groupRows, groups, hiddenStates, referenceChunk, scoreWindow, scoredPositions, summarize, type KlPositions, type ScoreTotals, type WindowScore } from '../scoring/scoring.js';
import { promptWindow, type Window } from '../scoring/windows.js';
import type { Batch } from '../model/layer.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';

export const EMBED = 'model.embed_tokens.weight';
export const HEAD = 'lm_head.weight';

export interface Candidate {
  embed?: Float32Array;
  head?: Float32Array;
}

export interface GuardStats {
  /** forward passes through the layers */
  forwards: number;
  /** candidates scored from cached hidden states */
  cachedHidden: number;
}

export interface GuardOptions {
  klTopK?: number;
  klPositions?: KlPositions;
  /** reuse final hidden states across candidates (default true; false measures what the cache saves) */
  cacheHidden?: boolean;
}

/** The base stays in memory across trials when its f32 weights take at most this share of free memory. */
const RESIDENT_SHARE = 0.5;

export class Guard {
  readonly stats: GuardStats = { forwards: 0, cachedHidden: 0 };
  /** final hidden states per embedding table (the base's under `undefined`) */
  private readonly hidden = new Map<Float32Array | undefined, Batch[]>();

  private constructor(
    private readonly engine: Engine,
    private readonly wins: Window[],
    private readonly plan: Window[][],
    private readonly opts: GuardOptions,
  ) {}

  /** `tok` is the base's tokenizer, loaded once by the caller. */
  static async open(
    base: string,
    tok: Tokenizer,
    prompts: readonly string[],
    backend: LinalgBackend,
    opts: GuardOptions,
    keep: <C extends { close(): Promise<void> }>(r: C) => C,
  ): Promise<Guard> {
    const engine = await Engine.open(base, [], backend, keep);
    // the same weights serve every trial: keep them when they fit, else each check streams them
    if (engine.f32Bytes() <= RESIDENT_SHARE * freemem()) engine.resident();
    const bos = tok.addBos ? tok.bosId : undefined;
    const wins = prompts.map((p) => promptWindow(tok.encode(p, { addSpecialTokens: false }), bos)).filter((w) => w.input.length > 1);
    return new Guard(engine, wins, groups(wins, groupRows(engine.spec.hidden)), opts);
  }

  private async statesOf(embed: Float32Array | undefined): Promise<Batch[]> {
    const hit = this.opts.cacheHidden === false ? undefined : this.hidden.get(embed);
    if (hit) {
      this.stats.cachedHidden++;
      return hit;
    }
    this.engine.setOverrides(embed ? new Map([[EMBED, embed]]) : undefined);
    const out: Batch[] = [];
    for (const group of this.plan) out.push(await hiddenStates(this.engine, group));
    this.stats.forwards++;
    // the base's states and the latest candidate's: a search moves on from a table once it is judged
    for (const key of [...this.hidden.keys()]) if (key !== undefined) this.hidden.delete(key);
    this.hidden.set(embed, out);
    return out;
  }

  /** The candidate's perplexity and KL against the base on the prompts. */
  async check(c: Candidate): Promise<ScoreTotals> {
    const refStates = await this.statesOf(undefined);
    this.engine.setOverrides(undefined);
    const refHead = await this.engine.head();
    const states = c.embed || this.opts.cacheHidden === false ? await this.statesOf(c.embed) : refStates;
    if (!c.embed && this.opts.cacheHidden !== false) this.stats.cachedHidden++;
    const overrides = new Map<string, Float32Array>();
    if (c.embed) overrides.set(EMBED, c.embed);
    if (c.head) overrides.set(HEAD, c.head);
    this.engine.setOverrides(overrides);
    const head = await this.engine.head();
    const scores: WindowScore[] = [];
    for (let g = 0; g < this.plan.length; g++) {
      const group = this.plan[g]!;
      for (let w = 0; w < group.length; w++) {
        const win = group[w]!;
        const { klFrom } = scoredPositions(win, this.opts);
        const ref = { engine: this.engine, head: refHead, states: refStates[g]! };
        const [score] = await scoreWindow([{ engine: this.engine, head, states: states[g]! }], win, w, this.opts, (c0, part) => referenceChunk(ref, win, w, part, Math.max(0, klFrom - c0)));
        scores.push(score!);
      }
    }
    this.engine.setOverrides(undefined);
    return summarize(scores, this.opts, true);
  }

  get prompts(): number {
    return this.wins.length;
  }
}
