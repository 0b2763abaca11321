/**
 * merge-adapters end to end: open the adapters, plan every module (which adapters have it, with
 * what shape and rank), merge module by module while the next one is read, write the new adapter
 * through the adapter sink with r = alpha (scaling 1, as PEFT does) and report how far each module
 * is from the exact weighted sum.
 */
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { atomicWriteFile } from '../io/atomic.js';
import { UsageError } from '../errors.js';
import type { FloatDType } from '../io/types.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { getBackend } from '../linalg/index.js';
import { openPeftAdapter, type LoraConv, type LoraKind, type LoraModule, type LoraModuleInfo, type PeftAdapter } from '../lora/adapter.js';
import { createAdapterSink, type AdapterFormat, type ModuleSink } from '../lora/sink.js';
import { LoraFile, openLoraFile } from '../lora/lora-file.js';
import { checkLoraFileOutPath, checkLoraFileOutput, createLoraFileOutput, type LoraFileOutFormat } from '../lora/lora-file-output.js';
import type { LoraFileFormat } from '../lora/lora-file-format.js';
import { runCommand } from '../pipeline/run.js';
import { matrix, transpose } from '../tensor/matrix.js';
import { compareToWeightedSum } from './exact.js';
import { unequalRanksProblem } from './combine-factors.js';
import { outlierCounts } from '../sparsify/breadcrumbs.js';
import {
  DEFAULT_DENSITY,
  DEFAULT_EPSILON,
  DEFAULT_GAMMA,
  MERGE_METHODS,
  acceptedParams,
  checkMethodOptions,
  defaultSvdRank,
  mergeModule,
  type MethodName,
  type MethodOptions,
  type MethodParam,
} from './methods.js';
import { seededMaskSource } from './prune.js';
import type { LowRank, MajoritySign, MaskSource, MergeTerm } from './types.js';
import type { OnProgress } from '../progress.js';
import type { HubOptions } from '../io/hub/index.js';
import { localInput } from '../io/local-inputs.js';

export const REPORT_FILE = 'report.json';
const DEFAULT_MAJORITY_SIGN: MajoritySign = 'total';
const DEFAULT_SEED = 0;

export interface AdapterInput {
  /** PEFT adapter folder (adapter_config.json + adapter_model.safetensors), or a kohya/diffusers LoRA `.safetensors` file */
  path: string;
  weight: number;
}

export interface MergeAdaptersOptions extends MethodOptions {
  adapters: AdapterInput[];
  method: MethodName;
  /** output folder; for LoRA-file inputs, the output `.safetensors` file (written in the inputs' layout) */
  out: string;
  /** PEFT-folder inputs only */
  format?: AdapterFormat;
  /** LoRA-file inputs: kohya, diffusers (`.safetensors` --out) or peft (a folder); default the inputs' layout */
  outFormat?: LoraFileOutFormat;
  dtype?: FloatDType;
  /** base model config.json, needed for GGUF output */
  baseConfig?: Record<string, unknown>;
  /** replace a non-empty --out */
  overwrite?: boolean;
  backend?: LinalgBackend;
  /** where DARE masks come from; default: the seeded RNG (`seed`) */
  masks?: MaskSource;
  /** how Hub ids among the inputs are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
  /** called after each module */
  onProgress?: OnProgress;
}

export interface ModuleReport {
  name: string;
  kind: LoraKind;
  method: MethodName;
  /** rank per adapter, in command-line order; null where the adapter lacks the module */
  inputRanks: Array<number | null>;
  outputRank: number;
  /** ‖result − Σ w_i·s_i·B_i·A_i‖_F / ‖Σ …‖_F; null when the exact sum is zero */
  relError: number | null;
  exactNorm: number;
  clampHi?: number;
  /** set when the module was left out of the output */
  omitted?: string;
}

