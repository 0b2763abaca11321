/**
 * Per-tensor singular values of a LoRA adapter (exact, from its factors) or of the difference
 * of two checkpoints Δ = W_B − W_A (top-k by randomized SVD, streamed pair by pair), with the
 * energy each rank captures and the effective ranks at 90/95/99% energy.
 */
import type { LinalgBackend } from '../linalg/backend.js';
import { getBackend } from '../linalg/index.js';
import { productSvd } from '../linalg/product-svd.js';
import { randomizedSvd } from '../linalg/rsvd.js';
import { assertFiniteSpectrum } from '../linalg/finite-spectrum.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { expertDelta, planDeltaTensors, type ExpertDeltaTensor } from '../delta/pair-plan.js';
import { changedTensors, streamDifferences, type ChangedTensor } from '../delta/pair-stream.js';
import { openPeftAdapter, type LoraExpertsModule, type LoraModule, type LoraModuleInfo, type PeftAdapter } from '../lora/adapter.js';
import { isLoraFile, openLoraFile, type LoraFile } from '../lora/lora-file.js';
import { loraFileLayerIndex, loraFileModuleType } from '../lora/lora-file-format.js';
import { scaledLeftFactor } from '../lora/scaled-left-factor.js';
import type { Matrix } from '../tensor/matrix.js';
import { layerIndexOf, moduleTypeOf, naturalCompare } from '../lora/module-names.js';
import type { OnProgress } from '../progress.js';
import type { HubOptions } from '../io/hub/index.js';
import { localInput } from '../io/local-inputs.js';

/** Energy fractions at which the effective rank is reported. */
export const ENERGY_THRESHOLDS = [0.9, 0.95, 0.99] as const;
export const DEFAULT_TOP = 64;

export interface EffectiveRanks {
  /** smallest r whose top-r components hold ≥ 90% of ‖Δ‖²_F; null when more than the components computed */
  p90: number | null;
  p95: number | null;
  p99: number | null;
}

export interface TensorSpectrum {
  /** adapter: module path, or `<parameter>[e]` for expert e of a MoE expert stack; delta: tensor name, or `<tensor without .weight>[e]` for expert e of a 3-D expert tensor */
  name: string;
  /** from `layers.N.` in the name; null outside the decoder layer stack */
  layer: number | null;
  /** last path component: q_proj, down_proj, … */
  moduleType: string;
  /** [out, in] of the weight Δ changes */
  shape: [number, number];
  /** LoRA rank (adapters; per expert for an expert stack); null for checkpoint deltas */
  rank: number | null;
  /** top-k singular values of Δ, descending */
  sigma: number[];
  /** energy[i]: fraction of ‖Δ‖²_F held by the top i+1 components */
  energy: number[];
  /** ‖Δ‖²_F, exact */
  totalEnergy: number;
  effectiveRank: EffectiveRanks;
}

export interface SpectrumResult {
  source: { kind: 'adapter'; adapter: string } | { kind: 'delta'; modelA: string; modelB: string };
  /** k asked for */
  top: number;
  /** adapters: every σ is exact; deltas: σ from a randomized SVD, ‖Δ‖²_F exact */
  method: 'exact-from-factors' | 'randomized-svd';
  thresholds: readonly number[];
  /** in natural order of names (layers.2 before layers.10) */
  tensors: TensorSpectrum[];
  /** tensors the filter picked but that have no spectrum here, with why */
  skipped: Array<{ name: string; reason: string }>;
  /** checkpoint deltas: 1-D tensors (norms, biases) that differ; they have no spectrum, but a change worth seeing */
  changed1d: ChangedTensor[];
  /** checkpoint deltas: matrices that are no LoRA target (MoE routers, …) and differ, as extract reports them */
  nonTargetDiffering?: ChangedTensor[];
  notes: string[];
}

interface CommonOptions {
  /** a GEMM backend to use instead of getBackend() */
  backend?: LinalgBackend;
  /** singular values kept per tensor (default 64) */
  top?: number;
  /** only tensors/modules whose name matches */
  include?: RegExp;
  /** how Hub ids among the inputs are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
  /** called after each tensor */
  onProgress?: OnProgress;
}

export interface AdapterSpectrumOptions extends CommonOptions {
  /** the PEFT adapter folder, or a kohya/diffusers LoRA `.safetensors` file */
  adapter: string;
}

export interface DeltaSpectrumOptions extends CommonOptions {
  /** the two checkpoints; Δ = W_B − W_A */
  modelA: string;
  modelB: string;
  /** seed of the randomized SVD (default 0) */
  seed?: number;
  /** randomized SVD oversampling (default 8) and power iterations (default 2) */
  oversample?: number;
  powerIters?: number;
  /** tensors read ahead while one is decomposed (default 1) */
  prefetchDepth?: number;
}

