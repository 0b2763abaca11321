/**
 * Σ edits of LoRA modules: each selected module's update ΔW = scaling·B·A is put in SVD form
 * U·Σ·Vᵀ (exactly, from its factors), Σ is edited, and new factors are written with the
 * module's alpha kept: A' = √|Σ''|·Vᵀ, B' = sign(Σ')·U·√|Σ''| with Σ'' = Σ'/scaling', so that
 * scaling'·B'·A' = U·Σ'·Vᵀ whatever the new rank.
 *
 * Semantics (indices are 0-based positions in descending σ order of the unedited module):
 * 1. --keep: every component not listed is removed;
 * 2. --zero: the listed components are removed;
 * 3. --scale i:f: σ_i ← f·σ_i (f = 0 removes it; a negative f flips the direction);
 * 4. --perturb ε: σ_i ← σ_i·(1 + ε·r_i), r_i ~ N(0, 1).
 * Removed components are dropped, so the rank shrinks by their number; a module with nothing
 * left keeps one zero component (rank 1, zero factors) so it stays a valid LoRA module.
 *
 * Random draws (--perturb) come from one createRng(seed) stream: modules in natural name order
 * (layers.2 before layers.10), every module of the input — selected or not — drawing one N(0,1)
 * per component it has (min(r, out, in)), components in order. A module thus gets the same noise
 * whichever --layers/--modules are chosen.
 *
 * MoE expert stacks (PEFT target_parameters; from a model pair, its 3-D expert tensors) take part
 * under their parameter's path (e.g. `model.layers.0.mlp.experts.gate_up_proj`): --layers and
 * --modules select the whole stack by it, it sorts by it among the modules, and its experts draw
 * in turn, expert 0 first. Each expert is edited as its own update ΔW_e (edit-experts.ts), and
 * the stack is written in PEFT's layout under its original key (or, from a model pair, the key
 * extract would give it).
 */
import { join } from 'node:path';
import type { LinalgBackend } from '../linalg/backend.js';
import { getBackend } from '../linalg/index.js';
import { productSvd } from '../linalg/product-svd.js';
import { decompose, tensorSeed } from '../lowrank/decompose.js';
import type { RankPolicy } from '../lowrank/rank-policy.js';
import { sumSquares, type Matrix } from '../tensor/matrix.js';
import type { Svd } from '../linalg/svd-small.js';
import { createRng, type Rng } from '../linalg/random.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { openSafetensors } from '../io/safetensors.js';
import { assertNotInput, withAtomicSink } from '../io/atomic.js';
import type { FloatDType } from '../io/types.js';
import { isFloatDType } from '../tensor/dtype.js';
import { ADAPTER_WEIGHTS_FILE, openPeftAdapter, type LoraModuleInfo, type PeftAdapter } from '../lora/adapter.js';
import { createAdapterSink, type AdapterFormat, type AdapterSink, type AdapterSinkOptions } from '../lora/sink.js';
import { editExpertStack, editExpertSvds } from './edit-experts.js';
import { isEmptyEdit, largestIndex, refactorEdited, type SigmaEdit } from './sigma-edit.js';
import { isSelected, type ModuleSelector } from './selectors.js';
import { naturalCompare } from '../lora/module-names.js';
import { assertFiniteSpectrum } from '../linalg/finite-spectrum.js';
import { scaledLeftFactor } from '../lora/scaled-left-factor.js';
import { expertDelta, planDeltaTensors, type ExpertDeltaTensor } from '../delta/pair-plan.js';
import { changedTensors, streamDifferences, type ChangedTensor } from '../delta/pair-stream.js';
import { withoutWeightSuffix } from '../delta/targets.js';
import { baseModelNameOrPath } from '../lora/base-model.js';

export {
  applySigmaEdit,
  isEmptyEdit,
  largestIndex,
  refactorEdited,
  removedComponents,
  type Refactored,
  type SigmaEdit,
} from './sigma-edit.js';
import { withInputTracking } from '../io/inputs.js';
import type { OnProgress } from '../progress.js';

