/**
 * Before anything is read: match the two checkpoints tensor by tensor, decide what happens to
 * each (extract a LoRA, save whole, or only compare), and refuse everything that would fail
 * later — so a bad pair of inputs costs a header read, not a half-finished run.
 */
import { pairTensors, type Checkpoint } from '../io/checkpoint.js';
import type { TensorInfo, TensorSource } from '../io/types.js';
import type { AdapterFormat } from '../lora/sink.js';
import { isFloatDType } from '../tensor/dtype.js';
import type { ExpertLayout } from '../lora/expert-stack.js';
import { expertLayout, expertWeightShape } from '../arch/experts.js';
import { modelConfig } from '../arch/config.js';
import { checkFixedRankFits, type RankPolicy } from '../lowrank/rank-policy.js';
import { classifyTensor, isEmbeddingLike, type TargetSelection } from '../delta/targets.js';
import type { PairRead } from '../delta/pair-loader.js';

export type EmbeddingsMode = 'skip' | 'lora' | 'full';
export const EMBEDDINGS_MODES: readonly EmbeddingsMode[] = ['skip', 'lora', 'full'];

export type JobAction =
  /**
   * a 2-D LoRA (linear, or PEFT's embedding LoRA for input embeddings); `conv`: a 4-D conv weight,
   * decomposed as out × (in·kh·kw); `policy`: this module's own rank policy (diffusion conv rank)
   */
  | { action: 'lora'; module: string; kind: 'linear' | 'embedding'; conv?: [number, number]; policy?: RankPolicy }
  /** one LoRA per expert slice of a 3-D tensor, saved PEFT's target_parameters way */
  | { action: 'experts'; module: string; param: string; layout: ExpertLayout }
  /** --embeddings full: B's tensor saved whole (modules_to_save) when it differs */
  | { action: 'full'; module: string }
  /** not a target: compared, reported when it differs, saved whole when `save` */
  | { action: 'compare'; save: boolean; reason?: string };

export interface Job {
  name: string;
  /** absent when only B's tensor is needed (full embeddings with a different vocabulary) */
  a?: TensorInfo;
  b: TensorInfo;
  plan: JobAction;
  /**
   * only rows [start, end) of the tensor `b.name` (a and b describe that block): one part of a
   * fused weight kohya splits into modules; `name` then names the part
   */
  rows?: [number, number];
}

export interface PlanOptions {
  policy: RankPolicy;
  selection: TargetSelection;
  embeddings: EmbeddingsMode;
  format: AdapterFormat;
  saveModules: boolean;
  skip3d: boolean;
}

export interface ExtractionPlan {
  jobs: Job[];
  /** the input embeddings and LM head share one matrix (handled once, as the embeddings) */
  tied: boolean;
  vocabA?: number;
  vocabB?: number;
  /** 3-D expert tensors left out by --skip-3d */
  skipped3d: string[];
  notes: string[];
  warnings: string[];
}

/** 8-bit and packed dtypes only ever appear in quantized checkpoints. */
const QUANTIZED_DTYPE = /^(F8_|I8$|U8$|I4$|U4$)/;
const HEAD = /(?:^|\.)(?:lm_head|embed_out)\.weight$/;
const MAX_LISTED = 5;

export function listSome(names: readonly string[]): string {
  const shown = names.slice(0, MAX_LISTED).map((n) => `"${n}"`).join(', ');
  return names.length > MAX_LISTED ? `${shown} and ${names.length - MAX_LISTED} more` : shown;
}

/** A TensorSource that does not show `hidden` (so pairTensors can check everything else). */
function hiding(src: TensorSource, hidden: ReadonlySet<string>): TensorSource {
  return {
    path: src.path,
    list: () => src.list().filter((t) => !hidden.has(t.name)),
    has: (name) => !hidden.has(name) && src.has(name),
    info: (name) => src.info(name),
    read: (name) => src.read(name),
    close: async () => undefined,
  };
}

/** Refuses quantized tensors and tensors we cannot read that would matter. */
function checkDtypes(ckpt: Checkpoint, label: string, selection: TargetSelection, warnings: string[]): Set<string> {
  const unreadable = new Set<string>();
  for (const t of ckpt.list()) {
    if (isFloatDType(t.dtype)) continue;
    const role = classifyTensor(t.name, t.shape, selection);
    if (QUANTIZED_DTYPE.test(t.dtype) || role.kind !== 'other') {
      throw new Error(
        `${ckpt.locate(t.name).path} (model ${label}): tensor "${t.name}" is ${t.dtype}; loraforge extracts from F32, F16 and BF16 checkpoints: dequantize the model first`,
      );
    }
    unreadable.add(t.name);
  }
  if (unreadable.size) warnings.push(`model ${label}: ${unreadable.size} non-float tensor(s) not compared: ${listSome([...unreadable])}`);
  return unreadable;
}

