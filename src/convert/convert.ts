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
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import type { FloatDType } from '../io/types.js';
import { getBackend } from '../linalg/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { openPeftAdapter, type LoraKind, type LoraModule, type PeftAdapter } from '../lora/adapter.js';
import { fromSvd, svdOf } from '../lowrank/low-rank.js';
import { decompose, tensorSeed, truncate } from '../lowrank/decompose.js';
import { checkPolicy, describePolicy, type RankPolicy } from '../lowrank/rank-policy.js';
import { exactRelError } from '../lowrank/residual.js';
import { createAdapterSink, type AdapterFormat } from '../lora/sink.js';
import { runCommand } from '../pipeline/run.js';
import { sumSquares, type Matrix } from '../tensor/matrix.js';
import { updateDifference, weightUpdate, type AdapterMethod } from '../lora/weight-update.js';
import { asOutIn, resolveModuleTarget } from '../lora/module-target.js';
import { checkAdapterVariant } from '../lora/variant.js';
import { baseModelNameOrPath } from '../lora/base-model.js';
import type { OnProgress } from '../progress.js';
import type { HubOptions } from '../io/hub/index.js';
import { localInput } from '../io/local-inputs.js';

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
  /** default: energy 0.99 for DoRA/EDoRA modules, plain LoRA copied; an adaptive policy without maxRank stops at 4× each module's rank */
  policy?: RankPolicy;
  format?: AdapterFormat;
  /** storage dtype of A and B (default F32) */
  dtype?: FloatDType;
  /** mixed with each module's name into the seed of its randomized SVD */
  seed?: number;
  overwrite?: boolean;
  backend?: LinalgBackend;
  /** how Hub ids among the inputs are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
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

/** The policy for one module's D: an adaptive one without a cap stops at DEFAULT_MAX_RANK_FACTOR × its rank. */
function modulePolicy(policy: RankPolicy, sourceRank: number): RankPolicy {
  return policy.mode === 'rank' || policy.maxRank !== undefined ? policy : { ...policy, maxRank: DEFAULT_MAX_RANK_FACTOR * sourceRank };
}

const WAYS_OUT = "Lower --rank, or use --energy, which never exceeds a module's size";

interface Loaded {
  mod: LoraModule;
  /** base weight as out × in, DoRA/EDoRA only */
  W?: Matrix;
}

