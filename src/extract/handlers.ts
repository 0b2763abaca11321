/**
 * What happens to one planned tensor once both sides are in memory: form Δ, decompose it into
 * LoRA factors (or save or just compare it), write it, and describe the result for the report.
 */
import type { FloatDType } from '../io/types.js';
import type { LinalgBackend } from '../linalg/backend.js';
import type { LoraModule } from '../lora/adapter.js';
import { fromSvd, type LowRank } from '../lowrank/low-rank.js';
import type { AdapterSink } from '../lora/sink.js';
import { roundTo } from '../tensor/dtype.js';
import { firstNonFinite } from '../tensor/finite.js';
import { sumSquares, transpose, type Matrix } from '../tensor/matrix.js';
import { decompose, spectralRelError, type Decomposition } from '../lowrank/decompose.js';
import type { DeltaStats } from '../delta/delta.js';
import { exactRelError } from '../lowrank/residual.js';
import type { LoadedPair } from '../delta/load-pair.js';
import { stackExpertFactors } from '../lora/expert-stack.js';
import type { Job } from './plan.js';
import type { RankPolicy } from '../lowrank/rank-policy.js';
import type { DifferingTensor, ExtractedTensor } from './report.js';

export interface HandlerContext {
  backend: LinalgBackend;
  sink: AdapterSink;
  policy: RankPolicy;
  /** fixed alpha for every module; undefined: alpha = the module's rank (scaling 1) */
  alpha?: number;
  /** storage dtype of the factors (the exact error check rounds to it, like the file does) */
  dtype: FloatDType;
}

/** What one job contributed: at most one of the three, plus what it wrote (the caller times it). */
export interface JobOutcome {
  extracted?: Omit<ExtractedTensor, 'seconds'>;
  identical?: boolean;
  differing?: DifferingTensor;
  /** parameters written into the adapter */
  params: number;
}

export interface JobInput {
  job: Job;
  /** Δ = B − A, its norms, and B itself where the plan saves it (see load-pair.ts) */
  pair: LoadedPair;
  /** seed for this tensor's random test matrices */
  seed: number;
  /** also compute the error exactly by GEMM */
  verify: boolean;
}

function view(data: Float32Array, rows: number, cols: number, offset = 0): Matrix {
  return { rows, cols, data: data.subarray(offset, offset + rows * cols) };
}

/**
 * LoRA factors of the first `kept` triplets with B·A·(alpha / rank) = Δ_kept. `transposed`: the
 * decomposed matrix is the weight's transpose (expert stacks stored in × out).
 */
function factorsOf(dec: Decomposition, kept: number, rank: number, alpha: number, transposed: boolean): LowRank {
  const svd = transposed ? { U: dec.svd.V, S: dec.svd.S, V: dec.svd.U } : dec.svd;
  const f = fromSvd(svd, kept);
  const scale = rank / alpha;
  if (scale !== 1) for (let i = 0; i < f.B.data.length; i++) f.B.data[i] *= scale;
  return f;
}

/** Exact ‖Δ − (alpha/rank)·B·A‖ / ‖Δ‖ with the factors rounded as they are stored. */
async function storedRelError(ctx: HandlerContext, delta: Matrix, f: LowRank, scale: number, frobSq: number, transposed: boolean): Promise<number> {
  const A = { ...f.A, data: roundTo(f.A.data, ctx.dtype) };
  const B = { ...f.B, data: roundTo(f.B.data, ctx.dtype) };
  // a transposed Δ (in × out) is matched by (B·A)ᵀ = Aᵀ·Bᵀ
  return transposed
    ? exactRelError(ctx.backend, delta, transpose(A), transpose(B), scale, frobSq)
    : exactRelError(ctx.backend, delta, B, A, scale, frobSq);
}

/**
 * Refuses factors or errors that came out NaN or infinite although Δ was finite (values near the
 * f32 limit overflow inside the products): an adapter must never carry what the report calls NaN%.
 */
function assertFiniteResult(where: string, relError: number, f: LowRank): void {
  if (Number.isFinite(relError) && firstNonFinite(f.A.data) < 0 && firstNonFinite(f.B.data) < 0) return;
  throw new Error(`${where}: its difference is too large to decompose in f32 (the factors overflow to NaN or infinity): the checkpoints hold values near the f32 limit; check they are not corrupt`);
}

function factorParams(f: LowRank): number {
  return f.A.data.length + f.B.data.length;
}

async function handleLora(ctx: HandlerContext, input: JobInput): Promise<JobOutcome> {
  const { job } = input;
  if (job.plan.action !== 'lora') throw new Error(`internal error: ${job.name} was planned as a LoRA but is not one; please report it`);
  const { module, kind, conv } = job.plan;
  // a conv weight out × in × kh × kw, row-major, is already the out × (in·kh·kw) matrix kohya decomposes
  const [rows, ...rest] = job.b.shape;
  const cols = rest.reduce((p, d) => p * d, 1);
  const { delta: data, stats } = deltaOf(input);
  if (stats.identical) return { identical: true, params: 0 };
  const delta = view(data, rows, cols);
  const dec = await decompose(ctx.backend, delta, stats.frobSq, job.plan.policy ?? ctx.policy, input.seed);
  const alpha = ctx.alpha ?? dec.rank;
  const f = factorsOf(dec, dec.rank, dec.rank, alpha, false);
  assertFiniteResult(`tensor "${job.name}"`, dec.relError, f);
  const exact = input.verify ? await storedRelError(ctx, delta, f, alpha / dec.rank, stats.frobSq, false) : undefined;
  const mod: LoraModule = { name: module, kind, A: f.A, B: f.B, alpha, ...(conv ? { conv: { kernel: conv } } : {}) };
  await ctx.sink.addModule(mod);
  return {
    params: factorParams(f),
    extracted: {
      name: job.name,
      module,
      kind,
      shape: [...job.b.shape],
      rank: dec.rank,
      alpha,
      energy: dec.energy,
      relError: dec.relError,
      exactRelError: exact,
      targetMet: dec.targetMet,
    },
  };
}