/**
 * Top-k summary of a spectrum. `allSigma` may be every singular value (then energies and
 * effective ranks are exact) or only the leading ones; `totalEnergy` is always ‖Δ‖²_F.
 */
export function summarizeSpectrum(allSigma: ArrayLike<number>, totalEnergy: number, top: number): Pick<TensorSpectrum, 'sigma' | 'energy' | 'totalEnergy' | 'effectiveRank'> {
  const cumulative: number[] = [];
  let acc = 0;
  for (let i = 0; i < allSigma.length; i++) {
    acc += allSigma[i] * allSigma[i];
    // a zero Δ has nothing left to capture: every rank holds all of it
    cumulative.push(totalEnergy > 0 ? Math.min(1, acc / totalEnergy) : 1);
  }
  const rankAt = (p: number): number | null => {
    if (totalEnergy === 0) return 0;
    const i = cumulative.findIndex((e) => e >= p);
    return i < 0 ? null : i + 1;
  };
  const k = Math.min(top, allSigma.length);
  return {
    sigma: Array.from({ length: k }, (_, i) => allSigma[i]),
    energy: cumulative.slice(0, k),
    totalEnergy,
    effectiveRank: { p90: rankAt(0.9), p95: rankAt(0.95), p99: rankAt(0.99) },
  };
}

function checkTop(top: number): number {
  if (!Number.isInteger(top) || top < 1) throw new Error(`spectrum: top must be an integer ≥ 1, got ${top}`);
  return top;
}

/** One update of an adapter: a plain module, or expert `expert` of an expert stack (named `<parameter>[e]`). */
interface AdapterEntry {
  name: string;
  info: LoraModuleInfo;
  expert?: number;
}

/** Every update of an adapter, expert stacks split into one entry per expert. */
function adapterEntries(modules: readonly LoraModuleInfo[]): AdapterEntry[] {
  return modules.flatMap((info) =>
    info.experts ? Array.from({ length: info.experts.count }, (_, e) => ({ name: `${info.experts!.parameter}[${e}]`, info, expert: e })) : [{ name: info.name, info }],
  );
}

/**
 * Exact singular values of every module ΔW = scaling·B·A of a PEFT adapter folder. An expert
 * stack (target_parameters) gives one entry per expert, `<parameter>[e]`, of its ΔW_e. A kohya or
 * diffusers LoRA file gives ΔW = (alpha/r)·up·down per module, a conv one as its flattened
 * out × (in·kh·kw) delta, grouped by the image-model naming rule (lora-file-format.ts).
 */
export async function adapterSpectrum(params: AdapterSpectrumOptions): Promise<SpectrumResult> {
  const opts = { ...params, adapter: await localInput(params.adapter, 'adapter', params) };
  const dir = opts.adapter;
  const backend = opts.backend ?? (await getBackend());
  const top = checkTop(opts.top ?? DEFAULT_TOP);
  const file = await isLoraFile(dir);
  const adapter: PeftAdapter | LoraFile = file ? await openLoraFile(dir) : await openPeftAdapter(dir);
  const layerOf = file ? loraFileLayerIndex : layerIndexOf;
  const typeOf = file ? loraFileModuleType : moduleTypeOf;
  try {
    const entries = adapterEntries(adapter.modules)
      .filter((x) => !opts.include || opts.include.test(x.name))
      .sort((a, b) => naturalCompare(a.name, b.name));
    const notes: string[] = [];
    if (entries.some((x) => x.info.hasMagnitude)) {
      notes.push('DoRA adapter: spectra are of the low-rank update scaling·B·A, before DoRA rescales each output row by its magnitude vector.');
    }
    if (entries.some((x) => x.info.hasLatent)) notes.push('EDoRA adapter: spectra are of scaling·B·R·A (the latent R folded in).');
    if (entries.some((x) => x.info.conv)) {
      notes.push('Conv LoRA modules: spectra are of the delta flattened to out × (in·kh·kw), the matrix up·down multiplies out.');
    }
    if (file) {
      notes.push('Layers and module types from the module names: the index after the first "blocks"/"layers" part is the layer, the part after the last index the type.');
    }
    if (entries.some((x) => x.expert !== undefined)) {
      notes.push('MoE expert stacks (PEFT target_parameters): one entry per expert, <parameter>[e], with the spectrum of that expert\'s ΔW_e; rank is per expert.');
    }
    // a stack's experts sort next to each other: load its factors once for all of them
    let stack: LoraExpertsModule | undefined;
    const tensors: TensorSpectrum[] = [];
    for (const [index, { name, info, expert }] of entries.entries()) {
      let m: LoraModule;
      if (expert === undefined) m = await adapter.load(info.name);
      else {
        if (stack?.name !== info.name) stack = await (adapter as PeftAdapter).loadExperts(info.name);
        m = stack.experts[expert];
      }
      const svd = await productSvd(backend, await scaledLeftFactor(backend, m, info.scaling), m.A);
      assertFiniteSpectrum(svd.S, `${dir}: module "${info.name}"${expert === undefined ? '' : ` (${name})`}`);
      let total = 0;
      for (const s of svd.S) total += s * s;
      tensors.push({
        name,
        layer: layerOf(name),
        moduleType: typeOf(name),
        shape: [info.outFeatures, info.inFeatures],
        rank: info.experts?.rank ?? info.rank,
        ...summarizeSpectrum(svd.S, total, top),
      });
      opts.onProgress?.({ index, total: entries.length, name });
    }
    return { source: { kind: 'adapter', adapter: dir }, top, method: 'exact-from-factors', thresholds: ENERGY_THRESHOLDS, tensors, skipped: [], changed1d: [], notes };
  } finally {
    await adapter.close();
  }
}

