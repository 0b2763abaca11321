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
import { join } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { createSafetensorsSink } from '../io/safetensors.js';
import { writeModelSideFiles } from '../io/model-folder.js';
import { modelConfig } from '../arch/index.js';
import { getBackend } from '../linalg/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { evaluate, type EvalReport, type KlPositions } from '../eval/eval.js';
import { runCommand } from '../pipeline/run.js';
import { loadTokenizer } from '../tokenizer/tokenizer.js';
import { readInputText } from '../io/inputs.js';
import { sharedVocabulary, type MatchKind, type SharedVocabulary } from '../vocab/shared.js';
import { InputError, UsageError } from '../errors.js';
import type { FloatDType } from '../io/types.js';
import { isFloatDType } from '../tensor/dtype.js';
import type { OnProgress } from '../progress.js';
import { fitAlignment, mapRows, type Alignment } from './align.js';
import { blendRows, gatherRows, normStats, pairCosines, planStage, rowNorm, softClip, type StageParams, type UntrainedRule } from './blend.js';
import { DEFAULT_PROMPTS } from './default-prompts.js';
import { findUntrainedRows } from './untrained.js';

const EMBED = 'model.embed_tokens.weight';
const HEAD = 'lm_head.weight';

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
  overwrite?: boolean;
  backend?: LinalgBackend;
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
  final: { basePerplexity: number; perplexity: number; pplRatio: number; kl: EvalReport extends { reference?: infer R } ? R extends { kl: infer K } ? K : never : never; top1Agreement: number };
  params: TransplantParams;
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
}

async function readTable(ckpt: Checkpoint, name: string): Promise<Table> {
  if (!ckpt.has(name)) throw new InputError(`${ckpt.path}: no tensor "${name}"; transplant reads ${EMBED} (and ${HEAD} when untied)`, { file: ckpt.path, tensor: name });
  const [rows, width] = shape2(ckpt, name);
  return { data: await ckpt.read(name), rows, width };
}

interface StageResult {
  table: Float32Array;
  report: StageReport;
}

/** One stage up to the blend: alignment on the shared rows, cosines, plan, blended table. */
async function blendStage(
  backend: LinalgBackend,
  stage: StageReport['stage'],
  base: Table,
  donor: Table,
  pairs: SharedVocabulary['pairs'],
  params: StageParams,
  untrained: ReturnType<typeof findUntrainedRows>,
  p: TransplantParams,
): Promise<StageResult> {
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
  const cos = pairCosines(base.data, base.width, baseIds, mapped, alignment.muBase);
  const flags = Uint8Array.from(baseIds, (id) => untrained.flags[id]!);
  const plan = planStage(cos, flags, params, p.untrainedRows);
  // a donor row replacing an untrained row gets the base's typical trained norm (scaled from the donor's own)
  const trainedBase = fitPairs.map((i) => rowNorm(base.data, baseIds[i]!, base.width));
  const trainedMapped = fitPairs.map((i) => rowNorm(mapped.data, i, base.width));
  const baseStats = normStats(trainedBase);
  const ratio = baseStats.median / Math.max(1e-30, normStats(trainedMapped).median);
  const table = blendRows({
    table: base.data,
    width: base.width,
    baseIds,
    mapped,
    plan,
    untrainedNorm: (n) => (p.softClip ? softClip(n * ratio, baseStats) : n * ratio),
  });
  return {
    table,
    report: {
      stage,
      outcome: 'kept',
      alignment: { scale: alignment.scale, rank: alignment.rank, residualBefore: alignment.residualBefore, residualAfter: alignment.residualAfter },
      candidates: plan.candidates,
      blended: plan.rows.length,
      untrained: { rows: untrained.count, padding: untrained.padding, ...(untrained.band ? { band: untrained.band } : {}), replaced: plan.untrainedReplaced, rule: p.untrainedRows },
    },
  };
}