export interface MergeReport {
  method: MethodName;
  /** the method actually applied (PEFT turns any method into linear for a single adapter) */
  resolvedMethod: MethodName;
  /** 'peft': PEFT's formulas at the reference commit; 'exact': the true weighted deltas */
  semantics: 'peft' | 'exact';
  adapters: Array<{ path: string; weight: number; modules: number; ranks: number[] }>;
  density?: number;
  majoritySign?: MajoritySign;
  gamma?: number;
  epsilon?: number;
  /** output rank of the SVD paths (null: keep every non-zero singular value) */
  svdRank?: number | null;
  svdClamp?: number;
  seed?: number;
  out: string;
  /** the layout written from LoRA-file inputs (kohya, diffusers, or a PEFT folder) */
  format: AdapterFormat | LoraFileOutFormat;
  modules: ModuleReport[];
  /** modules_to_save tensors copied from the one adapter that has them */
  carriedTensors: string[];
  notes: string[];
  maxRelError: number | null;
  seconds: number;
}

interface ModulePlan {
  name: string;
  kind: LoraKind;
  /** a conv LoRA (kohya/diffusers files): merged as its flattened out × (in·kh·kw) delta */
  conv?: LoraConv;
  /** (adapter index, module info) for every adapter that has the module */
  sources: Array<{ adapter: number; info: LoraModuleInfo }>;
}

const DORA_MESSAGE = 'DoRA adapters cannot be merged yet; convert them to LoRA first with `loraforge convert`';

/** What merge-adapters reads: PEFT folders, or kohya/diffusers LoRA files (all inputs of one kind). */
type MergeInput = PeftAdapter | LoraFile;

/** Module shapes as messages show them: `linear 8×16`, `conv 3×3 8×(4·3·3)`. */
function shapeOf(i: LoraModuleInfo): string {
  if (!i.conv) return `${i.kind} ${i.outFeatures}×${i.inFeatures}`;
  const [kh, kw] = i.conv.kernel;
  return `conv ${kh}×${kw} ${i.outFeatures}×(${i.inFeatures / (kh * kw)}·${kh}·${kw})`;
}

/** Modules in first-seen order over the adapters, with shapes and kinds checked to agree. */
function planModules(adapters: MergeInput[]): ModulePlan[] {
  const plans = new Map<string, ModulePlan>();
  adapters.forEach((adapter, index) => {
    for (const info of adapter.modules) {
      if (info.hasMagnitude) throw new Error(`${adapter.dir}: module "${info.name}" is DoRA (has a magnitude vector). ${DORA_MESSAGE}`);
      if (info.experts) {
        throw new Error(
          `${adapter.dir}: "${info.experts.parameter}" is an MoE expert stack (PEFT target_parameters, ${info.experts.count} experts); ` +
            'merge-adapters does not merge expert stacks yet: apply each adapter to the base with `loraforge apply` instead',
        );
      }
      const plan = plans.get(info.name);
      if (!plan) {
        plans.set(info.name, { name: info.name, kind: info.kind, conv: info.conv, sources: [{ adapter: index, info }] });
        continue;
      }
      const first = plan.sources[0];
      if (shapeOf(info) !== shapeOf(first.info)) {
        throw new Error(
          `module "${info.name}" is ${shapeOf(first.info)} in ${adapters[first.adapter].dir} but ${shapeOf(info)} in ${adapter.dir}: ` +
            'adapters for different base models (or layers) cannot be merged',
        );
      }
      plan.sources.push({ adapter: index, info });
    }
  });
  return [...plans.values()];
}

/** modules_to_save tensors: carried over when one adapter has them, refused when several do (as PEFT). */
function planFullTensors(adapters: MergeInput[]): Array<{ adapter: number; name: string; shape: number[] }> {
  const owners = new Map<string, number>();
  const out: Array<{ adapter: number; name: string; shape: number[] }> = [];
  adapters.forEach((adapter, index) => {
    for (const t of adapter.fullTensors) {
      const other = owners.get(t.name);
      if (other !== undefined) {
        throw new Error(
          `"${t.name}" is a full tensor (modules_to_save) in both ${adapters[other].dir} and ${adapter.dir}: full tensors cannot be ` +
            'merged by weight; remove it from all but one adapter',
        );
      }
      owners.set(t.name, index);
      out.push({ adapter: index, name: t.name, shape: t.shape });
    }
  });
  return out;
}

