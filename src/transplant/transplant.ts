/**
 * `transplant`: blend a donor model's token embeddings (and lm_head) into a base model of another
 * architecture, width and vocabulary, guarded by the base's perplexity.
 *
 * 1. Shared vocabulary from both tokenizer.json files (vocab/shared.ts).
 * 2. Alignment of the donor's space onto the base's on the shared rows (align.ts).
 * 3. Stage A: embedding rows blended where the mapped donor row agrees with the base (blend.ts).
 * 4. Guard: perplexity of the candidate ÷ the base's on the prompts; above the cap the stage is
 *    rolled back, and Stage B is skipped.
 * 5. Stage B (untied heads only): the same on lm_head rows, with its own alignment; rolled back
 *    when the guard trips.
 * The output is the base folder with the changed tensors (same names, shapes and dtypes), so
 * every tool that loads the base loads it.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { createSafetensorsSink } from '../io/safetensors.js';
import { writeModelSideFiles } from '../io/model-folder.js';
import { modelConfig } from '../arch/index.js';
import { getBackend } from '../linalg/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import type { KlPositions, ScoreTotals } from '../scoring/scoring.js';
import { createRng, type Rng } from '../linalg/random.js';
import type { Matrix } from '../tensor/matrix.js';
import { EMBED, Guard, HEAD } from './guard.js';
import { runCommand } from '../pipeline/run.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { sharedVocabulary, type MatchKind, type SharedVocabulary } from '../vocab/shared.js';
import { InputError, UsageError } from '../errors.js';
import type { FloatDType } from '../io/types.js';
import { isFloatDType, roundTo } from '../tensor/dtype.js';
import type { OnProgress } from '../progress.js';
import { fitAlignment, mapRows, type Alignment } from './align.js';
import { blendRows, gatherRows, normStats, pairCosines, planStage, rowNorm, softClip, type StageParams, type UntrainedRule } from './blend.js';
import { DEFAULT_PROMPTS } from './default-prompts.js';
import { readPrompts } from '../scoring/windows.js';
import { findUntrainedRows } from './untrained.js';
import type { HubOptions } from '../io/hub/index.js';
import { localInput } from '../io/local-inputs.js';


export interface TransplantParams {
  emb: Required<Pick<StageParams, 'targetFrac'>> & StageParams;
  head: Required<Pick<StageParams, 'targetRows'>> & StageParams;
  softClip: boolean;
  untrainedRows: UntrainedRule;
}

export const DEFAULT_TRANSPLANT_PARAMS: TransplantParams = {
  emb: { targetFrac: 0.6, alphaCap: 0.9, alphaFloor: 0.05, minTau: 0.55 },
  head: { targetRows: 8000, alphaCap: 0.8, alphaFloor: 0.15, minTau: 0.66 },
  softClip: true,
  untrainedRows: 'skip',
};

export interface TransplantOptions {
  /** the model that receives rows: its config, tokenizer and tensor names are the output's */
  base: string;
  /** the model rows come from (any architecture with model.embed_tokens / lm_head) */
  donor: string;
  out: string;
  /** the guard's text, one prompt per line (default: a built-in English set) */
  prompts?: string;
  /** largest accepted perplexity ratio candidate ÷ base (default 3) */
  pplCap?: number;
  params?: Partial<Omit<TransplantParams, 'emb' | 'head'>> & { emb?: Partial<TransplantParams['emb']>; head?: Partial<TransplantParams['head']> };
  /** at most this many shared tokens, lowest base ids first */
  maxShared?: number;
  klTopK?: number;
  klPositions?: KlPositions;
  /** search: trial 0 uses the parameters given, the others are drawn around them (seeded) */
  trials?: number;
  seed?: number;
  /** with trials: also write the K best trials' models under topk/ */
  saveTopK?: number;
  /** reuse final hidden states across trials (default true; false is for measuring the cache) */
  cacheHidden?: boolean;
  overwrite?: boolean;
  backend?: LinalgBackend;
  /** how Hub ids among the inputs are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
  onProgress?: OnProgress;
}

export interface AlignmentReport {
  scale: number;
  rank: number;
  residualBefore: number;
  residualAfter: number;
}

export interface StageReport {
  stage: 'embeddings' | 'lm_head';
  /** what happened to the stage */
  outcome: 'kept' | 'rolled back' | 'skipped';
  reason?: string;
  alignment?: AlignmentReport;
  candidates?: number;
  blended?: number;
  untrained?: { rows: number; padding: number; band?: [number, number]; replaced: number; rule: UntrainedRule };
  pplRatio?: number;
}