async function handleExperts(ctx: HandlerContext, input: JobInput): Promise<JobOutcome> {
  const { job } = input;
  if (job.plan.action !== 'experts') throw new Error(`internal error: ${job.name} was planned as an expert stack but is not one; please report it`);
  const { layout, module, param } = job.plan;
  const [count, d1, d2] = job.b.shape;
  const { delta, stats } = deltaOf(input);
  if (stats.identical) return { identical: true, params: 0 };
  const transposed = layout === 'in-out';
  const slices = Array.from({ length: count }, (_, e) => view(delta, d1, d2, e * d1 * d2));
  const norms = slices.map((s) => sumSquares(s.data));
  const decs: Array<Decomposition | undefined> = [];
  for (let e = 0; e < count; e++) {
    // every expert gets its own test matrices, derived from the tensor's seed
    decs.push(norms[e] > 0 ? await decompose(ctx.backend, slices[e], norms[e], ctx.policy, input.seed + e + 1) : undefined);
  }
  // PEFT keeps one rank per parameter: the largest any expert needs; the others use as many
  // directions as they have up to it (more accuracy at no extra size), zero-padded beyond.
  const rank = Math.max(...decs.map((d) => d?.rank ?? 0));
  const alpha = ctx.alpha ?? rank;
  const [out, inF] = transposed ? [d2, d1] : [d1, d2];
  const empty = (): LowRank => ({ A: { rows: 0, cols: inF, data: new Float32Array(0) }, B: { rows: out, cols: 0, data: new Float32Array(0) } });
  const factors: LowRank[] = [];
  const ranks: number[] = [];
  const relErrors: number[] = [];
  let residual = 0;
  let exactResidual = 0;
  for (let e = 0; e < count; e++) {
    const dec = decs[e];
    const kept = dec ? Math.min(rank, dec.svd.S.length) : 0;
    const f = dec ? factorsOf(dec, kept, rank, alpha, transposed) : empty();
    const err = dec ? spectralRelError(dec.svd, kept, norms[e]) : 0;
    assertFiniteResult(`tensor "${job.name}" (expert ${e})`, err, f);
    if (input.verify && dec) exactResidual += (await storedRelError(ctx, slices[e], f, alpha / rank, norms[e], transposed)) ** 2 * norms[e];
    factors.push(f);
    ranks.push(dec?.rank ?? 0);
    relErrors.push(err);
    residual += err * err * norms[e];
  }
  const stacked = stackExpertFactors(factors, rank);
  const wrapper = await ctx.sink.addExpertStack({ parameter: `${module}.${param}`, count, A: stacked.A, B: stacked.B, alpha });
  const relError = Math.sqrt(residual / stats.frobSq);
  return {
    params: factorParams(stacked),
    extracted: {
      name: job.name,
      module: wrapper,
      kind: 'experts',
      shape: [...job.b.shape],
      rank,
      alpha,
      energy: 1 - relError ** 2,
      relError,
      exactRelError: input.verify ? Math.sqrt(exactResidual / stats.frobSq) : undefined,
      targetMet: decs.every((d) => d === undefined || d.targetMet),
      experts: { count, layout, parameter: `${module}.${param}`, ranks, relErrors },
    },
  };
}

function deltaOf(input: JobInput): { delta: Float32Array; stats: DeltaStats } {
  const { delta, stats } = input.pair;
  if (!delta || !stats) throw new Error(`extract: job "${input.job.name}" needs both models' tensors, but only B's was read`);
  return { delta, stats };
}

function bOf(input: JobInput): Float32Array {
  if (!input.pair.b) throw new Error(`extract: job "${input.job.name}" saves B's tensor, but it was not kept`);
  return input.pair.b;
}

function relChange(stats: { frobSq: number; baseFrobSq: number }): number {
  return stats.baseFrobSq > 0 ? Math.sqrt(stats.frobSq / stats.baseFrobSq) : Infinity;
}

async function handleFull(ctx: HandlerContext, input: JobInput): Promise<JobOutcome> {
  const { job, pair } = input;
  // without A (the vocabulary differs) there is nothing to compare; the loader checked B is finite
  if (pair.stats?.identical) return { identical: true, params: 0 };
  const b = bOf(input);
  await ctx.sink.addFull(job.name, [...job.b.shape], b);
  const change = pair.stats ? relChange(pair.stats) : null;
  return { params: b.length, differing: { name: job.name, shape: [...job.b.shape], relChange: change, saved: true, reason: 'saved whole (--embeddings full)' } };
}

async function handleCompare(ctx: HandlerContext, input: JobInput, save: boolean, reason: string | undefined): Promise<JobOutcome> {
  const { job } = input;
  const { stats } = deltaOf(input);
  if (stats.identical) return { params: 0 };
  if (save) await ctx.sink.addFull(job.name, [...job.b.shape], bOf(input));
  return {
    params: save ? bOf(input).length : 0,
    differing: { name: job.name, shape: [...job.b.shape], relChange: relChange(stats), saved: save, ...(reason ? { reason } : {}) },
  };
}

export async function handleJob(ctx: HandlerContext, input: JobInput): Promise<JobOutcome> {
  const plan = input.job.plan;
  switch (plan.action) {
    case 'lora':
      return handleLora(ctx, input);
    case 'experts':
      return handleExperts(ctx, input);
    case 'full':
      return handleFull(ctx, input);
    case 'compare':
      return handleCompare(ctx, input, plan.save, plan.reason);
  }
}