export interface ModuleEditReport {
  name: string;
  edited: boolean;
  rankBefore: number;
  rankAfter: number;
  /** singular values of scaling·B·A before and after (edited modules only) */
  sigmaBefore?: number[];
  sigmaAfter?: number[];
}

export interface EditSummary {
  out: string;
  format: AdapterFormat;
  dtype: FloatDType;
  modules: ModuleEditReport[];
  edited: number;
  copied: number;
  /** modules_to_save tensors carried over unchanged */
  fullTensors: number;
  /** model pairs: tensors the filter picked that were not extracted, with why (e.g. only in one model, or quantized) */
  skipped: Array<{ name: string; reason: string }>;
  /** model pairs: modules (expert stacks: their parameter) identical in A and B, not written, as extract skips them */
  identical: string[];
  /** model pairs: tensors that are no LoRA target (norms, MoE routers, …) and differ, as extract reports them; not written */
  nonTargetDiffering: ChangedTensor[];
}

interface EditOptionsBase {
  /** a GEMM backend to use instead of getBackend() */
  backend?: LinalgBackend;
  out: string;
  edit: SigmaEdit;
  select?: ModuleSelector;
  /** seed of the --perturb draws (and, from a model pair, mixed with each tensor's name into its SVD's seed); default 0 */
  seed?: number;
  format?: AdapterFormat;
  /** storage dtype of the new factors; default the input's */
  dtype?: FloatDType;
  /** base model config.json, needed for GGUF output */
  baseConfig?: Record<string, unknown>;
  /** replace a non-empty `out` */
  overwrite?: boolean;
  onProgress?: OnProgress;
}

export interface EditAdapterOptions extends EditOptionsBase {
  adapter: string;
}

export interface EditDeltaOptions extends EditOptionsBase {
  modelA: string;
  modelB: string;
  /** rank extracted per tensor before editing; one a tensor cannot hold is refused */
  rank: number;
  /** tensors to extract (default: weights inside layers.N.) */
  include?: RegExp;
}

/** A fixed rank a tensor cannot hold is refused (as extract does), pointing at edit's own flags. */
const PAIR_WAYS_OUT = 'Lower --rank, or leave the tensor out with --include';

/**
 * The rank-r truncated SVD of one Δ, exactly as extract takes it (same SVD settings, seed from the
 * tensor's name and --seed), so an unedited module is extract's factors byte for byte. Expert e of
 * a stack draws from the stack's seed + e + 1, as extract's do.
 */
async function deltaSvd(backend: LinalgBackend, delta: Matrix, opts: EditDeltaOptions, name: string, shape: readonly number[], expert?: number): Promise<Svd> {
  const policy: RankPolicy = { mode: 'rank', rank: opts.rank };
  const seed = tensorSeed(opts.seed ?? 0, name) + (expert === undefined ? 0 : expert + 1);
  return (await decompose(backend, delta, sumSquares(delta.data), policy, seed, { name, shape, waysOut: PAIR_WAYS_OUT })).svd;
}

/** Number of singular triplets the SVD of a rank-r product of an out×in update has. */
function componentCount(rank: number, out: number, inF: number): number {
  return Math.min(rank, out, inF);
}

function checkIndices(e: SigmaEdit, selectedCounts: number[], where: string): void {
  if (isEmptyEdit(e)) throw new Error(`${where}: no edit given: pass --zero, --keep, --scale or --perturb`);
  if (selectedCounts.length === 0) throw new Error(`${where}: --layers/--modules select no module; nothing would be edited`);
  const most = Math.max(...selectedCounts);
  const largest = largestIndex(e);
  if (largest >= most) {
    throw new Error(`${where}: component index ${largest} does not exist: the selected modules have at most ${most} components (indices 0-${most - 1})`);
  }
  if (e.perturb !== undefined && !Number.isFinite(e.perturb)) throw new Error(`${where}: --perturb must be a finite number`);
}