export interface TransplantReport {
  base: string;
  donor: string;
  out: string;
  shared: { pairs: number; counts: Record<MatchKind, number>; baseKind: string; donorKind: string; capped: number };
  stages: StageReport[];
  final: { basePerplexity: number; perplexity: number; pplRatio: number; kl: NonNullable<ScoreTotals['reference']>['kl']; top1Agreement: number };
  params: TransplantParams;
  search?: { trials: number; seed: number; bestTrial: number; pareto: number[]; trialsPerMinute: number; forwards: number; cachedHidden: number };
  files: string[];
  notes: string[];
  seconds: number;
}

function mergeParams(p: TransplantOptions['params']): TransplantParams {
  const d = DEFAULT_TRANSPLANT_PARAMS;
  const out: TransplantParams = {
    emb: { ...d.emb, ...p?.emb },
    head: { ...d.head, ...p?.head },
    softClip: p?.softClip ?? d.softClip,
    untrainedRows: p?.untrainedRows ?? d.untrainedRows,
  };
  for (const [name, s] of [['emb', out.emb], ['head', out.head]] as const) {
    for (const k of ['alphaCap', 'alphaFloor', 'minTau'] as const) {
      const v = s[k];
      if (!(v >= (k === 'minTau' ? -1 : 0) && v <= 1)) throw new UsageError(`transplant: ${name} ${k} must lie in [${k === 'minTau' ? -1 : 0}, 1], got ${v}`);
    }
    if (s.alphaFloor > s.alphaCap) throw new UsageError(`transplant: ${name} alpha floor ${s.alphaFloor} is above its cap ${s.alphaCap}`);
  }
  if (!(out.emb.targetFrac > 0 && out.emb.targetFrac <= 1)) throw new UsageError(`--target-emb-frac must lie in (0, 1], got ${out.emb.targetFrac}`);
  if (!(Number.isInteger(out.head.targetRows) && out.head.targetRows >= 0)) throw new UsageError(`--target-head-rows must be a non-negative integer, got ${out.head.targetRows}`);
  return out;
}

function shape2(ckpt: Checkpoint, name: string): [number, number] {
  const s = ckpt.info(name).shape;
  if (s.length !== 2) throw new InputError(`${ckpt.path}: tensor "${name}" is [${s.join(', ')}], not a 2-D table`, { file: ckpt.path, tensor: name });
  return [s[0]!, s[1]!];
}

interface Table {
  data: Float32Array;
  rows: number;
  width: number;
  /** how the base stores it: candidates are rounded to it, so the guard judges the file written */
  dtype: FloatDType;
}

async function readTable(ckpt: Checkpoint, name: string): Promise<Table> {
  if (!ckpt.has(name)) throw new InputError(`${ckpt.path}: no tensor "${name}"; transplant reads ${EMBED} (and ${HEAD} when untied)`, { file: ckpt.path, tensor: name });
  const [rows, width] = shape2(ckpt, name);
  const dtype = ckpt.info(name).dtype;
  return { data: await ckpt.read(name), rows, width, dtype: isFloatDType(dtype) ? dtype : 'F32' };
}

/** What a stage computes once, whatever the blend parameters: the map, the mapped rows, the cosines. */
interface PreparedStage {
  stage: StageReport['stage'];
  base: Table;
  baseIds: number[];
  mapped: Matrix;
  cos: Float64Array;
  /** per pair: the base row is untrained */
  untrainedPairs: Uint8Array;
  untrained: ReturnType<typeof findUntrainedRows>;
  alignment: AlignmentReport;
  baseStats: { median: number; spread: number };
  /** typical trained base norm ÷ typical mapped norm */
  normRatio: number;
}

