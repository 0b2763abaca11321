/**
 * `extractLora`: the adapter that turns model A into model B. Tensor pairs stream through one at
 * a time — the next pair is read while the current one is decomposed — so memory holds a few
 * tensors whatever the model size, and the time is close to that of reading both checkpoints.
 * Output goes to a temporary folder that becomes `out` only when everything succeeded.
 */
import { join } from 'node:path';
import { atomicWriteFile } from '../io/atomic.js';
import { stat } from 'node:fs/promises';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { createLoraFileWriter } from '../lora/lora-file-writer.js';
import type { LoraFileFormat } from '../lora/lora-file-format.js';
import type { LoadedPair } from '../delta/load-pair.js';
import { diffusionModelOf, planDiffusionExtraction } from './diffusion-plan.js';
import { defaultLoraFileFormat } from '../delta/diffusion-targets.js';
import type { Keep } from '../pipeline/run.js';
import type { FloatDType } from '../io/types.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { getBackend } from '../linalg/index.js';
import { createAdapterSink, type AdapterFormat, type AdapterSink, type AdapterSinkOptions } from '../lora/sink.js';
import { isFloatDType } from '../tensor/dtype.js';
import { prefetch } from '../pipeline/prefetch.js';
import { handleJob, type HandlerContext, type JobOutcome } from './handlers.js';
import { startPairLoader } from '../delta/pair-loader.js';
import { listSome, pairReadOf, planExtraction, type EmbeddingsMode, type ExtractionPlan, type Job } from './plan.js';
import { checkPolicy, DEFAULT_RANK, type RankPolicy } from '../lowrank/rank-policy.js';
import { tensorSeed } from '../lowrank/decompose.js';
import { REPORT_FILE, type DifferingTensor, type ExtractedTensor, type ExtractReport } from './report.js';
import { runCommand } from '../pipeline/run.js';
import { baseModelNameOrPath } from '../lora/base-model.js';
import type { OnProgress } from '../progress.js';
import { UsageError } from '../errors.js';
import { isHubInput, localInput } from '../io/local-inputs.js';
import type { HubOptions } from '../io/hub/index.js';
import { mayBeTarget } from '../delta/targets.js';
import { checkEvalOptions, evaluateExtraction, type ExtractEvalOptions } from './evaluate.js';

export interface ExtractOptions {
  /** the model the adapter applies to (folder, or a .safetensors file) */
  modelA: string;
  /** the model the adapter should turn A into */
  modelB: string;
  /** output folder (created atomically) */
  out: string;
  /** default: fixed rank 16 */
  policy?: RankPolicy;
  /** one alpha for every module (scaling alpha/r); default: alpha = each module's rank (scaling 1) */
  alpha?: number;
  /** module names (last path component) to target instead of the decoder layers' linear weights */
  targetModules?: readonly string[];
  /** only tensors whose name matches are targets */
  include?: RegExp;
  /** tensors whose name matches are not targets */
  exclude?: RegExp;
  /** default 'peft' */
  format?: AdapterFormat;
  /** input embeddings and LM head: 'skip' (default), 'lora', or 'full' (saved whole) */
  embeddings?: EmbeddingsMode;
  /** storage dtype of the adapter; default: model B's dtype */
  dtype?: FloatDType;
  /** seed of the randomized SVDs (default 0); the same seed gives byte-identical output */
  seed?: number;
  /** GEMM threads (default: all cores) */
  threads?: number;
  /** write non-target tensors that differ (norms, biases) whole, as PEFT modules_to_save */
  saveModules?: boolean;
  /** leave 3-D MoE expert tensors out */
  skip3d?: boolean;
  /** compute every tensor's error exactly by GEMM (by default only the first of each module type) */
  verify?: boolean;
  /** replace an existing non-empty `out` */
  overwrite?: boolean;
  /** a GEMM backend to use instead of getBackend({ threads }) */
  backend?: LinalgBackend;
  /**
   * After extracting, measure on this text how close A + adapter (applied on the fly) comes to B:
   * the report's `eval`. PEFT output only (the adapter evaluated is the PEFT one).
   */
  evalText?: ExtractEvalOptions;
  /** how Hub ids among the models are fetched (offline, cache, endpoint, token) */
  hub?: HubOptions;
  /** called after each tensor, then (phase 'eval …') after each layer of the evaluation; downloads as phase 'download' */
  onProgress?: OnProgress;
  /**
   * Diffusion checkpoints (SD 1.x/2.x, SDXL, Flux; `out` a `.safetensors` file): the rank
   * policy of k×k convs (kohya's conv_dim). Without it they are not extracted, and reported.
   */
  convPolicy?: RankPolicy;
  /** Diffusion checkpoints: extract the text encoders too (SD's te, SDXL's te1 and te2; see diffusion-targets.ts) */
  textEncoders?: boolean;
  /**
   * Diffusion checkpoints: the LoRA file's key layout. Default: kohya, except for SDXL diffusers
   * U-Nets and diffusers Flux transformers (diffusers: kohya names those by other paths).
   */
  outFormat?: LoraFileFormat;
}

