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
 */
import { join } from 'node:path';
import type { LinalgBackend } from '../linalg/backend.js';
import { productSvd } from '../linalg/product-svd.js';
import { randomizedSvd } from '../linalg/rsvd.js';
import { createRng, type Rng } from '../linalg/random.js';
import type { Svd } from '../linalg/svd-small.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { openSafetensors } from '../io/safetensors.js';
import { assertNotInput, atomicOutputDir } from '../io/atomic.js';
import type { FloatDType } from '../io/types.js';
import { isFloatDType } from '../tensor/dtype.js';
import type { Matrix } from '../tensor/matrix.js';
import { ADAPTER_WEIGHTS_FILE, loraScaling, openPeftAdapter, type LoraModule, type LoraModuleInfo } from '../lora/adapter.js';
import { factorsFromSvd } from '../lora/lowrank.js';
import { createAdapterSink, type AdapterFormat, type AdapterSink } from '../lora/sink.js';
import { isSelected, naturalCompare, type ModuleSelector } from './selectors.js';
import { assertFiniteSpectrum, planDeltaTensors, scaledLeftFactor, streamDeltas } from './spectrum.js';

export interface SigmaEdit {
  /** component indices to keep; every other one is removed */
  keep?: readonly number[];
  /** component indices to remove */
  zero?: readonly number[];
  /** per-component factors */
  scale?: ReadonlyMap<number, number>;
  /** ε of σ_i·(1 + ε·r_i) */
  perturb?: number;
}

export function isEmptyEdit(e: SigmaEdit): boolean {
  return e.keep === undefined && (e.zero?.length ?? 0) === 0 && (e.scale?.size ?? 0) === 0 && (e.perturb ?? 0) === 0;
}

/** Largest component index the edit names (−1 for none): it must exist in some selected module. */
export function largestIndex(e: SigmaEdit): number {
  return Math.max(-1, ...(e.keep ?? []), ...(e.zero ?? []), ...(e.scale?.keys() ?? []));
}

/** Indices (< count) the edit removes: not kept, zeroed, or scaled by 0. */
export function removedComponents(count: number, e: SigmaEdit): Set<number> {
  const removed = new Set<number>();
  if (e.keep) {
    const keep = new Set(e.keep);
    for (let i = 0; i < count; i++) if (!keep.has(i)) removed.add(i);
  }
  for (const i of e.zero ?? []) if (i < count) removed.add(i);
  for (const [i, f] of e.scale ?? []) if (i < count && f === 0) removed.add(i);
  return removed;
}

/**
 * σ' for every component, in the original order: removed ones are 0, scaled ones multiplied,
 * then all multiplied by (1 + ε·noise_i). Indices beyond σ's length do nothing.
 */
export function applySigmaEdit(sigma: ArrayLike<number>, e: SigmaEdit, noise?: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(sigma);
  for (const i of removedComponents(out.length, e)) out[i] = 0;
  for (const [i, f] of e.scale ?? []) if (i < out.length) out[i] *= f;
  const eps = e.perturb ?? 0;
  if (eps !== 0) {
    if (!noise || noise.length < out.length) throw new Error(`spectrum/edit.ts: --perturb needs ${out.length} noise values, got ${noise?.length ?? 0}`);
    for (let i = 0; i < out.length; i++) out[i] *= 1 + eps * noise[i];
  }
  return out;
}

/** Columns `cols` of a row-major matrix, each multiplied by `signs[j]`. */
function pickColumns(m: Matrix, cols: readonly number[], signs?: readonly number[]): Matrix {
  const k = cols.length;
  const data = new Float32Array(m.rows * k);
  for (let r = 0; r < m.rows; r++) {
    for (let j = 0; j < k; j++) data[r * k + j] = (signs?.[j] ?? 1) * m.data[r * m.cols + cols[j]];
  }
  return { rows: m.rows, cols: k, data };
}

export interface Refactored {
  A: Matrix;
  B: Matrix;
  /** σ' of every original component (0 for removed ones) */
  sigmaAfter: Float64Array;
  rank: number;
}

/**
 * LoRA factors for U·diag(σ')·Vᵀ with the removed components dropped, scaled so that
 * loraScaling(alpha, rank', rslora)·B·A equals it.
 */
