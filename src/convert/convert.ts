/**
 * `convert --to lora`: DoRA / EDoRA adapters as plain LoRA, for runtimes without DoRA (llama.cpp,
 * vLLM, TensorRT-LLM).
 *
 * For each module the exact change DoRA makes, D = W' − W = (diag(c) − I)·W + diag(c)·ΔW with
 * c = m/‖W + ΔW‖, is formed from the base weight and factored by a randomized SVD. D is full rank
 * in general (the diag(c) − I part rescales all of W), so the LoRA is an approximation: its rank
 * comes from a fixed --rank or from an energy threshold (the smallest rank keeping that fraction
 * of ‖D‖²_F), and the relative error ‖D − B·A‖_F / ‖D‖_F is measured, not estimated, and reported
 * per module.
 *
 * Plain LoRA modules are copied unchanged (rsLoRA scaling folded into alpha; a LoRA-XS latent R
 * folded into B), unless a rank or energy is asked for explicitly: then they are re-factored
 * exactly from the SVD of their own product and truncated.
 */
import { resolve } from 'node:path';
import { chooseAdaptiveRank } from '../extract/rank-policy.js';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { assertNotInput, withAtomicSink } from '../io/atomic.js';
import type { FloatDType } from '../io/types.js';
import { getBackend } from '../linalg/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { productSvd } from '../linalg/product-svd.js';
import { incrementalSvd, randomizedSvd } from '../linalg/rsvd.js';
import type { Svd } from '../linalg/svd-small.js';
import { openPeftAdapter, type LoraKind, type LoraModule, type PeftAdapter } from '../lora/adapter.js';
import { factorsFromSvd, type LowRankFactors } from '../lora/lowrank.js';
import { createAdapterSink, type AdapterFormat } from '../lora/sink.js';
import { prefetch } from '../pipeline/prefetch.js';
import { frobenius, type Matrix } from '../tensor/matrix.js';
import { updateDifference, weightUpdate, type AdapterMethod } from '../lora/weight-update.js';
import { asOutIn, resolveModuleTarget } from '../lora/module-target.js';
import { checkAdapterVariant } from '../lora/variant.js';
import { withInputTracking } from '../io/inputs.js';
import { baseModelNameOrPath } from '../lora/base-model.js';
import type { OnProgress } from '../progress.js';

/** A fixed rank, or the smallest rank that keeps `energy` of ‖D‖²_F (at most maxRank). */
export type RankPolicy = { rank: number } | { energy: number; maxRank?: number };

export const DEFAULT_ENERGY = 0.99;
/**
 * Without maxRank, --energy stops at this multiple of the module's own rank: W′ − W is often
 * nearly full rank, and growing the SVD to hundreds of directions per module costs minutes on a
 * 7B model for a LoRA nobody wants; the report says where the energy was not reached.
 */
export const DEFAULT_MAX_RANK_FACTOR = 4;

export interface ConvertOptions {
  adapter: string;
  /** the base model; needed for DoRA/EDoRA modules (D depends on W) and for GGUF output */
  base?: string;
  out: string;
  to?: 'lora';
  /** default: energy 0.99 (at most 4× each module's rank) for DoRA/EDoRA modules, plain LoRA copied */
  policy?: RankPolicy;
  format?: AdapterFormat;
  /** storage dtype of A and B (default F32) */
  dtype?: FloatDType;
  /** seed of the randomized SVD */
  seed?: number;
  overwrite?: boolean;
  backend?: LinalgBackend;
  /** called after each module */
  onProgress?: OnProgress;
}

export interface ConvertedModule {
  name: string;
  kind: LoraKind;
  method: AdapterMethod;
  /** converted: from W' − W; copied: plain LoRA as is; refactored: plain LoRA truncated; dropped: no change to carry */
  action: 'converted' | 'copied' | 'refactored' | 'dropped';
  sourceRank: number;
  rank: number;
  /** ‖D − B·A‖_F / ‖D‖_F, D being what the source module does to its weight */
  relError: number;
  note?: string;
}

export interface ConvertReport {
  adapter: string;
  out: string;
  base?: string;
  variant: string;
  policy: RankPolicy | 'copy';
  format: AdapterFormat;
  modules: ConvertedModule[];
  fullTensors: string[];
  maxRelError: number;
  notes: string[];
  seconds: number;
}

