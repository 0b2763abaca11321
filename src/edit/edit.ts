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
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { openSafetensors } from '../io/safetensors.js';
import type { FloatDType } from '../io/types.js';
import { isFloatDType } from '../tensor/dtype.js';
import { ADAPTER_WEIGHTS_FILE, openPeftAdapter, type LoraExpertsModule, type LoraExpertStack, type LoraModule, type LoraModuleInfo, type PeftAdapter } from '../lora/adapter.js';
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
import { runCommand } from '../pipeline/run.js';
import type { LoraFileOutFormat } from '../lora/lora-file-output.js';

export {
  applySigmaEdit,
  isEmptyEdit,
  largestIndex,
  refactorEdited,
  removedComponents,
  type Refactored,
  type SigmaEdit,
} from './sigma-edit.js';
import type { OnProgress } from '../progress.js';
import type { HubOptions } from '../io/hub/index.js';
import { localInput } from '../io/local-inputs.js';

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
  /** LoRA-file inputs: the layout written (kohya, diffusers, or a PEFT folder) */
  format: AdapterFormat | LoraFileOutFormat;
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
  /** how Hub ids among the inputs are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
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
export function componentCount(rank: number, out: number, inF: number): number {
  return Math.min(rank, out, inF);
}

export function checkIndices(e: SigmaEdit, selectedCounts: number[], where: string): void {
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
export function drawNoise(rng: Rng | undefined, count: number): Float64Array | undefined {
  if (!rng) return undefined;
  const noise = new Float64Array(count);
  for (let i = 0; i < count; i++) noise[i] = rng.normal();
  return noise;
}

export async function dominantDType(weightsPath: string): Promise<FloatDType> {
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

export function summarize(
  out: string,
  format: EditSummary['format'],
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

/** One module of the input adapter, in the order it is written (and draws its --perturb noise). */
interface AdapterItem {
  /** editKey: progress names it */
  name: string;
  info: LoraModuleInfo;
  selected: boolean;
}

/** What writing one module reads: its factors; a stack's as stored, or per expert when it is edited. */
type ModuleInput = { module: LoraModule } | { stack: LoraExpertStack } | { experts: LoraExpertsModule };

function readModuleInput(adapter: PeftAdapter, { info, selected }: AdapterItem): Promise<ModuleInput> {
  if (!info.experts) return adapter.load(info.name).then((module) => ({ module }));
  return selected ? adapter.loadExperts(info.name).then((experts) => ({ experts })) : adapter.loadExpertStack(info.name).then((stack) => ({ stack }));
}