/** Draws this module's noise when perturbing (every module draws, selected or not, so the stream is fixed). */
function drawNoise(rng: Rng | undefined, count: number): Float64Array | undefined {
  if (!rng) return undefined;
  const noise = new Float64Array(count);
  for (let i = 0; i < count; i++) noise[i] = rng.normal();
  return noise;
}

async function dominantDType(weightsPath: string): Promise<FloatDType> {
  const file = await openSafetensors(weightsPath);
  try {
    const counts = new Map<string, number>();
    for (const t of file.list()) counts.set(t.dtype, (counts.get(t.dtype) ?? 0) + 1);
    const [best] = [...counts].sort((a, b) => b[1] - a[1])[0] ?? ['F32'];
    return isFloatDType(best) ? best : 'F32';
  } finally {
    await file.close();
  }
}

/** Writes into a temporary sibling of `out` and moves it into place only when everything succeeded. */
async function withAdapterOutput<T>(
  out: string,
  inputs: string[],
  overwrite: boolean,
  makeSink: (dir: string) => Promise<AdapterSink>,
  body: (sink: AdapterSink) => Promise<T>,
): Promise<T> {
  assertNotInput(out, inputs);
  return withAtomicSink({ dir: out, overwrite }, makeSink, async (sink) => {
    const result = await body(sink);
    await sink.finish();
    return result;
  });
}

function summarize(
  out: string,
  format: AdapterFormat,
  dtype: FloatDType,
  modules: ModuleEditReport[],
  fullTensors: number,
  skipped: EditSummary['skipped'] = [],
  identical: string[] = [],
  nonTargetDiffering: ChangedTensor[] = [],
): EditSummary {
  const edited = modules.filter((m) => m.edited).length;
  return { out, format, dtype, modules, edited, copied: modules.length - edited, fullTensors, skipped, identical, nonTargetDiffering };
}

/** What selection and the --perturb order go by: a plain module's path, or an expert stack's parameter. */
function editKey(info: LoraModuleInfo): string {
  return info.experts?.parameter ?? info.name;
}

/** Components of one update: min(r, out, in), with r per expert for an expert stack. */
function componentsOf(info: LoraModuleInfo): number {
  return componentCount(info.experts?.rank ?? info.rank, info.outFeatures, info.inFeatures);
}

interface AdapterEditContext {
  backend: LinalgBackend;
  adapter: PeftAdapter;
  edit: SigmaEdit;
  useRslora: boolean;
  rng: Rng | undefined;
  sink: AdapterSink;
}

/** One plain module, edited or copied. */
async function writeModule(ctx: AdapterEditContext, info: LoraModuleInfo, selected: boolean): Promise<ModuleEditReport> {
  const noise = drawNoise(ctx.rng, componentsOf(info));
  const m = await ctx.adapter.load(info.name);
  if (!selected) {
    await ctx.sink.addModule(m);
    return { name: info.name, edited: false, rankBefore: info.rank, rankAfter: info.rank };
  }
  const svd = await productSvd(ctx.backend, await scaledLeftFactor(ctx.backend, m, info.scaling), m.A);
  assertFiniteSpectrum(svd.S, `${ctx.adapter.dir}: module "${info.name}"`);
  const r = refactorEdited(svd, ctx.edit, info.alpha, ctx.useRslora, noise);
  await ctx.sink.addModule({ name: m.name, kind: m.kind, A: r.A, B: r.B, alpha: info.alpha });
  return { name: info.name, edited: true, rankBefore: info.rank, rankAfter: r.rank, sigmaBefore: Array.from(svd.S), sigmaAfter: Array.from(r.sigmaAfter) };
}

/**
 * One expert stack, edited expert by expert or copied, written under its own key (the writer nests
 * it by the input's target_parameters, as the input was); reported as one row per expert
 * (`<parameter>[e]`, ranks per expert).
 */