async function prepareStage(
  backend: LinalgBackend,
  stage: StageReport['stage'],
  base: Table,
  donor: Table,
  pairs: SharedVocabulary['pairs'],
  untrained: ReturnType<typeof findUntrainedRows>,
): Promise<PreparedStage> {
  const baseIds = pairs.map((x) => x.baseId);
  const donorRows = gatherRows(donor.data, donor.width, pairs.map((x) => x.donorId));
  // the map is fitted on trained rows only: an untrained row is noise, not a position in the space
  const fitPairs = pairs.map((_, i) => i).filter((i) => !untrained.flags[baseIds[i]!]);
  const minRows = Math.min(base.width, donor.width) + 1;
  if (fitPairs.length < minRows) {
    throw new InputError(
      `only ${fitPairs.length} shared tokens with trained ${stage} rows; aligning widths ${donor.width} → ${base.width} needs at least ${minRows}: the two tokenizers share too little`,
    );
  }
  const alignment: Alignment = await fitAlignment(
    backend,
    gatherRows(base.data, base.width, fitPairs.map((i) => baseIds[i]!)),
    gatherRows(donor.data, donor.width, fitPairs.map((i) => pairs[i]!.donorId)),
  );
  const mapped = await mapRows(backend, alignment, donorRows);
  const trainedBase = fitPairs.map((i) => rowNorm(base.data, baseIds[i]!, base.width));
  const trainedMapped = fitPairs.map((i) => rowNorm(mapped.data, i, base.width));
  const baseStats = normStats(trainedBase);
  return {
    stage,
    base,
    baseIds,
    mapped,
    cos: pairCosines(base.data, base.width, baseIds, mapped, alignment.muBase),
    untrainedPairs: Uint8Array.from(baseIds, (id) => untrained.flags[id]!),
    untrained,
    alignment: { scale: alignment.scale, rank: alignment.rank, residualBefore: alignment.residualBefore, residualAfter: alignment.residualAfter },
    baseStats,
    normRatio: baseStats.median / Math.max(1e-30, normStats(trainedMapped).median),
  };
}

/** The stage's table under one set of parameters, and its report (outcome filled in by the guard). */
function blendStage(s: PreparedStage, params: StageParams, p: TransplantParams): { table: Float32Array; report: StageReport } {
  const plan = planStage(s.cos, s.untrainedPairs, params, p.untrainedRows);
  // a donor row replacing an untrained row gets the base's typical trained norm (scaled from the donor's own)
  const blended = blendRows({
    table: s.base.data,
    width: s.base.width,
    baseIds: s.baseIds,
    mapped: s.mapped,
    plan,
    untrainedNorm: (n) => (p.softClip ? softClip(n * s.normRatio, s.baseStats) : n * s.normRatio),
  });
  // unblended rows round-trip exactly (they came from this dtype)
  const table = s.base.dtype === 'F32' ? blended : roundTo(blended, s.base.dtype);
  const u = s.untrained;
  return {
    table,
    report: {
      stage: s.stage,
      outcome: 'kept',
      alignment: s.alignment,
      candidates: plan.candidates,
      blended: plan.rows.length,
      untrained: { rows: u.count, padding: u.padding, ...(u.band ? { band: u.band } : {}), replaced: plan.untrainedReplaced, rule: p.untrainedRows },
    },
  };
}

/** One evaluated set of parameters: the tables it accepted and what the guard said. */
interface Trial {
  index: number;
  params: TransplantParams;
  stages: StageReport[];
  accepted: Map<string, Float32Array>;
  /** the candidate's perplexity beside the base's (the guard's reference) */
  final: NonNullable<ScoreTotals['reference']> & { basePerplexity: number };
}