/**
 * A LoRA file's module as a merge term. The *_svd methods weight each delta s·B·A by w·s (PEFT's
 * double scaling, which has no precedent for these files), so for them √|s| is folded into each
 * factor (the sign into A) and the scaling set to 1: each delta is then weighted by w alone and the
 * scale counts once, as kohya applies it. cat and the factor-wise methods get s as PEFT gets
 * lora_alpha/r, unfolded: they then compute exactly PEFT's formulas, including TIES' 'total' sign
 * election, which sums the unscaled factors (folded, it would sum √s_i·A_i and elect other signs).
 */
async function loadFileTerm(file: LoraFile, index: number, info: LoraModuleInfo, weight: number, foldScale: boolean): Promise<MergeTerm> {
  const m = await file.load(info.name);
  if (!foldScale || info.scaling === 1) return { adapter: index, A: m.A, B: m.B, scaling: info.scaling, weight };
  const root = Math.sqrt(Math.abs(info.scaling));
  const signed = info.scaling < 0 ? -root : root;
  return {
    adapter: index,
    A: matrix(m.A.rows, m.A.cols, m.A.data.map((x) => x * signed)),
    B: matrix(m.B.rows, m.B.cols, m.B.data.map((x) => x * root)),
    scaling: 1,
    weight,
  };
}

/**
 * A module as a merge term, in PEFT's orientation (embeddings swapped), EDoRA latents folded into B;
 * `foldScale`: a LoRA file's scale goes into its factors (see loadFileTerm).
 */
async function loadTerm(backend: LinalgBackend, adapter: MergeInput, index: number, info: LoraModuleInfo, weight: number, foldScale: boolean): Promise<MergeTerm> {
  if (adapter instanceof LoraFile) return loadFileTerm(adapter, index, info, weight, foldScale);
  const m = await adapter.load(info.name);
  const B = m.latent ? await backend.gemm(m.B, m.latent) : m.B; // ΔW = s·B·R·A = s·(B·R)·A
  const f = m.kind === 'embedding' ? { A: transpose(B), B: transpose(m.A) } : { A: m.A, B };
  return { adapter: index, A: f.A, B: f.B, scaling: info.scaling, weight };
}

/** Back from PEFT's orientation to the base weight's, as LoraModule wants. */
function toLoraModule(plan: ModulePlan, f: LowRank): LoraModule {
  const rank = f.A.rows;
  const factors = plan.kind === 'embedding' ? { A: transpose(f.B), B: transpose(f.A) } : f;
  const m: LoraModule = { name: plan.name, kind: plan.kind, A: factors.A, B: factors.B, alpha: rank };
  if (plan.conv) m.conv = plan.conv;
  return m;
}

/** The report's path: report.json in the output folder, or `<name>.report.json` beside an output file. */
export function mergeReportPath(out: string): string {
  // (a PEFT folder's path never ends in .safetensors: checkLoraFileOutPath refuses it)
  return isLoraFilePath(out) ? out.replace(/\.safetensors$/i, '.report.json') : join(out, REPORT_FILE);
}

function isLoraFilePath(path: string): boolean {
  return /\.safetensors$/i.test(path);
}

/**
 * Whether the inputs are LoRA files (true) or PEFT folders (false), with the output checked to match:
 * one kind of input per run, and a `.safetensors` output for files.
 */
async function inputKind(opts: MergeAdaptersOptions): Promise<boolean> {
  const isFile = await Promise.all(opts.adapters.map(async (a) => isLoraFilePath(a.path) && (await stat(a.path).catch(() => undefined))?.isFile() === true));
  const files = isFile.filter(Boolean).length;
  if (files > 0 && files < isFile.length) {
    const file = opts.adapters[isFile.indexOf(true)].path;
    const dir = opts.adapters[isFile.indexOf(false)].path;
    throw new UsageError(`${file} is a LoRA file but ${dir} is not: merge PEFT folders with PEFT folders, and kohya/diffusers files with files of the same layout`);
  }
  if (files === 0) {
    if (opts.outFormat !== undefined && opts.outFormat !== 'peft') throw new UsageError(`--out-format ${opts.outFormat} applies to kohya/diffusers LoRA files; PEFT folders are written with --format`);
    return false;
  }
  if (opts.format !== undefined) throw new UsageError(`--format ${opts.format} applies to PEFT folders; LoRA files are written in their inputs' layout, or the one --out-format names`);
  if (opts.outFormat === 'peft') {
    checkLoraFileOutPath(opts.out, 'peft');
    return true;
  }
  if (!isLoraFilePath(opts.out)) throw new UsageError(`--out ${opts.out}: the inputs are LoRA files, so the output is one too: give a path ending in .safetensors (or --out-format peft for a folder)`);
  if (!opts.overwrite && (await stat(opts.out).catch(() => undefined))) {
    throw new UsageError(`--out ${opts.out} exists: choose another file or pass --force to replace it`);
  }
  return true;
}