/** A `.safetensors` --out asks for one kohya or diffusers LoRA file: the diffusion-checkpoint flow. */
export function isLoraFileOut(out: string): boolean {
  return /\.safetensors$/i.test(out);
}

/** The report of a kohya output file: beside it, `<name>.report.json`. */
export function loraFileReportPath(out: string): string {
  return out.replace(/\.safetensors$/i, '.report.json');
}

/** The adapter dtype when none is asked for: that of model B's first target tensor. */
function defaultDtype(plan: ExtractionPlan): FloatDType {
  const target = plan.jobs.find((j) => j.plan.action !== 'compare');
  const dtype = target?.b.dtype ?? 'F32';
  return isFloatDType(dtype) ? dtype : 'F32';
}

/** Which module type a job belongs to; the first of each type gets an exact error check. */
function moduleType(job: Job): string | undefined {
  const p = job.plan;
  // kohya stems have no dots: their type is the stem without its block numbers
  if (p.action === 'lora' && p.module.startsWith('lora_')) return p.module.replace(/_\d+(?=_|$)/g, '');
  // diffusers LoRA-file stems end in numbered parts (`to_out.0`, `ff.net.2`): the path without its numbers
  if (p.action === 'lora' && /^(unet|transformer|text_encoder(_\d+)?)\./.test(p.module)) return p.module.replace(/\.\d+(?=\.|$)/g, '');
  if (p.action === 'lora') return p.module.slice(p.module.lastIndexOf('.') + 1);
  if (p.action === 'experts') return `${p.param} (experts)`;
  return undefined;
}

export async function extractLora(opts: ExtractOptions): Promise<ExtractReport> {
  if (opts.evalText) {
    if (opts.format === 'gguf') throw new UsageError('evaluating the extracted adapter is not supported for a GGUF LoRA: use --format peft or both');
    if (isLoraFileOut(opts.out)) throw new UsageError('evaluating the extracted adapter is for LLMs: a LoRA file for an image model (a .safetensors --out) cannot be evaluated on text');
    await checkEvalOptions(opts.evalText);
  }
  await checkExtractOptions(opts);
  const local = await localPair(opts);
  const localized = { ...opts, modelA: local.modelA, modelB: local.modelB };
  const report = isLoraFileOut(opts.out) ? await extractLoraFile(localized) : await extractAdapter(localized, local.tensors);
  if (!opts.evalText) return report;
  try {
    report.eval = await evaluateExtraction({
      modelA: local.modelA,
      modelB: local.modelB,
      adapter: opts.out,
      eval: opts.evalText,
      backend: opts.backend ?? (await getBackend({ threads: opts.threads })),
      onProgress: opts.onProgress,
    });
  } catch (err) {
    // the adapter is good and stays; say so, keeping the error's kind (and so its exit code)
    if (err instanceof Error) err.message = `the adapter was written to ${opts.out}, but evaluating it failed: ${err.message}`;
    throw err;
  }
  await atomicWriteFile(join(opts.out, REPORT_FILE), JSON.stringify(report, null, 2) + '\n');
  return report;
}

