/**
 * The plan for two image-model checkpoints (SD 1.x/2.x, SDXL, Flux): which tensors become
 * kohya or diffusers LoRA modules (delta/diffusion-targets.ts), at which rank (k×k convs at the conv rank), and
 * which are only compared — checked before anything is read, as for LLM pairs.
 */
import { pairTensors, type Checkpoint } from '../io/checkpoint.js';
import { isFloatDType } from '../tensor/dtype.js';
import type { RankPolicy } from '../lowrank/rank-policy.js';
import { classifyDiffusionTensor, detectDiffusionModel, loraFileFormatRefusal, type DiffusionModel, type DiffusionRole } from '../delta/diffusion-targets.js';
import type { LoraFileFormat } from '../lora/lora-file-format.js';
import { UsageError } from '../errors.js';
import { rowBlock } from '../delta/row-block.js';
import { checkNames, checkRank, listSome, type ExtractionPlan, type Job } from './plan.js';

export interface DiffusionPlanOptions {
  policy: RankPolicy;
  /** rank policy of k×k convs; absent: they are not targets (kohya without conv_dim) */
  convPolicy?: RankPolicy;
  textEncoders: boolean;
  /** the LoRA file layout written: module stems are named for it */
  format: LoraFileFormat;
  include?: RegExp;
  exclude?: RegExp;
}

export interface DiffusionPlan extends ExtractionPlan {
  model: DiffusionModel;
  /** k×k conv weights left out for want of a conv rank */
  convSkipped: string[];
}

/** The diffusion model both checkpoints are, or undefined for anything else (the LLM path). */
export function diffusionModelOf(a: Checkpoint, b: Checkpoint): DiffusionModel | undefined {
  const ma = detectDiffusionModel(a.list(), a.path);
  const mb = detectDiffusionModel(b.list(), b.path);
  if (ma?.layout !== mb?.layout) {
    throw new Error(`${a.path} is ${ma ? `a ${ma.layout} checkpoint` : 'not a diffusion checkpoint'} but ${b.path} is ${mb ? `a ${mb.layout} one` : 'not'}: both must be fine-tunes of the same model`);
  }
  return ma;
}

export function planDiffusionExtraction(a: Checkpoint, b: Checkpoint, model: DiffusionModel, opts: DiffusionPlanOptions): DiffusionPlan {
  const refusal = loraFileFormatRefusal(model.layout, opts.format);
  if (refusal) throw new UsageError(`${a.path} is a ${model.layout} checkpoint, which cannot be written as a ${opts.format} LoRA: ${refusal}`);
  const notes: string[] = [];
  const warnings: string[] = [];
  checkNames(a, b, false, notes);
  pairTensors(a, b);
  const sel = { conv: opts.convPolicy !== undefined, textEncoders: opts.textEncoders, format: opts.format };
  const jobs: Job[] = [];
  const convSkipped: string[] = [];
  const unreadable: string[] = [];
  const reasons = new Map<string, number>();
  for (const ta of a.list()) {
    const tb = b.info(ta.name);
    const filtered = (opts.include && !opts.include.test(ta.name)) || opts.exclude?.test(ta.name);
    const role: DiffusionRole = filtered ? { kind: 'other' } : classifyDiffusionTensor(model, ta.name, ta.shape, sel);
    if (!isFloatDType(ta.dtype) || !isFloatDType(tb.dtype)) {
      if (role.kind === 'lora' || role.kind === 'lora-split') {
        throw new Error(`${a.locate(ta.name).path}: tensor "${ta.name}" is ${isFloatDType(ta.dtype) ? tb.dtype : ta.dtype}; loraforge extracts from F32, F16 and BF16 checkpoints: dequantize the model first`);
      }
      unreadable.push(ta.name);
      continue;
    }
    if (role.kind === 'lora-split') {
      // kohya's conversion splits the weight into equal row blocks (torch.chunk), one module each
      const size = ta.shape[0] / role.stems.length;
      role.stems.forEach((stem, i) => {
        const rows: [number, number] = [i * size, (i + 1) * size];
        const [pa, pb] = [rowBlock(ta, rows), rowBlock(tb, rows)];
        checkRank(opts.policy, `${ta.name}[${rows[0]}:${rows[1]}]`, size, ta.shape[1], pa.shape);
        jobs.push({ name: `${ta.name}[${rows[0]}:${rows[1]}]`, a: pa, b: pb, rows, plan: { action: 'lora', module: stem, kind: 'linear', policy: opts.policy } });
      });
    } else if (role.kind === 'lora') {
      const policy = role.kernel && role.kernel[0] * role.kernel[1] > 1 ? opts.convPolicy! : opts.policy;
      const cols = ta.shape.slice(1).reduce((p, d) => p * d, 1);
      checkRank(policy, ta.name, ta.shape[0], cols, ta.shape);
      jobs.push({ name: ta.name, a: ta, b: tb, plan: { action: 'lora', module: role.stem, kind: 'linear', conv: role.kernel, policy } });
    } else if (role.kind === 'conv-skipped') {
      convSkipped.push(ta.name);
      jobs.push({ name: ta.name, a: ta, b: tb, plan: { action: 'compare', save: false, reason: 'k×k conv: a target only with --conv-rank' } });
    } else {
      if (role.reason) reasons.set(role.reason, (reasons.get(role.reason) ?? 0) + 1);
      jobs.push({ name: ta.name, a: ta, b: tb, plan: { action: 'compare', save: false, ...(role.reason ? { reason: role.reason } : {}) } });
    }
  }
  if (!jobs.some((j) => j.plan.action === 'lora')) {
    throw new Error(`no tensor of ${a.path} (${model.layout}) is an extraction target${opts.include || opts.exclude ? ': check --include / --exclude' : ''}`);
  }
  if (unreadable.length) warnings.push(`${unreadable.length} non-float tensor(s) not compared: ${listSome(unreadable)}`);
  for (const [reason, count] of reasons) warnings.push(`${count} tensor(s): ${reason}`);
  if (convSkipped.length) notes.push(`${convSkipped.length} k×k conv weight(s) are not targets without --conv-rank (kohya's conv_dim): ${listSome(convSkipped)}`);
  return { jobs, tied: false, skipped3d: [], notes, warnings, model, convSkipped };
}
