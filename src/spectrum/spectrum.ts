/**
 * Per-tensor singular values of a LoRA adapter (exact, from its factors) or of the difference
 * of two checkpoints Δ = W_B − W_A (top-k by randomized SVD, streamed pair by pair), with the
 * energy each rank captures and the effective ranks at 90/95/99% energy.
 */
import type { LinalgBackend } from '../linalg/backend.js';
import { getBackend } from '../linalg/index.js';
import { productSvd } from '../linalg/product-svd.js';
import { randomizedSvd } from '../linalg/rsvd.js';
import { openCheckpoint, pairTensors } from '../io/checkpoint.js';
import type { TensorInfo, TensorSource } from '../io/types.js';
import { expertLayout, expertWeightShape } from '../extract/moe.js';
import { classifyTensor } from '../extract/targets.js';
import type { ExpertLayout } from '../lora/expert-stack.js';
import { isFloatDType } from '../tensor/dtype.js';
import { openPeftAdapter, type LoraExpertsModule, type LoraModule, type LoraModuleInfo } from '../lora/adapter.js';
import { prefetch } from '../pipeline/prefetch.js';
import { assertNoOverflow } from '../tensor/finite.js';
import type { Matrix } from '../tensor/matrix.js';
import { layerIndexOf, moduleTypeOf, naturalCompare } from '../lora/module-names.js';
import type { OnProgress } from '../progress.js';

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
  changed1d: ChangedVector[];
  notes: string[];
}

export interface ChangedVector {
  name: string;
  shape: number[];
  /** ‖b − a‖ / ‖a‖; null when a is all zeros */
  relChange: number | null;
}

interface CommonOptions {
  /** a GEMM backend to use instead of getBackend() */
  backend?: LinalgBackend;
  /** singular values kept per tensor (default 64) */
  top?: number;
  /** only tensors/modules whose name matches */
  include?: RegExp;
  /** called after each tensor */
  onProgress?: OnProgress;
}