/**
 * Names present in one checkpoint only. An LM head missing on one side is fine when the
 * embeddings are tied (one side saved the tied copy, the other did not).
 */
export function checkNames(a: Checkpoint, b: Checkpoint, tied: boolean, notes: string[]): Set<string> {
  const onlyA = a.list().filter((t) => !b.has(t.name)).map((t) => t.name);
  const onlyB = b.list().filter((t) => !a.has(t.name)).map((t) => t.name);
  const ignored = new Set<string>();
  for (const name of [...onlyA, ...onlyB]) {
    if (tied && HEAD.test(name)) {
      ignored.add(name);
      notes.push(`"${name}" is saved in only one model; the embeddings are tied, so it is the same matrix as the input embeddings`);
    }
  }
  const badA = onlyA.filter((n) => !ignored.has(n));
  const badB = onlyB.filter((n) => !ignored.has(n));
  if (badA.length || badB.length) {
    const parts = [];
    if (badA.length) parts.push(`${badA.length} only in model A (${a.path}): ${listSome(badA)}`);
    if (badB.length) parts.push(`${badB.length} only in model B (${b.path}): ${listSome(badB)}`);
    throw new Error(`the checkpoints have different tensors — ${parts.join('; ')}. Both must be fine-tunes of the same architecture`);
  }
  return ignored;
}

/** A llama.cpp LoRA holds low-rank pairs only: whole tensors (modules_to_save) cannot go there. */
function checkFormat(opts: PlanOptions): void {
  if (opts.format === 'peft') return;
  const whole = [opts.saveModules && '--save-modules', opts.embeddings === 'full' && '--embeddings full'].filter(Boolean);
  if (whole.length) {
    throw new Error(`${whole.join(' and ')} save whole tensors, which a GGUF LoRA cannot hold: use --format peft with ${whole.length > 1 ? 'them' : 'it'}`);
  }
}