/** The options' own mistakes, for both outputs, found before any model is opened or downloaded. */
async function checkExtractOptions(opts: ExtractOptions): Promise<void> {
  checkPolicy(opts.policy ?? { mode: 'rank', rank: DEFAULT_RANK });
  if (opts.alpha !== undefined && !(Number.isFinite(opts.alpha) && opts.alpha > 0)) throw new Error(`alpha must be a positive number, got ${opts.alpha}`);
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
  if (!isLoraFileOut(opts.out)) {
    if (opts.outFormat !== undefined) throw new UsageError(`outFormat (--out-format) is the layout of a diffusion LoRA file: give --out a path ending in .safetensors, or use format (--format) for ${opts.out}`);
    return;
  }
  if (opts.convPolicy) checkPolicy(opts.convPolicy);
  const llmOnly = [
    opts.format !== undefined && 'format',
    opts.targetModules && 'targetModules (--target-modules)',
    opts.embeddings !== undefined && opts.embeddings !== 'skip' && 'embeddings (--embeddings)',
    opts.saveModules && 'saveModules (--save-modules)',
    opts.evalText && 'evalText (--eval-text)',
  ].filter(Boolean);
  if (llmOnly.length) throw new UsageError(`--out ${opts.out} is a LoRA file for diffusion checkpoints: ${llmOnly.join(', ')} apply(ies) to LLM adapters only`);
  if (!opts.overwrite && (await stat(opts.out).catch(() => undefined))) throw new UsageError(`--out ${opts.out} exists: choose another file or pass --force to replace it`);
}

/**
 * The two models as local paths. When a model comes from the Hub and the targets are narrowed
 * (--target-modules, --include), only the shards that may hold a target are downloaded, and both
 * models are then read as those tensors alone, so that the two sides still pair up.
 */
async function localPair(opts: ExtractOptions): Promise<{ modelA: string; modelB: string; tensors?: (name: string) => boolean }> {
  // (a diffusion checkpoint is one file: nothing to narrow)
  const narrowed = !isLoraFileOut(opts.out) && (opts.targetModules !== undefined || opts.include !== undefined);
  const fromHub = (await isHubInput(opts.modelA)) || (await isHubInput(opts.modelB));
  const selection = { targetModules: opts.targetModules, include: opts.include, exclude: opts.exclude };
  const embeddings = (opts.embeddings ?? 'skip') !== 'skip';
  const tensors = narrowed && fromHub ? (name: string) => mayBeTarget(name, selection, embeddings) : undefined;
  const how = { hub: opts.hub, onProgress: opts.onProgress, tensors };
  return { modelA: await localInput(opts.modelA, 'model', how), modelB: await localInput(opts.modelB, 'model', how), tensors };
}