export async function transplantEmbeddings(opts: TransplantOptions): Promise<TransplantReport> {
  const started = Date.now();
  const params = mergeParams(opts.params);
  const pplCap = opts.pplCap ?? 3;
  if (!(pplCap >= 1)) throw new UsageError(`--ppl-cap must be at least 1, got ${pplCap}`);
  const notes: string[] = [];

  return runCommand({
    inputs: [opts.base, opts.donor, ...(opts.prompts ? [opts.prompts] : [])],
    open: async (keep) => {
      const backend = opts.backend ?? (await getBackend());
      const base = keep(await openCheckpoint(opts.base));
      const donor = keep(await openCheckpoint(opts.donor));
      return { backend, base, donor };
    },
    plan: async ({ backend, base, donor }) => {
      const config = modelConfig(base.config);
      const tied = config.tieWordEmbeddings ?? !base.has(HEAD);
      const tokenizer = await loadTokenizer(opts.base);
      const prompts = opts.prompts ? (await readInputText(opts.prompts)).split('\n').filter((l) => l.trim() !== '') : [...DEFAULT_PROMPTS];
      if (prompts.length === 0) throw new InputError(`${opts.prompts}: no prompts (one per line)`, { file: opts.prompts });
      const baseEmbed = await readTable(base, EMBED);
      const donorEmbed = await readTable(donor, EMBED);
      const vocab = await sharedVocabulary(opts.base, opts.donor, opts.maxShared ?? Infinity);
      const pairs = vocab.pairs.filter((x) => x.baseId < baseEmbed.rows && x.donorId < donorEmbed.rows);
      if (pairs.length === 0) throw new InputError(`${opts.base} and ${opts.donor}: their tokenizers share no token; transplant needs a shared vocabulary`);
      const initRange = typeof config.fields['initializer_range'] === 'number' ? (config.fields['initializer_range'] as number) : undefined;
      const guard = (overrides: Map<string, Float32Array>) =>
        evaluate({
          model: opts.base,
          overrides,
          promptTexts: prompts,
          reference: { model: opts.base },
          klTopK: opts.klTopK ?? 512,
          klPositions: opts.klPositions ?? { tail: 8 },
          backend,
        });

      const stages: StageReport[] = [];
      const accepted = new Map<string, Float32Array>();
      // Stage A: embeddings
      const untrainedEmb = findUntrainedRows(baseEmbed.data, baseEmbed.rows, baseEmbed.width, tokenizer.vocabSize, initRange);
      const a = await blendStage(backend, 'embeddings', baseEmbed, donorEmbed, pairs, params.emb, untrainedEmb, params);
      let last = await guard(new Map([[EMBED, a.table]]));
      a.report.pplRatio = last.reference!.pplRatio;
      if (a.report.pplRatio > pplCap) {
        a.report.outcome = 'rolled back';
        a.report.reason = `perplexity ratio ${a.report.pplRatio.toFixed(3)} above the cap ${pplCap}`;
      } else accepted.set(EMBED, a.table);
      stages.push(a.report);
      if (tied) notes.push('the base ties lm_head to its embeddings: Stage B (lm_head) does not apply; the embedding stage changes both');
      // Stage B: lm_head
      if (tied) stages.push({ stage: 'lm_head', outcome: 'skipped', reason: 'tied embeddings' });
      else if (a.report.outcome !== 'kept') stages.push({ stage: 'lm_head', outcome: 'skipped', reason: 'the embedding stage tripped the guard' });
      else {
        const baseHead = await readTable(base, HEAD);
        const donorHead = await readTable(donor, donor.has(HEAD) ? HEAD : EMBED);
        const headPairs = pairs.filter((x) => x.baseId < baseHead.rows && x.donorId < donorHead.rows);
        const untrainedHead = findUntrainedRows(baseHead.data, baseHead.rows, baseHead.width, tokenizer.vocabSize, initRange);
        const b = await blendStage(backend, 'lm_head', baseHead, donorHead, headPairs, params.head, untrainedHead, params);
        const candidate = await guard(new Map([...accepted, [HEAD, b.table]]));
        b.report.pplRatio = candidate.reference!.pplRatio;
        if (b.report.pplRatio > pplCap) {
          b.report.outcome = 'rolled back';
          b.report.reason = `perplexity ratio ${b.report.pplRatio.toFixed(3)} above the cap ${pplCap}`;
        } else {
          accepted.set(HEAD, b.table);
          last = candidate;
        }
        stages.push(b.report);
      }
      if (accepted.size === 0) last = await guard(new Map());
      const items = base.list().map((t) => {
        if (!isFloatDType(t.dtype)) throw new InputError(`${base.path}: tensor "${t.name}" is ${t.dtype}; transplant reads F32/F16/BF16 checkpoints`, { file: base.path, tensor: t.name });
        return { name: t.name, shape: t.shape, dtype: t.dtype as FloatDType };
      });
      return { items, accepted, stages, vocab, last };
    },
    output: {
      dir: opts.out,
      overwrite: opts.overwrite,
      sink: (tmpPath, { plan }) => createSafetensorsSink(tmpPath, { baseName: 'model', plan: plan.items }),
    },
    load: (t, { res, plan }) => (plan.accepted.has(t.name) ? Promise.resolve(plan.accepted.get(t.name)!) : res.base.read(t.name)),
    each: (t, data, { sink }) => sink.add(t.name, t.shape, data, t.dtype),
    finish: async (_rows, { plan, sink, tmpPath }) => {
      await sink.finish();
      const copied = await writeModelSideFiles(tmpPath, { source: opts.base });
      const ref = plan.last.reference!;
      return {
        base: opts.base,
        donor: opts.donor,
        out: opts.out,
        shared: { pairs: plan.vocab.pairs.length, counts: plan.vocab.counts, baseKind: plan.vocab.baseKind, donorKind: plan.vocab.donorKind, capped: plan.vocab.capped },
        stages: plan.stages,
        final: { basePerplexity: ref.perplexity, perplexity: plan.last.perplexity, pplRatio: ref.pplRatio, kl: ref.kl, top1Agreement: ref.top1Agreement },
        params,
        files: [...sink.writtenFiles(), ...copied].map((f) => join(opts.out, f.split('/').pop()!)),
        notes,
        seconds: (Date.now() - started) / 1000,
      };
    },
    onProgress: opts.onProgress,
  });
}