/** All LoRA files in one layout (their names differ otherwise); returns it. */
function commonFileFormat(files: LoraFile[]): LoraFileFormat {
  const other = files.find((f) => f.format !== files[0].format);
  if (other) {
    throw new UsageError(
      `${files[0].path} is a ${files[0].format} LoRA file but ${other.path} is ${other.format}: module names differ between the layouts; ` +
        'merge files of one layout',
    );
  }
  return files[0].format;
}

/** The header entries kohya's own merge carries from its inputs (the base model), taken from the first file. */
function carriedMetadata(file: LoraFile): Record<string, string> {
  const keep = ['ss_base_model_version', 'ss_v2'];
  return Object.fromEntries(keep.filter((k) => file.metadata[k] !== undefined).map((k) => [k, file.metadata[k]]));
}

function validate(opts: MergeAdaptersOptions): void {
  const m = MERGE_METHODS[opts.method];
  if (!m) throw new Error(`unknown merge method "${opts.method}"`);
  if (opts.adapters.length === 0) throw new Error('merge-adapters needs at least one adapter');
  for (const a of opts.adapters) {
    if (!Number.isFinite(a.weight)) throw new Error(`${a.path}: weight ${a.weight} is not a finite number`);
  }
  const problem = checkMethodOptions(m, opts);
  if (problem) throw new Error(problem);
}

function notesFor(resolved: MethodName, requested: MethodName, exact: boolean, adapterCount: number, files: boolean): string[] {
  const m = MERGE_METHODS[resolved];
  const notes: string[] = [];
  if (adapterCount === 1 && requested !== 'linear') {
    notes.push(`one adapter: merged with linear whatever the method, as PEFT does (the result is exactly weight × its delta)`);
  }
  if (m.family === 'factors' && !exact) {
    notes.push(
      `${resolved} merges lora_A and lora_B separately, as PEFT does: B'·A' carries cross terms B_j·A_i (i ≠ j), so it is not ` +
        'the weighted sum of the adapters; --exact merges the deltas and re-factorises instead',
    );
  }
  if (m.family === 'svd' && !exact && files) {
    notes.push(`${resolved} on LoRA files weights each delta (alpha/r)·up·down by w_i, applying each module's scale once, as kohya does`);
  } else if (m.family === 'svd' && !exact) {
    notes.push(
      `${resolved} reproduces PEFT at 5d602fd, which applies each adapter's scaling twice (weights w_i·s_i on deltas s_i·B_i·A_i); ` +
        '--exact uses w_i, as PEFT does after PR #3111',
    );
  }
  return notes;
}

/**
 * The note that an asked-for --svd-rank was not reached: a module's merged update has no more
 * directions than its true rank (e.g. the sum of two rank-8 adapters), and zero ones are not written.
 */
function lowerRankNote(asked: number | undefined, modules: readonly ModuleReport[]): string[] {
  if (asked === undefined) return [];
  const lower = modules.filter((m) => !m.omitted && m.outputRank < asked);
  if (!lower.length) return [];
  const ranks = [...new Set(lower.map((m) => m.outputRank))].sort((x, y) => x - y);
  const range = ranks.length === 1 ? `rank ${ranks[0]}` : `ranks ${ranks[0]}–${ranks[ranks.length - 1]}`;
  return [
    `--svd-rank ${asked}: ${lower.length} of ${modules.length} module(s) written at ${range}, the true rank of the merged update ` +
      '(its further singular values are zero, so a higher rank would only add zero factors)',
  ];
}

/**
 * breadcrumbs keeps nothing where ⌊gamma·n⌋ = 0 (mergekit's `[n_bot:-n_top]` slice) or
 * ⌊density·n⌋ = 0, which on an adapter would silently drop a module's whole update: refused
 * before any work, naming the first such module and the setting that works for it.
 */