/** Converts a DoRA/EDoRA adapter to plain LoRA (PEFT and/or GGUF), reporting each module's error. */
export async function convertAdapter(params: ConvertOptions): Promise<ConvertReport> {
  const opts = { ...params, adapter: await localInput(params.adapter, 'adapter', params), base: params.base === undefined ? undefined : await localInput(params.base, 'model', params) };
  const started = Date.now();
  if ((opts.to ?? 'lora') !== 'lora') throw new Error(`convert: --to ${opts.to} is not supported; loraforge converts to plain LoRA (--to lora)`);
  if (opts.policy) checkPolicy(opts.policy);
  const format = opts.format ?? 'peft';
  const seed = opts.seed ?? 0;
  const decomposePolicy: RankPolicy = opts.policy ?? { mode: 'energy', energy: DEFAULT_ENERGY };

  return runCommand({
    inputs: [opts.adapter, ...(opts.base ? [opts.base] : [])],
    open: async (keep) => {
      const backend = opts.backend ?? (await getBackend());
      const adapter: PeftAdapter = keep(await openPeftAdapter(opts.adapter));
      const variant = await checkAdapterVariant(adapter);
      const stack = adapter.modules.find((m) => m.experts);
      if (stack) {
        throw new Error(
          `convert: ${adapter.dir} holds an MoE expert stack ("${stack.experts!.parameter}", PEFT target_parameters); convert rewrites ` +
            'DoRA/EDoRA adapters as plain LoRA and does not write expert stacks: leave them plain LoRA, or merge the adapter into the base with `loraforge apply`',
        );
      }
      const needsBase = [...variant.methods.values()].some((m) => m === 'dora' || m === 'edora');
      let base: Checkpoint | undefined;
      if (opts.base) base = keep(await openCheckpoint(opts.base));
      else if (needsBase) throw new Error(`convert: ${adapter.dir} is a DoRA/EDoRA adapter; pass --base: W' − W depends on the base weights`);
      return { backend, adapter, variant, base };
    },
    plan: ({ adapter, variant, base }) => ({
      items: adapter.modules,
      targets: new Map(
        adapter.modules.filter((m) => variant.methods.get(m.name) === 'dora' || variant.methods.get(m.name) === 'edora').map((m) => [m.name, resolveModuleTarget(base!, adapter, m)]),
      ),
    }),
    output: {
      dir: opts.out,
      overwrite: opts.overwrite,
      sink: (tmpPath, { res: { adapter, base } }) =>
        createAdapterSink(tmpPath, {
          format,
          dtype: opts.dtype,
          baseModel: adapter.config.base_model_name_or_path ?? (base ? baseModelNameOrPath(base) : undefined),
          baseConfig: base?.config,
          useRslora: false,
          useDora: false,
        }),
    },
    load: async (info, { res: { adapter, base }, plan }): Promise<Loaded> => {
      const mod = await adapter.load(info.name);
      const target = plan.targets.get(info.name);
      if (!target) return { mod };
      const data = await base!.read(target.tensor);
      return { mod, W: asOutIn(data, base!.info(target.tensor).shape, target.transposed) };
    },
    each: async (info, value, { res: { backend, variant }, sink }): Promise<ConvertedModule> => {
      const name = info.name;
      const method = variant.methods.get(name)!;
      const row = { name, kind: info.kind, method, sourceRank: info.rank };
      const u = await weightUpdate(backend, value.mod, info.scaling);
      const what = `${opts.adapter}: module ${name}`;
      if (!value.W) {
        if (!opts.policy) {
          // the scaling is already in u.B: alpha = r makes PEFT's scale 1
          await sink.addModule({ name, kind: info.kind, A: u.A, B: u.B, alpha: info.rank });
          return { ...row, action: 'copied', rank: info.rank, relError: 0 };
        }
        // exact, from the factors; the source rank bounds the SVD already: no default cap needed here
        const svd = await svdOf(backend, u);
        const { rank, relError } = truncate(svd, opts.policy);
        const f = fromSvd(svd, rank, { what });
        await sink.addModule({ name, kind: info.kind, A: f.A, B: f.B, alpha: rank });
        return { ...row, action: 'refactored', rank, relError };
      }
      const D = await updateDifference(backend, value.W, u);
      const frobSq = sumSquares(D.data);
      if (frobSq === 0) return { ...row, action: 'dropped', rank: 0, relError: 0, note: 'the module leaves its weight unchanged' };
      const policy = modulePolicy(decomposePolicy, info.rank);
      const dec = await decompose(backend, D, frobSq, policy, tensorSeed(seed, name), { name, waysOut: WAYS_OUT });
      const f = fromSvd(dec.svd, dec.rank, { what });
      const relError = await exactRelError(backend, D, f.B, f.A, 1, frobSq);
      await sink.addModule({ name, kind: info.kind, A: f.A, B: f.B, alpha: dec.rank });
      const note = dec.targetMet ? {} : { note: `${describePolicy(policy)} not reached within rank ${dec.rank}` };
      return { ...row, action: 'converted', rank: dec.rank, relError, ...note };
    },
    finish: async (modules, { res: { adapter, variant }, plan, sink }) => {
      for (const t of adapter.fullTensors) await sink.addFull(t.name, t.shape, await adapter.readFull(t.name));
      await sink.finish();
      const notes = [...variant.notes];
      if (modules.some((m) => m.action === 'copied')) notes.push('plain LoRA modules were copied unchanged (give --rank or --energy to re-factor them)');
      return {
        adapter: resolve(opts.adapter),
        out: resolve(opts.out),
        ...(opts.base ? { base: resolve(opts.base) } : {}),
        variant: variant.summary,
        policy: opts.policy ?? (plan.targets.size > 0 ? decomposePolicy : 'copy'),
        format,
        modules,
        fullTensors: adapter.fullTensors.map((t) => t.name),
        maxRelError: modules.reduce((m, x) => Math.max(m, x.relError), 0),
        notes,
        seconds: (Date.now() - started) / 1000,
      };
    },
    onProgress: opts.onProgress,
  });
}