function checkPolicy(p: RankPolicy): void {
  if ('rank' in p) {
    if (!Number.isInteger(p.rank) || p.rank < 1) throw new Error(`convert: rank must be an integer ≥ 1, got ${p.rank}`);
  } else {
    if (!(p.energy > 0 && p.energy <= 1)) throw new Error(`convert: energy must be in (0, 1], got ${p.energy}`);
    if (p.maxRank !== undefined && (!Number.isInteger(p.maxRank) || p.maxRank < 1)) throw new Error(`convert: maxRank must be an integer ≥ 1, got ${p.maxRank}`);
  }
}

/** Smallest r ≥ 1 whose truncation keeps `energy` of Σσ², or all of them. */
function rankForEnergy(S: Float64Array, energy: number): number {
  let total = 0;
  for (const s of S) total += s * s;
  let kept = 0;
  for (let r = 1; r <= S.length; r++) {
    kept += S[r - 1] ** 2;
    if (kept >= energy * total) return r;
  }
  return S.length;
}

/** ‖D − B·A‖_F, product formed block by block so only one block of B·A is ever in memory. */
async function residualNorm(backend: LinalgBackend, D: Matrix, f: LowRankFactors): Promise<number> {
  const step = Math.max(1, Math.floor((1 << 22) / Math.max(1, D.cols)));
  let sq = 0;
  for (let r0 = 0; r0 < D.rows; r0 += step) {
    const r1 = Math.min(D.rows, r0 + step);
    const p = await backend.gemm({ rows: r1 - r0, cols: f.B.cols, data: f.B.data.subarray(r0 * f.B.cols, r1 * f.B.cols) }, f.A);
    const d = D.data.subarray(r0 * D.cols, r1 * D.cols);
    for (let i = 0; i < p.data.length; i++) {
      const e = d[i] - p.data[i];
      sq += e * e;
    }
  }
  return Math.sqrt(sq);
}

/** The truncated SVD of a dense D under the policy (randomized: fixed rank; incremental: energy). */
async function truncatedSvd(
  backend: LinalgBackend,
  D: Matrix,
  policy: RankPolicy,
  sourceRank: number,
  seed: number,
): Promise<{ svd: Svd; rank: number; note?: string }> {
  if ('rank' in policy) {
    const svd = await randomizedSvd(backend, D, { rank: policy.rank, seed });
    return { svd, rank: svd.S.length };
  }
  const maxRank = policy.maxRank ?? DEFAULT_MAX_RANK_FACTOR * sourceRank;
  const budget = 1 - policy.energy;
  const inc = await incrementalSvd(backend, D, { maxRank, seed, stop: (s) => s.errorFrobSq <= budget * s.totalFrobSq });
  const { rank, targetMet } = chooseAdaptiveRank(inc.errors.map((e) => e.relError), budget, inc.rank);
  if (targetMet) return { svd: inc, rank };
  return { svd: inc, rank, note: `energy ${policy.energy} not reached within rank ${inc.rank} (max rank ${maxRank})` };
}

interface Loaded {
  mod: LoraModule;
  /** base weight as out × in, DoRA/EDoRA only */
  W?: Matrix;
}

/** Converts a DoRA/EDoRA adapter to plain LoRA (PEFT and/or GGUF), reporting each module's error. */
export function convertAdapter(opts: ConvertOptions): Promise<ConvertReport> {
  return withInputTracking(() => convertAdapterInRun(opts));
}