function extractAdapter(opts: ExtractOptions, tensors?: (name: string) => boolean): Promise<ExtractReport> {
  const started = performance.now();
  const policy = opts.policy ?? { mode: 'rank', rank: DEFAULT_RANK };
  const format = opts.format ?? 'peft';
  const embeddings = opts.embeddings ?? 'skip';
  const seed = opts.seed ?? 0;
  const extractOne = jobExtractor(opts.verify === true, seed);
  let readWaitSeconds = 0;
  return runCommand({
    inputs: [opts.modelA, opts.modelB, ...(opts.evalText ? [opts.evalText.text] : [])],
    open: (keep) => openPair(opts, keep, tensors),
    plan: async ({ a, b }) => {
      if (diffusionModelOf(a, b)) throw new UsageError(`${opts.modelA} is a diffusion checkpoint: its LoRA is one kohya or diffusers file; give --out a path ending in .safetensors`);
      const plan = planExtraction(a, b, {
        policy,
        selection: { targetModules: opts.targetModules, include: opts.include, exclude: opts.exclude },
        embeddings,
        format,
        saveModules: opts.saveModules ?? false,
        skip3d: opts.skip3d ?? false,
      });
      if (tensors) plan.notes.push('a model came from the Hub with narrowed targets: only the shards that may hold a target were downloaded, so tensors outside the targets were not compared');
      const backend = opts.backend ?? (await getBackend({ threads: opts.threads }));
      return { items: plan.jobs, extraction: plan, backend, dtype: opts.dtype ?? defaultDtype(plan) };
    },
    output: {
      dir: opts.out,
      overwrite: opts.overwrite,
      sink: (tmpPath, { res: { a }, plan: { extraction, dtype } }) =>
        createAdapterSink(tmpPath, {
          format,
          dtype,
          baseModel: baseModelNameOrPath(a),
          baseConfig: a.config,
          // PEFT (≥ 0.18) then gives the tied LM head the embeddings' adapter too
          extraConfig: extraction.tied && embeddings !== 'skip' ? { ensure_weight_tying: true } : undefined,
          experts: plannedExperts(extraction),
        }),
    },
    stream: ({ res, plan }) => streamPairs(res, plan.items, (s) => (readWaitSeconds += s)),
    each: (job, pair, { plan: { backend, dtype }, sink }) => extractOne(job, pair, { backend, sink, policy, alpha: opts.alpha, dtype }),
    finish: async (rows, { plan: { extraction, backend, dtype }, sink, tmpPath }) => {
      const report = extractReport(rows, { opts, plan: extraction, backend, dtype, seed, policy, format, embeddings, started, readWaitSeconds });
      if (!report.tensors.length) throw new Error(nothingToExtract(report));
      await sink.finish();
      report.totals.seconds = (performance.now() - started) / 1000;
      await atomicWriteFile(join(tmpPath, REPORT_FILE), JSON.stringify(report, null, 2) + '\n');
      return report;
    },
    onProgress: opts.onProgress,
  });
}

/** Opens both checkpoints and starts the reader thread (it starts up while the plan is made). */
/**
 * The per-job operation of both extract paths: decompose and write one job, checking its error
 * exactly by GEMM for the first tensor of each module type (every tensor with `verifyAll`).
 */
function jobExtractor(verifyAll: boolean, seed: number): (job: Job, pair: LoadedPair, ctx: HandlerContext) => Promise<{ outcome: JobOutcome; seconds: number }> {
  const checkedTypes = new Set<string>();
  return async (job, pair, ctx) => {
    const t0 = performance.now();
    const type = moduleType(job);
    const verify = verifyAll || (type !== undefined && !checkedTypes.has(type));
    if (type !== undefined) checkedTypes.add(type);
    const outcome = await handleJob(ctx, { job, pair, seed: tensorSeed(seed, job.name), verify });
    return { outcome, seconds: (performance.now() - t0) / 1000 };
  };
}

/** Opens both models (with `tensors`, only those: see localPair) and starts the reader thread while the plan, the GEMM backend and the output are prepared. */
async function openPair(opts: ExtractOptions, keep: Keep, tensors?: (name: string) => boolean): Promise<OpenPair> {
  const a = keep(await openCheckpoint(opts.modelA, { tensors }));
  const b = keep(await openCheckpoint(opts.modelB, { tensors }));
  const loading = startPairLoader();
  keep({ close: () => loading.cancel() });
  return { a, b, loading };
}

type OpenPair = { a: Checkpoint; b: Checkpoint; loading: ReturnType<typeof startPairLoader> };

/** The jobs' pairs in order, read ahead on the reader thread; `waited` gets the seconds spent waiting for it. */
async function* streamPairs({ a, b, loading }: OpenPair, jobs: readonly Job[], waited: (seconds: number) => void): AsyncGenerator<LoadedPair> {
  const loader = await loading.open(a, b);
  try {
    let waitFrom = performance.now();
    for await (const { value: pair } of prefetch(jobs, (job) => loader.load(pairReadOf(job)), { depth: PREFETCH_DEPTH })) {
      waited((performance.now() - waitFrom) / 1000);
      yield pair;
      loader.release(pair);
      waitFrom = performance.now();
    }
  } finally {
    await loader.close();
  }
}

