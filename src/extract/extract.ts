/**
 * `extractLora`: the adapter that turns model A into model B. Tensor pairs stream through one at
 * a time — the next pair is read while the current one is decomposed — so memory holds a few
 * tensors whatever the model size, and the time is close to that of reading both checkpoints.
 * Output goes to a temporary folder that becomes `out` only when everything succeeded.
 */
import { join } from 'node:path';
import { atomicWriteFile } from '../io/atomic.js';
import { openCheckpoint } from '../io/checkpoint.js';
import type { FloatDType } from '../io/types.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { getBackend } from '../linalg/index.js';
import { createAdapterSink, type AdapterFormat, type AdapterSinkOptions } from '../lora/sink.js';
import { isFloatDType } from '../tensor/dtype.js';
import { prefetch } from '../pipeline/prefetch.js';
import { handleJob, type JobOutcome } from './handlers.js';
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
  if (p.action === 'lora') return p.module.slice(p.module.lastIndexOf('.') + 1);
  if (p.action === 'experts') return `${p.param} (experts)`;
  return undefined;
}

export async function extractLora(opts: ExtractOptions): Promise<ExtractReport> {
  if (opts.evalText) {
    if (opts.format === 'gguf') throw new UsageError('evaluating the extracted adapter is not supported for a GGUF LoRA: use --format peft or both');
    await checkEvalOptions(opts.evalText);
  }
  const local = await localPair(opts);
  const report = await extractAdapter({ ...opts, modelA: local.modelA, modelB: local.modelB }, local.tensors);
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

/**
 * The two models as local paths. When a model comes from the Hub and the targets are narrowed
 * (--target-modules, --include), only the shards that may hold a target are downloaded, and both
 * models are then read as those tensors alone, so that the two sides still pair up.
 */
async function localPair(opts: ExtractOptions): Promise<{ modelA: string; modelB: string; tensors?: (name: string) => boolean }> {
  const narrowed = opts.targetModules !== undefined || opts.include !== undefined;
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
  try {
    checkPolicy(policy);
    if (opts.alpha !== undefined && !(Number.isFinite(opts.alpha) && opts.alpha > 0)) throw new Error(`alpha must be a positive number, got ${opts.alpha}`);
    if (!Number.isSafeInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
  } catch (err) {
    return Promise.reject(err);
  }
  const checkedTypes = new Set<string>();
  let readWaitSeconds = 0;
  return runCommand({
    inputs: [opts.modelA, opts.modelB, ...(opts.evalText ? [opts.evalText.text] : [])],
    open: async (keep) => {
      const a = keep(await openCheckpoint(opts.modelA, { tensors }));
      const b = keep(await openCheckpoint(opts.modelB, { tensors }));
      // the reader thread starts up while the plan, the GEMM backend and the output are prepared
      const loading = startPairLoader();
      keep({ close: () => loading.cancel() });
      return { a, b, loading };
    },
    plan: async ({ a, b }) => {
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
    stream: async function* ({ res: { a, b, loading }, plan }) {
      const loader = await loading.open(a, b);
      try {
        let waitFrom = performance.now();
        for await (const { value: pair } of prefetch(plan.items, (job) => loader.load(pairReadOf(job)), { depth: PREFETCH_DEPTH })) {
          readWaitSeconds += (performance.now() - waitFrom) / 1000;
          yield pair;
          loader.release(pair);
          waitFrom = performance.now();
        }
      } finally {
        await loader.close();
      }
    },
    each: async (job, pair, { plan: { backend, dtype }, sink }) => {
      const t0 = performance.now();
      const type = moduleType(job);
      const verify = opts.verify === true || (type !== undefined && !checkedTypes.has(type));
      if (type !== undefined) checkedTypes.add(type);
      const outcome = await handleJob({ backend, sink, policy, alpha: opts.alpha, dtype }, { job, pair, seed: tensorSeed(seed, job.name), verify });
      return { outcome, seconds: (performance.now() - t0) / 1000 };
    },
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
  format: AdapterFormat;
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
