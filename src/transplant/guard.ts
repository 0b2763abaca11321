/**
 * The perplexity guard of transplant, built to be asked many times (one search trial after
 * another): the base is opened once, the prompts tokenized once, and the base's own final hidden
 * states and what the comparison needs of its logits — the reference every candidate is compared
 * with — computed once. A candidate that only changes lm_head rows reuses the final hidden states
 * of its embedding table, which it shares with an earlier candidate: only its head products are
 * recomputed.
 */
import { freemem } from 'node:os';
import type { LinalgBackend } from '../linalg/backend.js';
import { Engine } from '../model/engine.js';
import { chunkRows, groupRows, groups, hiddenStates, referenceChunk, scoreWindow, scoredPositions, summarize, type KlPositions, type ModelStates, type ReferenceChunk, type ReferenceSource, type ScoreTotals, type WindowScore } from '../scoring/scoring.js';
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
  /** times the base's logits over the prompts were computed (once when its reference chunks are kept) */
  references: number;
}

export interface GuardOptions {
  klTopK?: number;
  klPositions?: KlPositions;
  /** reuse final hidden states and the base's reference chunks across candidates (default true; false measures what the caches save) */
  cacheHidden?: boolean;
}

/** The base stays in memory across trials when its f32 weights take at most this share of free memory. */
const RESIDENT_SHARE = 0.5;

/**
 * The base's reference chunks are kept across candidates up to this many bytes of logit rows (KL
 * positions × vocabulary × 4): the default 8 tail positions of 1,000 prompts at a 16k vocabulary.
 * Beyond it each candidate recomputes them from the cached hidden states, as without the cache.
 */
const REFERENCE_CACHE_BYTES = 512 << 20;

export class Guard {
  readonly stats: GuardStats = { forwards: 0, cachedHidden: 0, references: 0 };
  /** final hidden states per embedding table (the base's under `undefined`) */
  private readonly hidden = new Map<Float32Array | undefined, Batch[]>();
  /** the base's reference chunks per group, window and chunk of scored positions, once computed (when they fit) */
  private kept?: ReferenceChunk[][][];

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

  /** The base's reference chunks of every window (per group, window, chunk of scored positions). */
  private async referenceChunks(ref: ModelStates[]): Promise<ReferenceChunk[][][]> {
    const chunk = chunkRows(this.engine.spec.vocab);
    const out: ReferenceChunk[][][] = [];
    for (let g = 0; g < this.plan.length; g++) {
      const group = this.plan[g]!;
      out.push([]);
      for (let w = 0; w < group.length; w++) {
        const { positions, klFrom } = scoredPositions(group[w]!, this.opts);
        const chunks: ReferenceChunk[] = [];
        for (let c0 = 0; c0 < positions.length; c0 += chunk) chunks.push(await referenceChunk(ref[g]!, group[w]!, w, positions.slice(c0, c0 + chunk), Math.max(0, klFrom - c0)));
        out[g]!.push(chunks);
      }
    }
    return out;
  }

  /** Whether the base's reference chunks are kept across candidates: with the cache, when their logit rows fit. */
  private keepsReference(): boolean {
    if (this.opts.cacheHidden === false) return false;
    const klRows = this.wins.reduce((a, w) => {
      const { positions, klFrom } = scoredPositions(w, this.opts);
      return a + positions.length - klFrom;
    }, 0);
    return klRows * this.engine.spec.vocab * 4 <= REFERENCE_CACHE_BYTES;
  }

  /** The candidate's perplexity and KL against the base on the prompts. */
  async check(c: Candidate): Promise<ScoreTotals> {
    const refStates = await this.statesOf(undefined);
    this.engine.setOverrides(undefined);
    const refHead = await this.engine.head();
    const ref = refStates.map((states) => ({ engine: this.engine, head: refHead, states }));
    if (!this.kept && this.keepsReference()) {
      this.kept = await this.referenceChunks(ref);
      this.stats.references++;
    }
    const kept = this.kept;
    if (!kept) this.stats.references++;
    const states = c.embed || this.opts.cacheHidden === false ? await this.statesOf(c.embed) : refStates;
    if (!c.embed && this.opts.cacheHidden !== false) this.stats.cachedHidden++;
    const overrides = new Map<string, Float32Array>();
    if (c.embed) overrides.set(EMBED, c.embed);
    if (c.head) overrides.set(HEAD, c.head);
    this.engine.setOverrides(overrides);
    const head = await this.engine.head();
    const chunk = chunkRows(this.engine.spec.vocab);
    const scores: WindowScore[] = [];
    for (let g = 0; g < this.plan.length; g++) {
      const group = this.plan[g]!;
      for (let w = 0; w < group.length; w++) {
        const win = group[w]!;
        const { klFrom } = scoredPositions(win, this.opts);
        // kept chunks, else computed one at a time (the base's head is taken before the candidate's overrides)
        const source: ReferenceSource = kept
          ? (c0) => Promise.resolve(kept[g]![w]![c0 / chunk]!)
          : (c0, part) => referenceChunk(ref[g]!, win, w, part, Math.max(0, klFrom - c0));
        const [score] = await scoreWindow([{ engine: this.engine, head, states: states[g]! }], win, w, this.opts, source);
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