/**
 * Two diffusion checkpoints → one kohya LoRA `.safetensors` file (`opts.out`), its report beside it.
 * The same spine, reader and decomposition as for LLMs; only the plan and the writer differ.
 */
async function extractLoraFile(opts: ExtractOptions): Promise<ExtractReport> {
  const started = performance.now();
  const policy = opts.policy ?? { mode: 'rank', rank: DEFAULT_RANK };
  const seed = opts.seed ?? 0;
  const extractOne = jobExtractor(opts.verify === true, seed);
  let readWaitSeconds = 0;
  return runCommand({
    inputs: [opts.modelA, opts.modelB],
    open: (keep) => openPair(opts, keep),
    plan: async ({ a, b }) => {
      const model = diffusionModelOf(a, b);
      if (!model) {
        throw new UsageError(
          `--out ${opts.out} asks for a LoRA file of a diffusion model, but ${opts.modelA} is not an SD 1.x/2.x, SDXL or Flux checkpoint (no model.diffusion_model.input_blocks…, double_blocks…, down_blocks… or single_transformer_blocks… tensors); ` +
            'for an LLM give an output folder',
        );
      }
      const format = opts.outFormat ?? defaultLoraFileFormat(model.layout);
      const plan = planDiffusionExtraction(a, b, model, { policy, convPolicy: opts.convPolicy, textEncoders: opts.textEncoders === true, format, include: opts.include, exclude: opts.exclude });
      const backend = opts.backend ?? (await getBackend({ threads: opts.threads }));
      return { items: plan.jobs, extraction: plan, backend, dtype: opts.dtype ?? defaultDtype(plan), format };
    },
    output: {
      file: opts.out,
      sink: async (path, { plan: { extraction, dtype, format } }) => {
        const { model } = extraction;
        const writer = createLoraFileWriter(path, {
          format,
          dtype,
          // kohya's metadata; diffusers reads none (the writer folds alpha/r into lora_B)
          metadata: format === 'kohya' ? { ss_v2: model.v2 ? 'True' : 'False', ss_base_model_version: model.baseModelVersion, ss_network_module: model.networkModule } : {},
        });
        const sink: AdapterSink = {
          addModule: (m) => writer.addModule(m),
          addFull: (name) => writer.addFull(name),
          addExpertStack: (s) => Promise.reject(new Error(`internal error: expert stack "${s.parameter}" planned for a kohya file; please report it`)),
          finish: () => writer.finish(),
          abort: () => writer.abort(),
        };
        return sink;
      },
    },
    stream: ({ res, plan }) => streamPairs(res, plan.items, (s) => (readWaitSeconds += s)),
    each: (job, pair, { plan: { backend, dtype }, sink }) => extractOne(job, pair, { backend, sink, policy, alpha: opts.alpha, dtype }),
    finish: async (rows, { plan: { extraction, backend, dtype, format }, sink }) => {
      const report = extractReport(rows, { opts, plan: extraction, backend, dtype, seed, policy, format, embeddings: 'skip', started, readWaitSeconds });
      report.diffusion = { layout: extraction.model.layout, convPolicy: opts.convPolicy, textEncoders: opts.textEncoders === true, convSkipped: extraction.convSkipped };
      if (!report.tensors.length) throw new Error(nothingToExtract(report));
      await sink.finish();
      report.totals.seconds = (performance.now() - started) / 1000;
      await atomicWriteFile(loraFileReportPath(opts.out), JSON.stringify(report, null, 2) + '\n');
      return report;
    },
    onProgress: opts.onProgress,
  });
}

/**
 * Why an extraction with no LoRA module is refused: an adapter with r = 0 and no targets loads
 * nowhere (PEFT rejects r = 0), so it is better not written at all.
 */