async function runTrial(index: number, params: TransplantParams, ctx: TrialContext): Promise<Trial> {
  const stages: StageReport[] = [];
  const accepted = new Map<string, Float32Array>();
  const a = blendStage(ctx.emb, params.emb, params);
  let last = await ctx.guard.check({ embed: a.table });
  a.report.pplRatio = last.reference!.pplRatio;
  if (a.report.pplRatio > ctx.pplCap) {
    a.report.outcome = 'rolled back';
    a.report.reason = `perplexity ratio ${a.report.pplRatio.toFixed(3)} above the cap ${ctx.pplCap}`;
  } else accepted.set(EMBED, a.table);
  stages.push(a.report);
  if (!ctx.head) stages.push({ stage: 'lm_head', outcome: 'skipped', reason: 'tied embeddings' });
  else if (a.report.outcome !== 'kept') stages.push({ stage: 'lm_head', outcome: 'skipped', reason: 'the embedding stage tripped the guard' });
  else {
    const b = blendStage(ctx.head, params.head, params);
    const candidate = await ctx.guard.check({ embed: a.table, head: b.table });
    b.report.pplRatio = candidate.reference!.pplRatio;
    if (b.report.pplRatio > ctx.pplCap) {
      b.report.outcome = 'rolled back';
      b.report.reason = `perplexity ratio ${b.report.pplRatio.toFixed(3)} above the cap ${ctx.pplCap}`;
    } else {
      accepted.set(HEAD, b.table);
      last = candidate;
    }
    stages.push(b.report);
  }
  if (accepted.size === 0) last = await ctx.guard.check({});
  return { index, params, stages, accepted, final: { ...last.reference!, basePerplexity: last.reference!.perplexity, perplexity: last.perplexity } };
}

interface TrialContext {
  emb: PreparedStage;
  /** absent: tied embeddings */
  head?: PreparedStage;
  guard: Guard;
  pplCap: number;
}

/**
 * Ranked best first: the most donor influence (symmetric KL) in what the guard kept, among trials
 * whose result is within the cap (stages it rolled back are not part of a trial's result), then
 * any others by perplexity ratio.
 */
function rankTrials(trials: Trial[], pplCap: number): Trial[] {
  const ok = (t: Trial) => t.final.pplRatio <= pplCap;
  return [...trials].sort((x, y) => Number(ok(y)) - Number(ok(x)) || (ok(x) ? y.final.kl.symmetric - x.final.kl.symmetric : x.final.pplRatio - y.final.pplRatio) || x.index - y.index);
}

/** Trials no other trial beats on both perplexity ratio (lower) and symmetric KL (higher). */
function paretoFront(trials: Trial[]): Trial[] {
  return trials.filter((t) => !trials.some((o) => o !== t && o.final.pplRatio <= t.final.pplRatio && o.final.kl.symmetric >= t.final.kl.symmetric && (o.final.pplRatio < t.final.pplRatio || o.final.kl.symmetric > t.final.kl.symmetric)));
}

/** Parameters of a search trial: uniform over ranges around the defaults' (seeded). */
function sampleParams(rng: Rng, base: TransplantParams): TransplantParams {
  const u = (lo: number, hi: number) => lo + (hi - lo) * rng.next();
  const embCap = u(0.3, 1);
  const headCap = u(0.3, 1);
  return {
    ...base,
    emb: { targetFrac: u(0.2, 1), alphaCap: embCap, alphaFloor: u(0, Math.min(0.3, embCap)), minTau: u(0.2, 0.8) },
    head: { targetRows: Math.round(u(500, 16000)), alphaCap: headCap, alphaFloor: u(0, Math.min(0.3, headCap)), minTau: u(0.3, 0.85) },
  };
}

function trialSummary(t: Trial): Record<string, unknown> {
  return { trial: t.index, params: t.params, stages: t.stages, pplRatio: t.final.pplRatio, symmetricKl: t.final.kl.symmetric, kl: t.final.kl, top1Agreement: t.final.top1Agreement };
}