async function writeExpertStack(ctx: AdapterEditContext, info: LoraModuleInfo, selected: boolean): Promise<ModuleEditReport[]> {
  const { parameter, count, rank } = info.experts!;
  const noise = Array.from({ length: count }, () => drawNoise(ctx.rng, componentsOf(info)));
  if (!selected) {
    const stack = await ctx.adapter.loadExpertStack(info.name);
    await ctx.sink.addExpertStack({ parameter, count, A: stack.A, B: stack.B, alpha: info.alpha });
    return Array.from({ length: count }, (_, e) => ({ name: `${parameter}[${e}]`, edited: false, rankBefore: rank, rankAfter: rank }));
  }
  const r = await editExpertStack(ctx.backend, await ctx.adapter.loadExperts(info.name), ctx.edit, ctx.useRslora, noise, ctx.adapter.dir);
  await ctx.sink.addExpertStack({ parameter, count, A: r.A, B: r.B, alpha: info.alpha });
  return r.experts.map((x) => ({
    name: x.name,
    edited: true,
    rankBefore: rank,
    rankAfter: r.rank,
    sigmaBefore: Array.from(x.sigmaBefore),
    sigmaAfter: Array.from(x.sigmaAfter),
  }));
}

/**
 * Edits Σ of the selected modules of a PEFT adapter and writes a new adapter to `opts.out`;
 * unselected modules and modules_to_save tensors are copied unchanged. MoE expert stacks
 * (target_parameters) are selected by their parameter's path and edited expert by expert.
 */
export function editAdapter(params: EditAdapterOptions): Promise<EditSummary> {
  return withInputTracking(async () => editAdapterInRun(params.backend ?? (await getBackend()), params));
}

async function editAdapterInRun(backend: LinalgBackend, opts: EditAdapterOptions): Promise<EditSummary> {
  const select = opts.select ?? {};
  const format = opts.format ?? 'peft';
  const adapter = await openPeftAdapter(opts.adapter);
  try {
    const useRslora = adapter.config.use_rslora === true;
    const infos: LoraModuleInfo[] = [...adapter.modules].sort((a, b) => naturalCompare(editKey(a), editKey(b)));
    const selected = infos.filter((m) => isSelected(select, editKey(m)));
    const special = selected.find((m) => m.hasMagnitude || m.hasLatent);
    if (special) {
      throw new Error(
        `${opts.adapter}: module "${special.name}" is ${special.hasMagnitude ? 'DoRA' : 'EDoRA'}; edit re-factorises plain LoRA updates scaling·B·A only — convert the adapter to LoRA first`,
      );
    }
    const stack = infos.find((m) => m.experts);
    checkIndices(opts.edit, selected.map(componentsOf), opts.adapter);
    const dtype = opts.dtype ?? (await dominantDType(join(opts.adapter, ADAPTER_WEIGHTS_FILE)));
    const rng = opts.edit.perturb ? createRng(opts.seed ?? 0) : undefined;
    const hasDora = infos.some((m) => m.hasMagnitude);

    const makeSink = (dir: string) =>
      createAdapterSink(dir, {
        format,
        dtype,
        baseModel: adapter.config.base_model_name_or_path ?? undefined,
        baseConfig: opts.baseConfig,
        useRslora,
        useDora: hasDora,
        extraConfig: adapter.config,
        experts: stack && {
          parameters: adapter.config.target_parameters ?? [],
          source: 'carried',
          ggufRefusal:
            `${opts.adapter}: module "${stack.name}" holds the MoE expert stack "${stack.experts!.parameter}" (PEFT target_parameters), which cannot be written ` +
            'to a GGUF LoRA yet: pass --format peft',
        },
      });
    const write = async (sink: AdapterSink) => {
      const ctx: AdapterEditContext = { backend, adapter, edit: opts.edit, useRslora, rng, sink };
      const reports: ModuleEditReport[] = [];
      for (const [index, info] of infos.entries()) {
        const picked = isSelected(select, editKey(info));
        if (info.experts) reports.push(...(await writeExpertStack(ctx, info, picked)));
        else reports.push(await writeModule(ctx, info, picked));
        opts.onProgress?.({ index, total: infos.length, name: editKey(info) });
      }
      for (const t of adapter.fullTensors) await sink.addFull(t.name, t.shape, await adapter.readFull(t.name));
      return summarize(opts.out, format, dtype, reports, adapter.fullTensors.length);
    };
    return await withAdapterOutput(opts.out, [opts.adapter], opts.overwrite ?? false, makeSink, write);
  } finally {
    await adapter.close();
  }
}