export function planExtraction(a: Checkpoint, b: Checkpoint, opts: PlanOptions): ExtractionPlan {
  checkFormat(opts);
  const notes: string[] = [];
  const warnings: string[] = [];
  const unreadable = new Set([
    ...checkDtypes(a, 'A', opts.selection, warnings),
    ...checkDtypes(b, 'B', opts.selection, warnings),
  ]);

  const hasHead = a.list().some((t) => HEAD.test(t.name)) && b.list().some((t) => HEAD.test(t.name));
  const tied = (modelConfig(a.config).tieWordEmbeddings ?? modelConfig(b.config).tieWordEmbeddings) === true || !hasHead;
  const ignored = checkNames(a, b, tied, notes);

  // Embedding-like tensors may differ in their first dimension (added tokens); everything else
  // must match exactly, which pairTensors checks.
  const vocabDiffers = new Set<string>();
  let vocabA: number | undefined;
  let vocabB: number | undefined;
  for (const ta of a.list()) {
    if (ignored.has(ta.name) || !isEmbeddingLike(ta.name, ta.shape)) continue;
    const tb = b.info(ta.name);
    if (tb.shape.length === 2 && tb.shape[1] === ta.shape[1]) {
      vocabA ??= ta.shape[0];
      vocabB ??= tb.shape[0];
      if (tb.shape[0] !== ta.shape[0]) vocabDiffers.add(ta.name);
    }
  }
  const hidden = new Set([...vocabDiffers, ...ignored]);
  pairTensors(hiding(a, hidden), hiding(b, hidden));
  if (vocabDiffers.size && opts.embeddings !== 'full') {
    const name = [...vocabDiffers][0];
    throw new Error(
      `the vocabularies differ: "${name}" has ${a.info(name).shape[0]} rows in model A but ${b.info(name).shape[0]} in model B (tokens were added or removed). ` +
        `Pass --embeddings full to save B's embeddings whole; the base model then needs resize_token_embeddings(${b.info(name).shape[0]}) before the adapter is loaded`,
    );
  }
  if (vocabDiffers.size) {
    notes.push(`vocabulary differs (A ${vocabA}, B ${vocabB}): B's embeddings are saved whole; resize the base model's token embeddings to ${vocabB} before loading the adapter`);
  }

  const dtypePairs = new Map<string, number>();
  const jobs: Job[] = [];
  const skipped3d: string[] = [];
  const targetModules = new Set<string>();
  for (const ta of a.list()) {
    if (ignored.has(ta.name) || unreadable.has(ta.name)) continue;
    const tb = b.info(ta.name);
    if (ta.dtype !== tb.dtype) dtypePairs.set(`${ta.dtype}/${tb.dtype}`, (dtypePairs.get(`${ta.dtype}/${tb.dtype}`) ?? 0) + 1);
    const role = classifyTensor(ta.name, ta.shape, opts.selection);
    const job = (plan: JobAction, withA = true): Job => ({ name: ta.name, a: withA ? ta : undefined, b: tb, plan });

    if (role.kind === 'embedding' || role.kind === 'lm-head') {
      if (tied && role.kind === 'lm-head') {
        notes.push(`"${ta.name}" is tied to the input embeddings: handled once, through them`);
        continue;
      }
      if (opts.embeddings === 'skip') jobs.push(job({ action: 'compare', save: false, reason: 'embeddings are skipped (--embeddings skip)' }));
      else if (opts.embeddings === 'full') jobs.push(job({ action: 'full', module: role.module }, !vocabDiffers.has(ta.name)));
      else {
        checkRank(opts.policy, ta.name, ta.shape[0], ta.shape[1], ta.shape);
        jobs.push(job({ action: 'lora', module: role.module, kind: role.kind === 'embedding' ? 'embedding' : 'linear' }));
        targetModules.add(role.module);
      }
    } else if (role.kind === 'linear') {
      checkRank(opts.policy, ta.name, ta.shape[0], ta.shape[1], ta.shape);
      jobs.push(job({ action: 'lora', module: role.module, kind: 'linear' }));
      targetModules.add(role.module);
    } else if (role.kind === 'experts') {
      if (opts.skip3d) {
        skipped3d.push(ta.name);
        jobs.push(job({ action: 'compare', save: false, reason: '3-D expert tensor skipped (--skip-3d)' }));
        continue;
      }
      const layout = expertLayout(a.config, role.param, ta.shape);
      const [out, inF] = expertWeightShape(layout, ta.shape);
      checkRank(opts.policy, ta.name, out, inF, ta.shape);
      jobs.push(job({ action: 'experts', module: role.module, param: role.param, layout }));
    } else {
      jobs.push(job({ action: 'compare', save: opts.saveModules }));
    }
  }

  // A target module's bias cannot be a separate modules_to_save entry: PEFT would wrap the
  // module twice. (PEFT's lora_bias would be the place; it is not written yet.)
  for (const j of jobs) {
    if (j.plan.action === 'compare' && j.plan.save && j.name.endsWith('.bias') && targetModules.has(j.name.slice(0, -'.bias'.length))) {
      j.plan = { action: 'compare', save: false, reason: 'bias of a LoRA target: not saved (PEFT modules_to_save would replace the whole module)' };
    }
  }

  if (!jobs.some((j) => j.plan.action !== 'compare')) {
    throw new Error(
      `no tensor of ${a.path} is an extraction target (targets: ${opts.selection.targetModules?.join(', ') ?? 'the linear weights of the decoder layers'}` +
        `${opts.selection.include ? `, matching ${opts.selection.include}` : ''}): check --target-modules / --include / --exclude`,
    );
  }
  for (const [pair, count] of dtypePairs) {
    const [da, db] = pair.split('/');
    warnings.push(`${count} tensor(s) are ${da} in model A but ${db} in model B; both are read as f32, so the difference includes the rounding of the lower precision`);
  }
  return { jobs, tied, vocabA, vocabB, skipped3d, notes, warnings };
}

/** What the pair reader reads for a job: Δ (and B where B is saved whole), or B alone without A. */
export function pairReadOf(job: Job): PairRead {
  const plan = job.plan;
  return { name: job.b.name, onlyB: !job.a, keepB: plan.action === 'full' || (plan.action === 'compare' && plan.save), ...(job.rows ? { rows: job.rows } : {}) };
}

export function checkRank(policy: RankPolicy, name: string, rows: number, cols: number, shape: readonly number[]): void {
  if (policy.mode === 'rank') checkFixedRankFits(policy.rank, name, rows, cols, shape);
}