export async function transplantEmbeddings(given: TransplantOptions): Promise<TransplantReport> {
  const opts = { ...given, base: await localInput(given.base, 'model', given), donor: await localInput(given.donor, 'model', given) };
  const started = Date.now();
  const params = mergeParams(opts.params);
  const pplCap = opts.pplCap ?? 3;
  if (!(pplCap >= 1)) throw new UsageError(`--ppl-cap must be at least 1, got ${pplCap}`);
  const trials = opts.trials ?? 1;
  if (!Number.isInteger(trials) || trials < 1) throw new UsageError(`--trials must be a positive integer, got ${trials}`);
  const saveTopK = opts.saveTopK ?? 0;
  if (!Number.isInteger(saveTopK) || saveTopK < 0 || saveTopK > trials) throw new UsageError(`--save-topk must be an integer from 0 to --trials (${trials}), got ${saveTopK}`);
  const notes: string[] = [];

  return runCommand({
    inputs: [opts.base, opts.donor, ...(opts.prompts ? [opts.prompts] : [])],
    open: async (keep) => {
      const backend = opts.backend ?? (await getBackend());
      const base = keep(await openCheckpoint(opts.base));
      const donor = keep(await openCheckpoint(opts.donor));
      return { backend, base, donor, keep };
    },
    plan: async ({ backend, base, donor, keep }) => {
      const config = modelConfig(base.config);
      const tied = config.tieWordEmbeddings ?? !base.has(HEAD);
      const tokenizer = await loadTokenizer(opts.base);
      const prompts = opts.prompts ? await readPrompts(opts.prompts) : [...DEFAULT_PROMPTS];
      const baseEmbed = await readTable(base, EMBED);
      const donorEmbed = await readTable(donor, EMBED);
      const vocab = await sharedVocabulary(opts.base, opts.donor, opts.maxShared ?? Infinity);
      const pairs = vocab.pairs.filter((x) => x.baseId < baseEmbed.rows && x.donorId < donorEmbed.rows);
      if (pairs.length === 0) throw new InputError(`${opts.base} and ${opts.donor}: their tokenizers share no token; transplant needs a shared vocabulary`);
      const initRange = typeof config.fields['initializer_range'] === 'number' ? (config.fields['initializer_range'] as number) : undefined;
      const untrainedEmb = findUntrainedRows(baseEmbed.data, baseEmbed.rows, baseEmbed.width, tokenizer.vocabSize, initRange);
      const ctx: TrialContext = {
        emb: await prepareStage(backend, 'embeddings', baseEmbed, donorEmbed, pairs, untrainedEmb),
        guard: await Guard.open(opts.base, tokenizer, prompts, backend, { klTopK: opts.klTopK ?? 512, klPositions: opts.klPositions ?? { tail: 8 }, cacheHidden: opts.cacheHidden }, keep),
        pplCap,
      };
      if (tied) notes.push('the base ties lm_head to its embeddings: Stage B (lm_head) does not apply; the embedding stage changes both');
      else {
        const baseHead = await readTable(base, HEAD);
        const donorHead = await readTable(donor, donor.has(HEAD) ? HEAD : EMBED);
        const headPairs = pairs.filter((x) => x.baseId < baseHead.rows && x.donorId < donorHead.rows);
        // a token the base never saw as input was never a target either: its head row only ever
        // got pushed down by the softmax, which moves it off its initialisation without training it
        const untrainedHead = findUntrainedRows(baseHead.data, baseHead.rows, baseHead.width, tokenizer.vocabSize, initRange, untrainedEmb.flags);
        ctx.head = await prepareStage(backend, 'lm_head', baseHead, donorHead, headPairs, untrainedHead);
      }
      const rng = createRng(opts.seed ?? 0);
      const done: Trial[] = [];
      const searchStarted = Date.now();
      for (let i = 0; i < trials; i++) {
        // trial 0 is the parameters given; the others are drawn around them
        const trial = await runTrial(i, i === 0 ? params : sampleParams(rng, params), ctx);
        // keep only what ranking and --save-topk need in memory
        done.push(trial);
        opts.onProgress?.({ phase: 'trials', index: i, total: trials, name: `trial ${i}` });
      }
      const searchSeconds = (Date.now() - searchStarted) / 1000;
      const ranked = rankTrials(done, pplCap);
      const items = base.list().map((t) => {
        if (!isFloatDType(t.dtype)) throw new InputError(`${base.path}: tensor "${t.name}" is ${t.dtype}; transplant reads F32/F16/BF16 checkpoints`, { file: base.path, tensor: t.name });
        return { name: t.name, shape: t.shape, dtype: t.dtype as FloatDType };
      });
      return { items, best: ranked[0]!, ranked, done, vocab, pairs: pairs.length, searchSeconds, guardStats: ctx.guard.stats };
    },
    output: {
      dir: opts.out,
      overwrite: opts.overwrite,
      sink: (tmpPath, { plan }) => createSafetensorsSink(tmpPath, { baseName: 'model', plan: plan.items }),
    },
    load: (t, { res, plan }) => (plan.best.accepted.has(t.name) ? Promise.resolve(plan.best.accepted.get(t.name)!) : res.base.read(t.name)),
    each: (t, data, { sink }) => sink.add(t.name, t.shape, data, t.dtype),
    finish: async (_rows, { res, plan, sink, tmpPath }) => {
      await sink.finish();
      const copied = await writeModelSideFiles(tmpPath, { source: opts.base });
      const files = [...sink.writtenFiles(), ...copied];
      if (trials > 1) files.push(...(await writeSearchFiles(tmpPath, plan.done, plan.ranked, saveTopK, res.base, opts.base)));
      const best = plan.best;
      return {
        base: opts.base,
        donor: opts.donor,
        out: opts.out,
        shared: { pairs: plan.pairs, counts: plan.vocab.counts, baseKind: plan.vocab.baseKind, donorKind: plan.vocab.donorKind, capped: plan.vocab.capped },
        stages: best.stages,
        final: { basePerplexity: best.final.basePerplexity, perplexity: best.final.perplexity, pplRatio: best.final.pplRatio, kl: best.final.kl, top1Agreement: best.final.top1Agreement },
        params: best.params,
        ...(trials > 1
          ? {
              search: {
                trials,
                seed: opts.seed ?? 0,
                bestTrial: best.index,
                pareto: paretoFront(plan.done).map((t) => t.index).sort((a, b) => a - b),
                trialsPerMinute: (60 * trials) / Math.max(plan.searchSeconds, 1e-9),
                forwards: plan.guardStats.forwards,
                cachedHidden: plan.guardStats.cachedHidden,
              },
            }
          : {}),
        files: files.map((f) => join(opts.out, relative(tmpPath, isAbsolute(f) ? f : join(tmpPath, f)))),
        notes,
        seconds: (Date.now() - started) / 1000,
      };
    },
    onProgress: opts.onProgress,
  });
}