/**
 * One 3-D expert tensor of a model pair as a PEFT expert stack: every expert's ΔW_e is extracted
 * at `rank` (randomized SVD), edited when the stack is selected, and stacked as an adapter's stack
 * is (editExpertSvds).
 */
async function writePairExpertStack(
  backend: LinalgBackend,
  sink: AdapterSink,
  stack: ExpertDeltaTensor,
  delta: Float32Array,
  opts: EditDeltaOptions,
  rng: Rng | undefined,
  edited: boolean,
): Promise<ModuleEditReport[]> {
  const count = componentCount(opts.rank, stack.shape[0], stack.shape[1]);
  const alpha = opts.rank;
  const experts: Array<{ name: string; svd: Svd }> = [];
  const noise: Array<Float64Array | undefined> = [];
  for (let e = 0; e < stack.stored[0]; e++) {
    noise.push(drawNoise(rng, count));
    experts.push({ name: `${stack.parameter}[${e}]`, svd: await deltaSvd(backend, expertDelta(delta, stack, e), opts, stack.name, stack.stored, e) });
  }
  const r = editExpertSvds(experts, edited ? opts.edit : {}, alpha, false, noise);
  await sink.addExpertStack({ parameter: stack.parameter, count: stack.stored[0], A: r.A, B: r.B, alpha });
  return r.experts.map((x) => ({
    name: x.name,
    edited,
    rankBefore: count,
    rankAfter: r.rank,
    ...(edited ? { sigmaBefore: Array.from(x.sigmaBefore), sigmaAfter: Array.from(x.sigmaAfter) } : {}),
  }));
}

/**
 * Extracts a rank-`opts.rank` LoRA of Δ = W_B − W_A (randomized SVD, pair by pair), edits Σ of
 * the selected modules and writes the adapter. Modules get alpha = rank, so an unedited module
 * has scaling 1 and B·A is the truncated Δ itself. A 3-D MoE expert tensor becomes a PEFT expert
 * stack (target_parameters, as extract writes it), extracted whole when --include picks any of
 * its experts, selected by its parameter's path and edited expert by expert.
 */
export function editDelta(params: EditDeltaOptions): Promise<EditSummary> {
  return withInputTracking(async () => editDeltaInRun(params.backend ?? (await getBackend()), params));
}