function nothingToExtract(r: ExtractReport): string {
  const what = `model A (${r.modelA}) and model B (${r.modelB})`;
  const compared = `${r.skippedIdentical.length} target tensor(s) compared`;
  if (!r.nonTargetDiffering.length) return `${what} are identical (${compared}, no other tensor differs): there is no adapter to extract; nothing written`;
  const d = r.nonTargetDiffering;
  const how = d.some((t) => t.saved)
    ? 'an adapter of whole tensors alone has no LoRA module (r = 0), which PEFT does not load; nothing written'
    : 'nothing written — target them with --target-modules / --include, or --embeddings lora|full for embeddings';
  return `no target tensor differs between ${what} (${compared}); only ${d.length} tensor(s) outside the LoRA differ (${d[0].name}${d.length > 1 ? ', …' : ''}): ${how}`;
}

/** The 3-D expert tensors planned, which the adapter writer nests before knowing which change. */
function plannedExperts(plan: ExtractionPlan): AdapterSinkOptions['experts'] {
  const parameters = plan.jobs.flatMap((j) => (j.plan.action === 'experts' ? [`${j.plan.module}.${j.plan.param}`] : []));
  if (!parameters.length) return undefined;
  const ggufRefusal = `3-D expert tensors (${listSome(parameters)}) cannot be written to a GGUF LoRA yet: pass --format peft, or --skip-3d to leave them out`;
  return { parameters, source: 'new', ggufRefusal };
}

/**
 * Pairs read ahead of the one being decomposed. The reader thread shares the cores with the GEMMs
 * and falls behind after runs of small tensors; four ahead cut the time spent waiting for it from
 * ~10% to ~3% of an 8-layer 1B-shaped run, for a few more tensors in memory.
 */
const PREFETCH_DEPTH = 4;

interface ReportContext {
  opts: ExtractOptions;
  plan: ExtractionPlan;
  backend: LinalgBackend;
  dtype: FloatDType;
  seed: number;
  policy: RankPolicy;
  format: AdapterFormat | LoraFileFormat;
  embeddings: EmbeddingsMode;
  started: number;
  /** time the loop spent waiting for the reader thread */
  readWaitSeconds: number;
}

/** The report of a run from each tensor's outcome (in plan order) and the time its job took. */
function extractReport(rows: ReadonlyArray<{ outcome: JobOutcome; seconds: number }>, ctx: ReportContext): ExtractReport {
  const { opts, plan } = ctx;
  const bytesRead = plan.jobs.reduce((sum, job) => sum + (job.a?.bytes ?? 0) + job.b.bytes, 0);

  const tensors: ExtractedTensor[] = [];
  const skippedIdentical: string[] = [];
  const differing: DifferingTensor[] = [];
  let params = 0;
  let computeSeconds = 0;
  rows.forEach(({ outcome, seconds }, i) => {
    computeSeconds += seconds;
    params += outcome.params;
    if (outcome.extracted) tensors.push({ ...outcome.extracted, seconds });
    if (outcome.identical) skippedIdentical.push(plan.jobs[i].name);
    if (outcome.differing) differing.push(outcome.differing);
  });

  const warnings = [...plan.warnings];
  const capped = tensors.filter((t) => !t.targetMet);
  if (capped.length) warnings.push(`${capped.length} tensor(s) reached the rank cap before the target (${capped[0].name}…): raise --max-rank for a closer fit`);
  return {
    modelA: opts.modelA,
    modelB: opts.modelB,
    out: opts.out,
    format: ctx.format,
    dtype: ctx.dtype,
    policy: ctx.policy,
    alpha: opts.alpha ?? 'rank',
    seed: ctx.seed,
    backend: ctx.backend.name,
    embeddings: { mode: ctx.embeddings, tied: plan.tied, vocabA: plan.vocabA, vocabB: plan.vocabB },
    tensors,
    skippedIdentical,
    nonTargetDiffering: differing,
    skipped3d: plan.skipped3d,
    notes: plan.notes,
    warnings,
    totals: {
      tensors: tensors.length,
      params,
      bytesRead,
      seconds: (performance.now() - ctx.started) / 1000,
      readWaitSeconds: ctx.readWaitSeconds,
      computeSeconds,
      skippedIdentical: skippedIdentical.length,
      nonTargetDiffering: differing.length,
    },
  };
}