export function refactorEdited(svd: Svd, e: SigmaEdit, alpha: number, useRslora: boolean, noise?: ArrayLike<number>): Refactored {
  const sigmaAfter = applySigmaEdit(svd.S, e, noise);
  const removed = removedComponents(sigmaAfter.length, e);
  let kept = [...sigmaAfter.keys()].filter((i) => !removed.has(i));
  // a module with every component removed stays a (zero) rank-1 module rather than vanishing
  const zeroModule = kept.length === 0;
  if (zeroModule) kept = [0];
  const rank = kept.length;
  const scaling = loraScaling(alpha, rank, useRslora);
  if (!(scaling !== 0 && Number.isFinite(scaling))) {
    throw new Error(`spectrum/edit.ts: lora_alpha ${alpha} gives scaling ${scaling} at rank ${rank}; cannot store an edited update with it`);
  }
  const signs = kept.map((i) => (sigmaAfter[i] < 0 ? -1 : 1));
  const S = Float64Array.from(kept, (i) => (zeroModule ? 0 : Math.abs(sigmaAfter[i]) / scaling));
  const { A, B } = factorsFromSvd({ U: pickColumns(svd.U, kept, signs), S, V: pickColumns(svd.V, kept) }, rank);
  return { A, B, sigmaAfter, rank };
}

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
}

interface EditOptionsBase {
  out: string;
  edit: SigmaEdit;
  select?: ModuleSelector;
  /** seed of the --perturb draws (and, from a model pair, of the randomized SVD); default 0 */
  seed?: number;
  format?: AdapterFormat;
  /** storage dtype of the new factors; default the input's */
  dtype?: FloatDType;
  /** base model config.json, needed for GGUF output */
  baseConfig?: Record<string, unknown>;
  /** replace a non-empty `out` */
  overwrite?: boolean;
  onModule?: (p: { index: number; total: number; name: string }) => void;
}

export interface EditAdapterOptions extends EditOptionsBase {
  adapter: string;
}

export interface EditDeltaOptions extends EditOptionsBase {
  modelA: string;
  modelB: string;
  /** rank extracted per tensor before editing */
  rank: number;
  /** tensors to extract (default: weights inside layers.N.) */
  include?: RegExp;
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
  const dir = await atomicOutputDir(out, { overwrite });
  try {
    const sink = await makeSink(dir.tmpPath);
    let result: T;
    try {
      result = await body(sink);
      await sink.finish();
    } catch (err) {
      await sink.abort();
      throw err;
    }
    await dir.commit();
    return result;
  } catch (err) {
    await dir.abort();
    throw err;
  }
}

function summarize(out: string, format: AdapterFormat, dtype: FloatDType, modules: ModuleEditReport[], fullTensors: number): EditSummary {
  const edited = modules.filter((m) => m.edited).length;
  return { out, format, dtype, modules, edited, copied: modules.length - edited, fullTensors };
}

/**
 * Edits Σ of the selected modules of a PEFT adapter and writes a new adapter to `opts.out`;
 * unselected modules and modules_to_save tensors are copied unchanged.
 */
export async function editAdapter(backend: LinalgBackend, opts: EditAdapterOptions): Promise<EditSummary> {
  const select = opts.select ?? {};
  const format = opts.format ?? 'peft';
  const adapter = await openPeftAdapter(opts.adapter);
  try {
    const useRslora = adapter.config.use_rslora === true;
    const infos: LoraModuleInfo[] = [...adapter.modules].sort((a, b) => naturalCompare(a.name, b.name));
    const selected = infos.filter((m) => isSelected(select, m.name));
    const special = selected.find((m) => m.hasMagnitude || m.hasLatent);
    if (special) {
      throw new Error(
        `${opts.adapter}: module "${special.name}" is ${special.hasMagnitude ? 'DoRA' : 'EDoRA'}; edit re-factorises plain LoRA updates scaling·B·A only — convert the adapter to LoRA first`,
      );
    }
    checkIndices(opts.edit, selected.map((m) => componentCount(m.rank, m.outFeatures, m.inFeatures)), opts.adapter);
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
      });
    return await withAdapterOutput(opts.out, [opts.adapter], opts.overwrite ?? false, makeSink, async (sink) => {
      const reports: ModuleEditReport[] = [];
      for (const [index, info] of infos.entries()) {
        const noise = drawNoise(rng, componentCount(info.rank, info.outFeatures, info.inFeatures));
        const m = await adapter.load(info.name);
        if (!isSelected(select, info.name)) {
          await sink.addModule(m);
          reports.push({ name: info.name, edited: false, rankBefore: info.rank, rankAfter: info.rank });
        } else {
          const svd = await productSvd(backend, await scaledLeftFactor(backend, m, info.scaling), m.A);
          assertFiniteSpectrum(svd.S, `${opts.adapter}: module "${info.name}"`);
          const r = refactorEdited(svd, opts.edit, info.alpha, useRslora, noise);
          await sink.addModule({ name: m.name, kind: m.kind, A: r.A, B: r.B, alpha: info.alpha });
          reports.push({
            name: info.name,
            edited: true,
            rankBefore: info.rank,
            rankAfter: r.rank,
            sigmaBefore: Array.from(svd.S),
            sigmaAfter: Array.from(r.sigmaAfter),
          });
        }
        opts.onModule?.({ index, total: infos.length, name: info.name });
      }
      for (const t of adapter.fullTensors) await sink.addFull(t.name, t.shape, await adapter.readFull(t.name));
      return summarize(opts.out, format, dtype, reports, adapter.fullTensors.length);
    });
  } finally {
    await adapter.close();
  }
}