/**
 * Top-k singular values of Δ = W_B − W_A for the linear weights of two checkpoints, streamed pair
 * by pair. A 3-D MoE expert tensor gives one entry per expert, `<tensor without .weight>[e]`, of
 * its ΔW_e (out × in).
 */
export async function deltaSpectrum(params: DeltaSpectrumOptions): Promise<SpectrumResult> {
  const opts = { ...params, modelA: await localInput(params.modelA, 'model', params), modelB: await localInput(params.modelB, 'model', params) };
  const { modelA, modelB } = opts;
  const backend = opts.backend ?? (await getBackend());
  const top = checkTop(opts.top ?? DEFAULT_TOP);
  const a = await openCheckpoint(modelA);
  try {
    const b = await openCheckpoint(modelB);
    try {
      const plan = planDeltaTensors(a, b, opts.include, a.config ?? b.config);
      if (plan.pairs.length === 0 && plan.experts.length === 0) {
        throw new Error(
          `${modelA} and ${modelB}: no 2-D tensors or MoE expert tensors in both checkpoints match ${opts.include ? `--include ${opts.include.source}` : 'the default filter (weights and experts.* tensors inside layers.N.)'}; pass --include REGEX to choose tensors`,
        );
      }
      // one stream over both kinds, in name order, so each tensor is read once and ahead of the compute
      type Job = { name: string; stack?: ExpertDeltaTensor };
      const jobs: Job[] = [...plan.pairs.map((p) => ({ name: p.name })), ...plan.experts.map((t) => ({ name: t.name, stack: t }))].sort((x, y) =>
        naturalCompare(x.name, y.name),
      );
      const entryCount = plan.pairs.length + plan.experts.reduce((n, t) => n + t.experts.length, 0);
      const svdOptions = { rank: top, seed: opts.seed ?? 0, oversample: opts.oversample, powerIters: opts.powerIters };
      const tensors: TensorSpectrum[] = [];
      const addEntry = async (name: string, delta: Matrix, totalEnergy: number) => {
        const svd = await randomizedSvd(backend, delta, svdOptions);
        // a finite Δ near the f32 limit can still overflow inside the products
        assertFiniteSpectrum(svd.S, `${modelB}: tensor "${name}"`);
        tensors.push({
          name,
          layer: layerIndexOf(name),
          moduleType: moduleTypeOf(name),
          shape: [delta.rows, delta.cols],
          rank: null,
          ...summarizeSpectrum(svd.S, totalEnergy, top),
        });
        opts.onProgress?.({ index: tensors.length - 1, total: entryCount, name });
      };
      const blocks = (job: Job) => job.stack?.stored[0] ?? 1;
      for await (const { item, delta, energies } of streamDifferences(a, b, jobs, blocks, opts.prefetchDepth ?? 1)) {
        const stack = item.stack;
        if (!stack) {
          const { shape } = a.info(item.name);
          await addEntry(item.name, { rows: shape[0], cols: shape[1], data: delta }, energies[0]);
          continue;
        }
        for (const e of stack.experts) await addEntry(`${stack.parameter}[${e}]`, expertDelta(delta, stack, e), energies[e]);
      }
      tensors.sort((x, y) => naturalCompare(x.name, y.name));
      const changed = await changedTensors(a, b, plan.compared);
      const changedNames = new Set(changed.map((v) => v.name));
      const skipped = plan.skipped.filter((t) => !changedNames.has(t.name));
      const notes = ['Singular values come from a randomized SVD (top-k, slightly low when the spectrum decays slowly); energy fractions divide by the exact ‖Δ‖²_F.'];
      if (plan.experts.length) {
        notes.push("MoE expert tensors (3-D): one entry per expert, <tensor>[e], with the spectrum of that expert's ΔW_e = W_B[e] − W_A[e] (out × in).");
      }
      return {
        source: { kind: 'delta', modelA, modelB },
        top,
        method: 'randomized-svd',
        thresholds: ENERGY_THRESHOLDS,
        tensors,
        skipped,
        changed1d: changed.filter((t) => t.shape.length === 1),
        nonTargetDiffering: changed.filter((t) => t.shape.length !== 1),
        notes,
      };
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}