export interface AdapterSpectrumOptions extends CommonOptions {
  /** the PEFT adapter folder */
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

/** Refuses singular values that are NaN/∞ (from NaN or overflowed factors) before they reach a report or an adapter. */
export function assertFiniteSpectrum(sigma: ArrayLike<number>, where: string): void {
  for (let i = 0; i < sigma.length; i++) {
    if (!Number.isFinite(sigma[i])) throw new Error(`${where}: the update has NaN or infinite values (corrupt or overflowed factors); exclude this module`);
  }
}

/** scaling·B (with an EDoRA latent folded in: scaling·B·R), the left factor of Δ = B'·A. */
export async function scaledLeftFactor(backend: LinalgBackend, m: LoraModule, scaling: number): Promise<Matrix> {
  const left = m.latent ? await backend.gemm(m.B, m.latent) : { ...m.B, data: Float32Array.from(m.B.data) };
  for (let i = 0; i < left.data.length; i++) left.data[i] *= scaling;
  return left;
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
 * stack (target_parameters) gives one entry per expert, `<parameter>[e]`, of its ΔW_e.
 */
export async function adapterSpectrum(opts: AdapterSpectrumOptions): Promise<SpectrumResult> {
  const dir = opts.adapter;
  const backend = opts.backend ?? (await getBackend());
  const top = checkTop(opts.top ?? DEFAULT_TOP);
  const adapter = await openPeftAdapter(dir);
  try {
    const entries = adapterEntries(adapter.modules)
      .filter((x) => !opts.include || opts.include.test(x.name))
      .sort((a, b) => naturalCompare(a.name, b.name));
    const notes: string[] = [];
    if (entries.some((x) => x.info.hasMagnitude)) {
      notes.push('DoRA adapter: spectra are of the low-rank update scaling·B·A, before DoRA rescales each output row by its magnitude vector.');
    }
    if (entries.some((x) => x.info.hasLatent)) notes.push('EDoRA adapter: spectra are of scaling·B·R·A (the latent R folded in).');
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
        if (stack?.name !== info.name) stack = await adapter.loadExperts(info.name);
        m = stack.experts[expert];
      }
      const svd = await productSvd(backend, await scaledLeftFactor(backend, m, info.scaling), m.A);
      assertFiniteSpectrum(svd.S, `${dir}: module "${info.name}"${expert === undefined ? '' : ` (${name})`}`);
      let total = 0;
      for (const s of svd.S) total += s * s;
      tensors.push({
        name,
        layer: layerIndexOf(name),
        moduleType: moduleTypeOf(name),
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

/** The 2-D tensors `spectrum` and `edit` look at in a checkpoint by default: the linear weights of decoder layers (3-D expert tensors: isExpertStack). */
export function isDecoderLinearWeight(name: string): boolean {
  return layerIndexOf(name) !== null && name.endsWith('.weight');
}

/** A view of `src` listing only the tensors `keep` accepts (nothing is read). */
export function filterSource(src: TensorSource, keep: (t: TensorInfo) => boolean): TensorSource {
  const listed = src.list().filter(keep);
  const names = new Set(listed.map((t) => t.name));
  return {
    path: src.path,
    list: () => listed,
    has: (name) => names.has(name),
    info: (name) => src.info(name),
    read: (name) => src.read(name),
    close: () => src.close(),
  };
}

export interface DeltaPlan {
  /** 2-D tensors present in both checkpoints with the same shape, in natural name order */
  pairs: Array<{ name: string; shape: [number, number] }>;
  /** 3-D MoE expert tensors present in both with the same shape, with the experts the filter picked, in natural name order */
  experts: ExpertDeltaTensor[];
  /** 1-D float tensors present in both with the same shape (also in `skipped`: no spectrum, no LoRA) */
  vectors: string[];
  skipped: Array<{ name: string; reason: string }>;
}

/** A 3-D expert tensor ([experts, out, in] or [experts, in, out]) of a model pair, decomposed expert by expert. */
export interface ExpertDeltaTensor {
  name: string;
  /** the tensor name without `.weight`: expert e is reported as `<parameter>[e]` */
  parameter: string;
  /** [experts, ·, ·] as stored */
  stored: [number, number, number];
  layout: ExpertLayout;
  /** [out, in] of one expert's ΔW_e */
  shape: [number, number];
  /** the experts the filter picked, ascending */
  experts: number[];
}

/** A weight tensor's module path: its name without `.weight`. */
export function withoutWeightSuffix(name: string): string {
  return name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : name;
}

/** `<tensor without .weight>[e]` for each expert of a 3-D tensor: the names --include and the report use. */
function expertEntryNames(t: TensorInfo): string[] {
  return Array.from({ length: t.shape[0] }, (_, e) => `${withoutWeightSuffix(t.name)}[${e}]`);
}

/** A 3-D tensor under an `experts` module of a decoder layer, as extract recognises them (mlp.experts.gate_up_proj). */
function isExpertStack(t: TensorInfo): boolean {
  return t.shape.length === 3 && classifyTensor(t.name, t.shape).kind === 'experts';
}

/**
 * Which tensors of a model pair to decompose: the filter (default: decoder-layer weights and MoE
 * expert tensors), then 2-D pairs and 3-D expert tensors. `include` is tested against a 2-D
 * tensor's name and against each expert's name, `<parameter>[e]`; `config` (config.json) tells
 * the expert layout.
 */
export function planDeltaTensors(a: TensorSource, b: TensorSource, include?: RegExp, config?: Record<string, unknown>): DeltaPlan {
  const wanted = (t: TensorInfo) => {
    if (!include) return isDecoderLinearWeight(t.name) || isExpertStack(t);
    return isExpertStack(t) ? expertEntryNames(t).some((n) => include.test(n)) : include.test(t.name);
  };
  const { pairs, onlyInA, onlyInB } = pairTensors(filterSource(a, wanted), filterSource(b, wanted));
  const skipped = [
    ...onlyInA.map((name) => ({ name, reason: `only in ${a.path}` })),
    ...onlyInB.map((name) => ({ name, reason: `only in ${b.path}` })),
  ];
  const kept: DeltaPlan['pairs'] = [];
  const experts: ExpertDeltaTensor[] = [];
  const vectors: string[] = [];
  for (const p of pairs) {
    if (p.a.shape.length === 1 && isFloatDType(p.a.dtype) && isFloatDType(p.b.dtype)) vectors.push(p.name);
    if (p.a.shape.length === 2) kept.push({ name: p.name, shape: [p.a.shape[0], p.a.shape[1]] });
    else if (isExpertStack(p.a)) {
      // quantized expert blocks/scales (gpt-oss MXFP4) have the same names pattern but are no weights we can subtract
      const nonFloat = [p.a.dtype, p.b.dtype].find((d) => !isFloatDType(d));
      if (nonFloat) {
        skipped.push({ name: p.name, reason: `${nonFloat}, not a float weight (dequantize the checkpoints first)` });
        continue;
      }
      const [count, d1, d2] = p.a.shape;
      const param = p.name.slice(p.name.lastIndexOf('.') + 1);
      const layout = expertLayout(config, param, p.a.shape);
      const picked = expertEntryNames(p.a).flatMap((n, e) => (!include || include.test(n) ? [e] : []));
      experts.push({ name: p.name, parameter: withoutWeightSuffix(p.name), stored: [count, d1, d2], layout, shape: expertWeightShape(layout, p.a.shape), experts: picked });
    } else skipped.push({ name: p.name, reason: `${p.a.shape.length}-D, not a linear weight or an MoE expert tensor` });
  }
  kept.sort((x, y) => naturalCompare(x.name, y.name));
  experts.sort((x, y) => naturalCompare(x.name, y.name));
  vectors.sort(naturalCompare);
  return { pairs: kept, experts, vectors, skipped };
}

/**
 * Reads W_A and W_B of every item, one item ahead of the compute, and yields Δ = W_B − W_A with
 * ‖Δ‖²_F of each of its `blocks(item)` equal consecutive blocks (one per expert of a 3-D tensor)
 * summed in f64 from the exact differences.
 */
export async function* streamDifferences<T extends { name: string }>(
  a: TensorSource,
  b: TensorSource,
  items: readonly T[],
  blocks: (item: T) => number,
  depth: number,
): AsyncGenerator<{ item: T; delta: Float32Array; energies: number[]; index: number }> {
  const load = async (item: T) => ({ wa: await a.read(item.name), wb: await b.read(item.name) });
  for await (const { item, value, index } of prefetch(items, load, depth)) {
    const { wa, wb } = value;
    const count = blocks(item);
    const size = wb.length / count;
    const energies: number[] = [];
    for (let k = 0; k < count; k++) {
      let total = 0;
      for (let i = k * size; i < (k + 1) * size; i++) {
        const d = wb[i] - wa[i];
        total += d * d;
        wb[i] = d; // reuse W_B's buffer for Δ: one less tensor-sized allocation per pair
      }
      // the reads refused NaN and ±Inf, so total (exact f64 differences) is finite even where
      // storing a difference as f32 overflowed: that is looked for here
      assertNoOverflow(wb, total, `${b.path}: tensor "${item.name}"`, k * size, (k + 1) * size);
      energies.push(total);
    }
    yield { item, delta: wb, energies, index };
  }
}

/** Expert e's ΔW_e (out × in) from the stored Δ of a 3-D tensor: a copy of slice e, transposed for the in-out layout. */
export function expertDelta(delta: Float32Array, t: ExpertDeltaTensor, e: number): Matrix {
  const [, d1, d2] = t.stored;
  const slice = delta.subarray(e * d1 * d2, (e + 1) * d1 * d2);
  if (t.layout === 'out-in') return { rows: d1, cols: d2, data: slice.slice() };
  // stored [in, out]: element (i, o) goes to row o, column i
  const data = new Float32Array(d1 * d2);
  for (let i = 0; i < d1; i++) for (let o = 0; o < d2; o++) data[o * d1 + i] = slice[i * d2 + o];
  return { rows: d2, cols: d1, data };
}

/**
 * The 1-D tensors of a pair that differ, with ‖b − a‖ / ‖a‖ (f64 sums); they are small (a norm
 * or bias is one row), so they are read after the matrices without prefetching.
 */
async function changedVectors(a: TensorSource, b: TensorSource, names: readonly string[]): Promise<ChangedVector[]> {
  const changed: ChangedVector[] = [];
  for (const name of names) {
    const [wa, wb] = [await a.read(name), await b.read(name)];
    let diffSq = 0;
    let baseSq = 0;
    for (let i = 0; i < wa.length; i++) {
      diffSq += (wb[i] - wa[i]) ** 2;
      baseSq += wa[i] ** 2;
    }
    if (diffSq > 0) changed.push({ name, shape: a.info(name).shape, relChange: baseSq > 0 ? Math.sqrt(diffSq / baseSq) : null });
  }
  return changed;
}

/**
 * Top-k singular values of Δ = W_B − W_A for the linear weights of two checkpoints, streamed pair
 * by pair. A 3-D MoE expert tensor gives one entry per expert, `<tensor without .weight>[e]`, of
 * its ΔW_e (out × in).
 */
export async function deltaSpectrum(opts: DeltaSpectrumOptions): Promise<SpectrumResult> {
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
      const changed1d = await changedVectors(a, b, plan.vectors);
      const changedNames = new Set(changed1d.map((v) => v.name));
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
        changed1d,
        notes,
      };
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}