/**
 * Extracts a rank-`opts.rank` LoRA of Δ = W_B − W_A (randomized SVD, pair by pair), edits Σ of
 * the selected modules and writes the adapter. Modules get alpha = rank, so an unedited module
 * has scaling 1 and B·A is the truncated Δ itself.
 */
export async function editDelta(backend: LinalgBackend, opts: EditDeltaOptions): Promise<EditSummary> {
  const select = opts.select ?? {};
  const format = opts.format ?? 'peft';
  if (!Number.isInteger(opts.rank) || opts.rank < 1) throw new Error(`spectrum/edit.ts: rank must be an integer ≥ 1, got ${opts.rank}`);
  const a = await openCheckpoint(opts.modelA);
  try {
    const b = await openCheckpoint(opts.modelB);
    try {
      const plan = planDeltaTensors(a, b, opts.include);
      if (plan.pairs.length === 0) {
        throw new Error(`${opts.modelA} and ${opts.modelB}: no 2-D tensors in both checkpoints match the filter; pass --include REGEX to choose tensors`);
      }
      const moduleName = (tensor: string) => tensor.replace(/\.weight$/, '');
      const counts = plan.pairs.filter((p) => isSelected(select, moduleName(p.name))).map((p) => componentCount(opts.rank, p.shape[0], p.shape[1]));
      checkIndices(opts.edit, counts, `${opts.modelA} → ${opts.modelB}`);
      const firstDType = b.info(plan.pairs[0].name).dtype;
      const dtype = opts.dtype ?? (isFloatDType(firstDType) ? firstDType : 'F32');
      const rng = opts.edit.perturb ? createRng(opts.seed ?? 0) : undefined;
      const alpha = opts.rank;
      const makeSink = (dir: string) => createAdapterSink(dir, { format, dtype, baseModel: opts.modelA, baseConfig: opts.baseConfig ?? a.config });
      return await withAdapterOutput(opts.out, [opts.modelA, opts.modelB], opts.overwrite ?? false, makeSink, async (sink) => {
        const reports: ModuleEditReport[] = [];
        for await (const { name, delta, index } of streamDeltas(a, b, plan.pairs)) {
          const count = componentCount(opts.rank, delta.rows, delta.cols);
          const noise = drawNoise(rng, count);
          const svd = await randomizedSvd(backend, delta, { rank: opts.rank, seed: opts.seed ?? 0 });
          const path = moduleName(name);
          const edited = isSelected(select, path);
          const r = refactorEdited(svd, edited ? opts.edit : {}, alpha, false, noise);
          const m: LoraModule = { name: path, kind: 'linear', A: r.A, B: r.B, alpha };
          await sink.addModule(m);
          reports.push({
            name: path,
            edited,
            rankBefore: count,
            rankAfter: r.rank,
            ...(edited ? { sigmaBefore: Array.from(svd.S), sigmaAfter: Array.from(r.sigmaAfter) } : {}),
          });
          opts.onModule?.({ index, total: plan.pairs.length, name: path });
        }
        return summarize(opts.out, format, dtype, reports, 0);
      });
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}