async function editDeltaInRun(backend: LinalgBackend, opts: EditDeltaOptions): Promise<EditSummary> {
  const select = opts.select ?? {};
  const format = opts.format ?? 'peft';
  if (!Number.isInteger(opts.rank) || opts.rank < 1) throw new Error(`spectrum/edit.ts: rank must be an integer ≥ 1, got ${opts.rank}`);
  const a = await openCheckpoint(opts.modelA);
  try {
    const b = await openCheckpoint(opts.modelB);
    try {
      const plan = planDeltaTensors(a, b, opts.include, a.config ?? b.config);
      if (plan.pairs.length === 0 && plan.experts.length === 0) {
        throw new Error(`${opts.modelA} and ${opts.modelB}: no 2-D tensors or MoE expert tensors in both checkpoints match the filter; pass --include REGEX to choose tensors`);
      }
      // one stream over both kinds in name order, as spectrum reads them; it is also the --perturb order
      type Job = { name: string; stack?: ExpertDeltaTensor };
      const jobs: Job[] = [...plan.pairs.map((p) => ({ name: p.name })), ...plan.experts.map((t) => ({ name: t.name, stack: t }))].sort((x, y) =>
        naturalCompare(x.name, y.name),
      );
      const counts = [
        ...plan.pairs.filter((p) => isSelected(select, withoutWeightSuffix(p.name))).map((p) => componentCount(opts.rank, p.shape[0], p.shape[1])),
        ...plan.experts.filter((t) => isSelected(select, t.parameter)).map((t) => componentCount(opts.rank, t.shape[0], t.shape[1])),
      ];
      checkIndices(opts.edit, counts, `${opts.modelA} → ${opts.modelB}`);
      const firstDType = b.info(jobs[0].name).dtype;
      const dtype = opts.dtype ?? (isFloatDType(firstDType) ? firstDType : 'F32');
      const rng = opts.edit.perturb ? createRng(opts.seed ?? 0) : undefined;
      const alpha = opts.rank;
      const experts: AdapterSinkOptions['experts'] = plan.experts.length
        ? {
            parameters: plan.experts.map((t) => t.parameter),
            source: 'planned',
            ggufRefusal:
              `${opts.modelB}: "${plan.experts[0].name}" is a 3-D MoE expert tensor, which edit writes as a PEFT expert stack (target_parameters) and cannot write ` +
              'to a GGUF LoRA yet: pass --format peft, or --include a filter that leaves the expert tensors out',
          }
        : undefined;
      const makeSink = (dir: string) => createAdapterSink(dir, { format, dtype, baseModel: baseModelNameOrPath(a), baseConfig: opts.baseConfig ?? a.config, experts });
      const write = async (sink: AdapterSink) => {
        const reports: ModuleEditReport[] = [];
        const identical: string[] = [];
        const blocks = (job: Job) => job.stack?.stored[0] ?? 1;
        for await (const { item, delta, energies, index } of streamDifferences(a, b, jobs, blocks, 1)) {
          const stack = item.stack;
          if (energies.every((e) => e === 0)) {
            // Δ = 0 would be written as a zero LoRA of full rank; extract skips it, and so does edit.
            // Its --perturb draws are still taken, so the other modules' noise does not depend on it.
            const [rows, cols] = stack ? stack.shape : b.info(item.name).shape;
            for (let e = 0; e < blocks(item); e++) drawNoise(rng, componentCount(opts.rank, rows, cols));
            const path = stack ? stack.parameter : withoutWeightSuffix(item.name);
            identical.push(path);
            opts.onProgress?.({ index, total: jobs.length, name: path });
            continue;
          }
          if (stack) {
            reports.push(...(await writePairExpertStack(backend, sink, stack, delta, opts, rng, isSelected(select, stack.parameter))));
            opts.onProgress?.({ index, total: jobs.length, name: stack.parameter });
            continue;
          }
          const [rows, cols] = b.info(item.name).shape;
          const count = componentCount(opts.rank, rows, cols);
          const noise = drawNoise(rng, count);
          const svd = await deltaSvd(backend, { rows, cols, data: delta }, opts, item.name, [rows, cols]);
          assertFiniteSpectrum(svd.S, `${opts.modelB}: tensor "${item.name}"`);
          const path = withoutWeightSuffix(item.name);
          const edited = isSelected(select, path);
          const r = refactorEdited(svd, edited ? opts.edit : {}, alpha, false, noise);
          await sink.addModule({ name: path, kind: 'linear', A: r.A, B: r.B, alpha });
          reports.push({
            name: path,
            edited,
            rankBefore: count,
            rankAfter: r.rank,
            ...(edited ? { sigmaBefore: Array.from(svd.S), sigmaAfter: Array.from(r.sigmaAfter) } : {}),
          });
          opts.onProgress?.({ index, total: jobs.length, name: path });
        }
        if (!reports.length) {
          throw new Error(`${opts.modelA} and ${opts.modelB} are identical in all ${identical.length} tensor(s) compared: there is no update to edit; nothing written`);
        }
        const changed = await changedTensors(a, b, plan.compared);
        const changedNames = new Set(changed.map((t) => t.name));
        const skipped = plan.skipped.filter((t) => !changedNames.has(t.name));
        return summarize(opts.out, format, dtype, reports, 0, skipped, identical, changed);
      };
      return await withAdapterOutput(opts.out, [opts.modelA, opts.modelB], opts.overwrite ?? false, makeSink, write);
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}