async function convertAdapterInRun(opts: ConvertOptions): Promise<ConvertReport> {
  const started = Date.now();
  if ((opts.to ?? 'lora') !== 'lora') throw new Error(`convert: --to ${opts.to} is not supported; loraforge converts to plain LoRA (--to lora)`);
  if (opts.policy) checkPolicy(opts.policy);
  const format = opts.format ?? 'peft';
  const seed = opts.seed ?? 0;
  assertNotInput(opts.out, [opts.adapter, ...(opts.base ? [opts.base] : [])]);
  const backend = opts.backend ?? (await getBackend());

  const adapter: PeftAdapter = await openPeftAdapter(opts.adapter);
  let base: Checkpoint | undefined;
  try {
    const variant = await checkAdapterVariant(adapter);
    const stack = adapter.modules.find((m) => m.experts);
    if (stack) {
      throw new Error(
        `convert: ${adapter.dir} holds an MoE expert stack ("${stack.experts!.parameter}", PEFT target_parameters); convert rewrites ` +
          'DoRA/EDoRA adapters as plain LoRA and does not write expert stacks: leave them plain LoRA, or merge the adapter into the base with `loraforge apply`',
      );
    }
    const needsBase = [...variant.methods.values()].some((m) => m === 'dora' || m === 'edora');
    if (opts.base) base = await openCheckpoint(opts.base);
    else if (needsBase) throw new Error(`convert: ${adapter.dir} is a DoRA/EDoRA adapter; pass --base: W' − W depends on the base weights`);
    const targets = new Map(
      adapter.modules.filter((m) => variant.methods.get(m.name) === 'dora' || variant.methods.get(m.name) === 'edora').map((m) => [m.name, resolveModuleTarget(base!, adapter, m)]),
    );
    const decomposePolicy: RankPolicy = opts.policy ?? { energy: DEFAULT_ENERGY };

    const openSink = (tmpPath: string) =>
      createAdapterSink(tmpPath, {
        format,
        dtype: opts.dtype,
        baseModel: adapter.config.base_model_name_or_path ?? (base ? baseModelNameOrPath(base) : undefined),
        baseConfig: base?.config,
        useRslora: false,
        useDora: false,
      });
    return await withAtomicSink(opts.out, { overwrite: opts.overwrite }, openSink, async (sink) => {
      const modules: ConvertedModule[] = [];
      const load = async (name: string): Promise<Loaded> => {
        const mod = await adapter.load(name);
        const target = targets.get(name);
        if (!target) return { mod };
        const data = await base!.read(target.tensor);
        return { mod, W: asOutIn(data, base!.info(target.tensor).shape, target.transposed) };
      };
      const names = adapter.modules.map((m) => m.name);
      for await (const { item: name, value, index } of prefetch(names, load)) {
        const info = adapter.module(name);
        const method = variant.methods.get(name)!;
        const row = { name, kind: info.kind, method, sourceRank: info.rank };
        const u = await weightUpdate(backend, value.mod, info.scaling);
        if (!value.W) {
          if (!opts.policy) {
            // the scaling is already in u.Bs: alpha = r makes PEFT's scale 1
            await sink.addModule({ name, kind: info.kind, A: u.A, B: u.Bs, alpha: info.rank });
            modules.push({ ...row, action: 'copied', rank: info.rank, relError: 0 });
          } else {
            const svd = await productSvd(backend, u.Bs, u.A);
            // the source rank bounds the SVD already: no default cap needed here
            const rank =
              'rank' in opts.policy ? Math.min(opts.policy.rank, svd.S.length) : Math.min(rankForEnergy(svd.S, opts.policy.energy), opts.policy.maxRank ?? svd.S.length);
            const f = factorsFromSvd(svd, rank, `${opts.adapter}: module ${name}`);
            let dropped = 0;
            let total = 0;
            svd.S.forEach((s, i) => {
              total += s * s;
              if (i >= rank) dropped += s * s;
            });
            await sink.addModule({ name, kind: info.kind, A: f.A, B: f.B, alpha: rank });
            modules.push({ ...row, action: 'refactored', rank, relError: total > 0 ? Math.sqrt(dropped / total) : 0 });
          }
        } else {
          const D = await updateDifference(backend, value.W, u);
          const norm = frobenius(D.data);
          if (norm === 0) {
            modules.push({ ...row, action: 'dropped', rank: 0, relError: 0, note: 'the module leaves its weight unchanged' });
          } else {
            const { svd, rank, note } = await truncatedSvd(backend, D, decomposePolicy, info.rank, seed);
            const f = factorsFromSvd(svd, rank, `${opts.adapter}: module ${name}`);
            const relError = (await residualNorm(backend, D, f)) / norm;
            await sink.addModule({ name, kind: info.kind, A: f.A, B: f.B, alpha: rank });
            modules.push({ ...row, action: 'converted', rank, relError, ...(note ? { note } : {}) });
          }
        }
        opts.onProgress?.({ index, total: names.length, name });
      }
      for (const t of adapter.fullTensors) await sink.addFull(t.name, t.shape, await adapter.readFull(t.name));
      await sink.finish();
      const notes = [...variant.notes];
      if (modules.some((m) => m.action === 'copied')) notes.push('plain LoRA modules were copied unchanged (give --rank or --energy to re-factor them)');
      return {
        adapter: resolve(opts.adapter),
        out: resolve(opts.out),
        ...(opts.base ? { base: resolve(opts.base) } : {}),
        variant: variant.summary,
        policy: opts.policy ?? (targets.size > 0 ? decomposePolicy : 'copy'),
        format,
        modules,
        fullTensors: adapter.fullTensors.map((t) => t.name),
        maxRelError: modules.reduce((m, x) => Math.max(m, x.relError), 0),
        notes,
        seconds: (Date.now() - started) / 1000,
      };
    });
  } finally {
    await adapter.close();
    await base?.close();
  }
}