/** One plain module, edited or copied. */
async function writeModule(ctx: AdapterEditContext, { info, selected }: AdapterItem, m: LoraModule): Promise<ModuleEditReport> {
  const noise = drawNoise(ctx.rng, componentsOf(info));
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
 * One expert stack, edited expert by expert (`experts`) or copied (`stack`), written under its own
 * key (the writer nests it by the input's target_parameters, as the input was); reported as one
 * row per expert (`<parameter>[e]`, ranks per expert).
 */
async function writeExpertStack(ctx: AdapterEditContext, info: LoraModuleInfo, input: { stack: LoraExpertStack } | { experts: LoraExpertsModule }): Promise<ModuleEditReport[]> {
  const { parameter, count, rank } = info.experts!;
  const noise = Array.from({ length: count }, () => drawNoise(ctx.rng, componentsOf(info)));
  if ('stack' in input) {
    await ctx.sink.addExpertStack({ parameter, count, A: input.stack.A, B: input.stack.B, alpha: info.alpha });
    return Array.from({ length: count }, (_, e) => ({ name: `${parameter}[${e}]`, edited: false, rankBefore: rank, rankAfter: rank }));
  }
  const r = await editExpertStack(ctx.backend, input.experts, ctx.edit, ctx.useRslora, noise, ctx.adapter.dir);
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

/** The modules in editKey order, checked: no DoRA/EDoRA among the selected, indices that exist. */
async function planAdapterEdit(adapter: PeftAdapter, opts: EditAdapterOptions) {
  const select = opts.select ?? {};
  const infos: LoraModuleInfo[] = [...adapter.modules].sort((a, b) => naturalCompare(editKey(a), editKey(b)));
  const items: AdapterItem[] = infos.map((info) => ({ name: editKey(info), info, selected: isSelected(select, editKey(info)) }));
  const selected = items.filter((m) => m.selected).map((m) => m.info);
  const special = selected.find((m) => m.hasMagnitude || m.hasLatent);
  if (special) {
    throw new Error(
      `${opts.adapter}: module "${special.name}" is ${special.hasMagnitude ? 'DoRA' : 'EDoRA'}; edit re-factorises plain LoRA updates scaling·B·A only — convert the adapter to LoRA first`,
    );
  }
  checkIndices(opts.edit, selected.map(componentsOf), opts.adapter);
  const dtype = opts.dtype ?? (await dominantDType(join(opts.adapter, ADAPTER_WEIGHTS_FILE)));
  return { items, dtype, stack: infos.find((m) => m.experts), rng: opts.edit.perturb ? createRng(opts.seed ?? 0) : undefined };
}

/**
 * Edits Σ of the selected modules of a PEFT adapter and writes a new adapter to `opts.out`;
 * unselected modules and modules_to_save tensors are copied unchanged. MoE expert stacks
 * (target_parameters) are selected by their parameter's path and edited expert by expert.
 */
export async function editAdapter(params: EditAdapterOptions): Promise<EditSummary> {
  const opts = { ...params, adapter: await localInput(params.adapter, 'adapter', params) };
  const format = opts.format ?? 'peft';
  return runCommand({
    inputs: [opts.adapter],
    open: async (keep) => {
      const backend = opts.backend ?? (await getBackend());
      return { backend, adapter: keep(await openPeftAdapter(opts.adapter)) };
    },
    plan: ({ adapter }) => planAdapterEdit(adapter, opts),
    output: {
      dir: opts.out,
      overwrite: opts.overwrite,
      sink: (dir, { res: { adapter }, plan: { dtype, stack, items } }) =>
        createAdapterSink(dir, {
          format,
          dtype,
          baseModel: adapter.config.base_model_name_or_path ?? undefined,
          baseConfig: opts.baseConfig,
          useRslora: adapter.config.use_rslora === true,
          useDora: items.some((m) => m.info.hasMagnitude),
          extraConfig: adapter.config,
          experts: stack && {
            parameters: adapter.config.target_parameters ?? [],
            source: 'kept',
            ggufRefusal:
              `${opts.adapter}: module "${stack.name}" holds the MoE expert stack "${stack.experts!.parameter}" (PEFT target_parameters), which cannot be written ` +
              'to a GGUF LoRA yet: pass --format peft',
          },
        }),
    },
    load: (item, { res }) => readModuleInput(res.adapter, item),
    each: async (item, input, { res: { backend, adapter }, plan: { rng }, sink }) => {
      const ctx: AdapterEditContext = { backend, adapter, edit: opts.edit, useRslora: adapter.config.use_rslora === true, rng, sink };
      return 'module' in input ? [await writeModule(ctx, item, input.module)] : writeExpertStack(ctx, item.info, input);
    },
    finish: async (rows, { res: { adapter }, plan: { dtype }, sink }) => {
      for (const t of adapter.fullTensors) await sink.addFull(t.name, t.shape, await adapter.readFull(t.name));
      await sink.finish();
      return summarize(opts.out, format, dtype, rows.flat(), adapter.fullTensors.length);
    },
    onProgress: opts.onProgress,
  });
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

/** One tensor of the pair (a 3-D expert tensor: the whole stack), under the path it is written and selected by. */
interface PairItem {
  /** the module path (a stack: its parameter); progress names it */
  name: string;
  /** what the pair stream reads: the tensor */
  job: { name: string; stack?: ExpertDeltaTensor };
}

/** What one tensor of the pair gave: its report rows, or, when A and B agree on it, its path. */
type PairRow = { reports: ModuleEditReport[] } | { identical: string };

/** The tensors in name order (also the --perturb order), checked, with the adapter's dtype and expert stacks. */
function planDeltaEdit(a: Checkpoint, b: Checkpoint, opts: EditDeltaOptions) {
  const select = opts.select ?? {};
  const plan = planDeltaTensors(a, b, opts.include, a.config ?? b.config);
  if (plan.pairs.length === 0 && plan.experts.length === 0) {
    throw new Error(`${opts.modelA} and ${opts.modelB}: no 2-D tensors or MoE expert tensors in both checkpoints match the filter; pass --include REGEX to choose tensors`);
  }
  // one stream over both kinds in name order, as spectrum reads them; it is also the --perturb order
  const jobs: PairItem['job'][] = [...plan.pairs.map((p) => ({ name: p.name })), ...plan.experts.map((t) => ({ name: t.name, stack: t }))].sort((x, y) =>
    naturalCompare(x.name, y.name),
  );
  const counts = [
    ...plan.pairs.filter((p) => isSelected(select, withoutWeightSuffix(p.name))).map((p) => componentCount(opts.rank, p.shape[0], p.shape[1])),
    ...plan.experts.filter((t) => isSelected(select, t.parameter)).map((t) => componentCount(opts.rank, t.shape[0], t.shape[1])),
  ];
  checkIndices(opts.edit, counts, `${opts.modelA} → ${opts.modelB}`);
  const firstDType = b.info(jobs[0].name).dtype;
  const experts: AdapterSinkOptions['experts'] = plan.experts.length
    ? {
        parameters: plan.experts.map((t) => t.parameter),
        source: 'new',
        ggufRefusal:
          `${opts.modelB}: "${plan.experts[0].name}" is a 3-D MoE expert tensor, which edit writes as a PEFT expert stack (target_parameters) and cannot write ` +
          'to a GGUF LoRA yet: pass --format peft, or --include a filter that leaves the expert tensors out',
      }
    : undefined;
  return {
    items: jobs.map((job): PairItem => ({ name: job.stack ? job.stack.parameter : withoutWeightSuffix(job.name), job })),
    pairs: plan,
    dtype: opts.dtype ?? (isFloatDType(firstDType) ? firstDType : 'F32'),
    rng: opts.edit.perturb ? createRng(opts.seed ?? 0) : undefined,
    experts,
  };
}

/**
 * Extracts a rank-`opts.rank` LoRA of Δ = W_B − W_A (randomized SVD, pair by pair), edits Σ of
 * the selected modules and writes the adapter. Modules get alpha = rank, so an unedited module
 * has scaling 1 and B·A is the truncated Δ itself. A 3-D MoE expert tensor becomes a PEFT expert
 * stack (target_parameters, as extract writes it), extracted whole when --include picks any of
 * its experts, selected by its parameter's path and edited expert by expert.
 */
export async function editDelta(params: EditDeltaOptions): Promise<EditSummary> {
  if (!Number.isInteger(params.rank) || params.rank < 1) throw new Error(`spectrum/edit.ts: rank must be an integer ≥ 1, got ${params.rank}`);
  const opts = { ...params, modelA: await localInput(params.modelA, 'model', params), modelB: await localInput(params.modelB, 'model', params) };
  const select = opts.select ?? {};
  const format = opts.format ?? 'peft';
  const alpha = opts.rank;
  const blocks = (job: PairItem['job']) => job.stack?.stored[0] ?? 1;
  return runCommand({
    inputs: [opts.modelA, opts.modelB],
    open: async (keep) => {
      const backend = opts.backend ?? (await getBackend());
      const a = keep(await openCheckpoint(opts.modelA));
      return { backend, a, b: keep(await openCheckpoint(opts.modelB)) };
    },
    plan: ({ a, b }) => planDeltaEdit(a, b, opts),
    output: {
      dir: opts.out,
      overwrite: opts.overwrite,
      sink: (dir, { res: { a }, plan: { dtype, experts } }) => createAdapterSink(dir, { format, dtype, baseModel: baseModelNameOrPath(a), baseConfig: opts.baseConfig ?? a.config, experts }),
    },
    stream: ({ res: { a, b }, plan }) => streamDifferences(a, b, plan.items.map((i) => i.job), blocks, 1),
    each: async (item, { delta, energies }, { res: { backend, b }, plan: { rng }, sink }): Promise<PairRow> => {
      const { stack } = item.job;
      if (energies.every((e) => e === 0)) {
        // Δ = 0 would be written as a zero LoRA of full rank; extract skips it, and so does edit.
        // Its --perturb draws are still taken, so the other modules' noise does not depend on it.
        const [rows, cols] = stack ? stack.shape : b.info(item.job.name).shape;
        for (let e = 0; e < blocks(item.job); e++) drawNoise(rng, componentCount(opts.rank, rows, cols));
        return { identical: item.name };
      }
      if (stack) return { reports: await writePairExpertStack(backend, sink, stack, delta, opts, rng, isSelected(select, stack.parameter)) };
      const [rows, cols] = b.info(item.job.name).shape;
      const count = componentCount(opts.rank, rows, cols);
      const noise = drawNoise(rng, count);
      const svd = await deltaSvd(backend, { rows, cols, data: delta }, opts, item.job.name, [rows, cols]);
      assertFiniteSpectrum(svd.S, `${opts.modelB}: tensor "${item.job.name}"`);
      const edited = isSelected(select, item.name);
      const r = refactorEdited(svd, edited ? opts.edit : {}, alpha, false, noise);
      await sink.addModule({ name: item.name, kind: 'linear', A: r.A, B: r.B, alpha });
      return {
        reports: [
          {
            name: item.name,
            edited,
            rankBefore: count,
            rankAfter: r.rank,
            ...(edited ? { sigmaBefore: Array.from(svd.S), sigmaAfter: Array.from(r.sigmaAfter) } : {}),
          },
        ],
      };
    },
    finish: async (rows, { res: { a, b }, plan: { pairs, dtype }, sink }) => {
      const reports = rows.flatMap((r) => ('reports' in r ? r.reports : []));
      const identical = rows.flatMap((r) => ('identical' in r ? [r.identical] : []));
      if (!reports.length) {
        throw new Error(`${opts.modelA} and ${opts.modelB} are identical in all ${identical.length} tensor(s) compared: there is no update to edit; nothing written`);
      }
      const changed = await changedTensors(a, b, pairs.compared);
      const changedNames = new Set(changed.map((t) => t.name));
      const skipped = pairs.skipped.filter((t) => !changedNames.has(t.name));
      await sink.finish();
      return summarize(opts.out, format, dtype, reports, 0, skipped, identical, changed);
    },
    onProgress: opts.onProgress,
  });
}