/** stats/trial-N.json for every trial, pareto.json and best.json; with --save-topk, the K best models under topk/. */
async function writeSearchFiles(dir: string, done: Trial[], ranked: Trial[], saveTopK: number, base: Checkpoint, basePath: string): Promise<string[]> {
  const written: string[] = [];
  await mkdir(join(dir, 'stats'), { recursive: true });
  for (const t of done) {
    const path = join(dir, 'stats', `trial-${String(t.index).padStart(3, '0')}.json`);
    await writeFile(path, JSON.stringify(trialSummary(t), null, 2) + '\n');
    written.push(path);
  }
  const pareto = paretoFront(done).sort((a, b) => a.final.pplRatio - b.final.pplRatio);
  await writeFile(join(dir, 'pareto.json'), JSON.stringify(pareto.map(trialSummary), null, 2) + '\n');
  await writeFile(join(dir, 'best.json'), JSON.stringify(trialSummary(ranked[0]!), null, 2) + '\n');
  written.push(join(dir, 'pareto.json'), join(dir, 'best.json'));
  for (let k = 0; k < saveTopK; k++) {
    const t = ranked[k]!;
    const sub = join(dir, 'topk', `${k + 1}-trial-${t.index}`);
    await mkdir(sub, { recursive: true });
    const sink = await createSafetensorsSink(sub, {
      baseName: 'model',
      plan: base.list().map((x) => ({ name: x.name, shape: x.shape, dtype: x.dtype as FloatDType })),
    });
    for (const x of base.list()) await sink.add(x.name, x.shape, t.accepted.get(x.name) ?? (await base.read(x.name)), x.dtype as FloatDType);
    await sink.finish();
    await writeModelSideFiles(sub, { source: basePath });
    await writeFile(join(sub, 'trial.json'), JSON.stringify(trialSummary(t), null, 2) + '\n');
    written.push(sub);
  }
  return written;
}