function breadcrumbsProblem(plans: readonly ModulePlan[], density: number, gamma: number): string | undefined {
  if (density >= 1) return undefined;
  for (const p of plans) {
    const { outFeatures, inFeatures } = p.sources[0].info;
    const n = outFeatures * inFeatures;
    if (outlierCounts(density, gamma, n).kept > 0) continue;
    const where = `the ${n} entries of module "${p.name}"'s ${outFeatures}×${inFeatures} delta`;
    if (Math.trunc(density * n) <= 0) return `--density ${density} keeps none of ${where}: use --density ≥ 1/${n}`;
    return (
      `--gamma ${gamma} marks no outlier among ${where} (⌊gamma·${n}⌋ = 0), and breadcrumbs then keeps nothing, as in mergekit: ` +
      `use --gamma ≥ 1/${n}, or magnitude_prune_svd to drop no outliers`
    );
  }
  return undefined;
}

/** Merges PEFT LoRA adapters into one new adapter; see docs/usage/merge-adapters.md. */
export async function mergeAdapters(params: MergeAdaptersOptions): Promise<MergeReport> {
  validate(params);
  const adapters: AdapterInput[] = [];
  for (const a of params.adapters) adapters.push({ ...a, path: await localInput(a.path, 'adapter', params) });
  const opts = { ...params, adapters };
  const started = performance.now();
  const exact = opts.exact ?? false;
  const files = await inputKind(opts);
  // PEFT: with one adapter every combination type becomes linear
  const resolvedName: MethodName = opts.adapters.length === 1 ? 'linear' : opts.method;
  const method = MERGE_METHODS[resolvedName];
  const uses = (p: MethodParam) => acceptedParams(method, exact).includes(p);
  const density = opts.density ?? DEFAULT_DENSITY;
  const seed = opts.seed ?? DEFAULT_SEED;
  const gamma = opts.gamma ?? DEFAULT_GAMMA;
  const epsilon = opts.epsilon ?? DEFAULT_EPSILON;
  const masks = opts.masks ?? seededMaskSource(seed, density);

  return runCommand({
    inputs: opts.adapters.map((a) => a.path),
    open: async (keep) => {
      const backend = opts.backend ?? (await getBackend());
      const adapters: MergeInput[] = [];
      for (const a of opts.adapters) adapters.push(keep(files ? await openLoraFile(a.path) : await openPeftAdapter(a.path)));
      return { backend, adapters };
    },
    plan: ({ adapters }) => {
      // files share one layout (their module names must meet), whatever layout is written
      const layout = files ? commonFileFormat(adapters as LoraFile[]) : undefined;
      const format: AdapterFormat | LoraFileOutFormat = layout ? (opts.outFormat ?? layout) : (opts.format ?? 'peft');
      const plans = planModules(adapters);
      if (plans.length === 0) throw new Error('the adapters have no LoRA modules to merge');
      if (files) checkLoraFileOutput({ format: format as LoraFileOutFormat, moduleNames: plans.map((p) => p.name) });
      const fullTensors = planFullTensors(adapters);
      const maxInputRank = Math.max(...plans.flatMap((p) => p.sources.map((s) => s.info.rank)));
      const rank = opts.svdRank ?? defaultSvdRank(method, exact, maxInputRank);
      const problem = uses('gamma') ? breadcrumbsProblem(plans, density, gamma) : undefined;
      if (problem) throw new Error(problem);
      if (method.family === 'factors' && !exact) {
        for (const p of plans) {
          const sources = p.sources.map((s) => ({ label: opts.adapters[s.adapter].path, rank: s.info.rank }));
          const problem = unequalRanksProblem(p.name, resolvedName, sources);
          if (problem) throw new Error(problem);
        }
      }
      return { items: plans, fullTensors, rank, format };
    },
    output: {
      ...(files && opts.outFormat !== 'peft' ? { file: opts.out } : { dir: opts.out, overwrite: opts.overwrite }),
      sink: async (tmpPath, { res: { adapters }, plan: { items, format } }): Promise<ModuleSink> => {
        const first = adapters[0];
        if (first instanceof LoraFile) {
          const moduleNames = items.map((p) => p.name);
          return createLoraFileOutput(tmpPath, { format: format as LoraFileOutFormat, dtype: opts.dtype, metadata: carriedMetadata(first), moduleNames });
        }
        return createAdapterSink(tmpPath, {
          format: format as AdapterFormat,
          dtype: opts.dtype,
          baseModel: (first.config.base_model_name_or_path as string | null | undefined) ?? undefined,
          baseConfig: opts.baseConfig,
          useRslora: false, // r = alpha gives scaling 1 only without rsLoRA (PEFT keeps rsLoRA here: its quirk 8)
        });
      },
    },
    load: (p, { res: { backend, adapters } }) =>
      Promise.all(p.sources.map((s) => loadTerm(backend, adapters[s.adapter], s.adapter, s.info, opts.adapters[s.adapter].weight, method.family === 'svd'))),
    each: async (plan, terms, { res: { backend }, plan: { rank }, sink }) => {
      const merged = await mergeModule(method, {
        backend,
        module: plan.name,
        terms,
        density,
        majoritySign: opts.majoritySign ?? DEFAULT_MAJORITY_SIGN,
        rank,
        svdClamp: opts.svdClamp,
        exact,
        masks,
        gamma,
        epsilon,
        seed,
        kind: plan.kind,
      });
      const cmp = await compareToWeightedSum(backend, merged, terms);
      const inputRanks = opts.adapters.map((_, i) => plan.sources.find((s) => s.adapter === i)?.info.rank ?? null);
      const row: ModuleReport = {
        name: plan.name,
        kind: plan.kind,
        method: resolvedName,
        inputRanks,
        outputRank: merged.A.rows,
        relError: cmp.relError,
        exactNorm: cmp.exactNorm,
      };
      if (merged.clampHi !== undefined) row.clampHi = merged.clampHi;
      if (merged.A.rows === 0) row.omitted = 'the merged delta is zero (the adapters cancel here); nothing to write';
      else await sink.addModule(toLoraModule(plan, merged));
      return row;
    },
    finish: async (modules, { res: { adapters }, plan: { fullTensors, rank, format }, sink, tmpPath }) => {
      if (modules.every((m) => m.omitted)) {
        throw new Error('the merged adapter is zero in every module (the weighted adapters cancel out); there is nothing to write');
      }
      for (const t of fullTensors) await sink.addFull(t.name, t.shape, await (adapters[t.adapter] as PeftAdapter).readFull(t.name)); // LoRA files have none
      await sink.finish();

      const errors = modules.map((m) => m.relError).filter((e): e is number => e !== null);
      const report: MergeReport = {
        method: opts.method,
        resolvedMethod: resolvedName,
        semantics: exact ? 'exact' : 'peft',
        adapters: opts.adapters.map((a, i) => ({
          path: a.path,
          weight: a.weight,
          modules: adapters[i].modules.length,
          ranks: [...new Set(adapters[i].modules.map((m) => m.rank))].sort((x, y) => x - y),
        })),
        out: opts.out,
        format,
        modules,
        carriedTensors: fullTensors.map((t) => t.name),
        notes: [...notesFor(resolvedName, opts.method, exact, opts.adapters.length, files), ...lowerRankNote(uses('svdRank') ? opts.svdRank : undefined, modules)],
        maxRelError: errors.length ? Math.max(...errors) : null,
        seconds: 0,
      };
      if (uses('density')) report.density = density;
      if (uses('majoritySign')) report.majoritySign = opts.majoritySign ?? DEFAULT_MAJORITY_SIGN;
      if (uses('gamma')) report.gamma = gamma;
      if (uses('epsilon')) report.epsilon = epsilon;
      if (uses('seed')) report.seed = seed;
      if (uses('svdRank')) report.svdRank = Number.isFinite(rank) ? rank : null;
      if (opts.svdClamp !== undefined) report.svdClamp = opts.svdClamp;
      report.seconds = (performance.now() - started) / 1000;
      const json = JSON.stringify(report, null, 2) + '\n';
      // a file output is already in place (its writer renamed it on finish): the report goes beside it
      if (files && format !== 'peft') await atomicWriteFile(mergeReportPath(opts.out), json);
      else await writeFile(join(tmpPath, REPORT_FILE), json);
      return report;
    },
    onProgress: opts.onProgress,
  });
}
