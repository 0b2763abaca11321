/**
 * LoRA modules and model pairs with planted singular values, for spectrum and edit tests:
 * ΔW = scaling·B·A = U·diag(σ)·Vᵀ with U, V seeded orthonormal and σ chosen by the test. The
 * factors are mixed by a random rotation so B and A are not already in SVD form.
 */
import { orthonormalize } from '../../src/linalg/qr.js';
import { loraScaling, PeftAdapterWriter, type LoraModule } from '../../src/lora/adapter.js';
import type { Matrix } from '../../src/tensor/matrix.js';
import { gaussianMatrix } from '../linalg/planted.js';

export interface PlantedLora {
  module: LoraModule;
  scaling: number;
  /** out × k and in × k orthonormal; ΔW = U·diag(sigma)·Vᵀ */
  U: Matrix;
  V: Matrix;
  sigma: number[];
}

export interface PlantedLoraSpec {
  name: string;
  out: number;
  in: number;
  /** singular values of ΔW (the LoRA rank is their count; zeros make a rank-deficient module) */
  sigma: number[];
  alpha: number;
  seed: number;
  useRslora?: boolean;
  /** store an EDoRA-style latent R with B·R·A = the same product */
  latent?: boolean;
}

export function plantedLora(spec: PlantedLoraSpec): PlantedLora {
  const r = spec.sigma.length;
  const scaling = loraScaling(spec.alpha, r, spec.useRslora ?? false);
  const U = orthonormalize(gaussianMatrix(spec.out, r, spec.seed));
  const V = orthonormalize(gaussianMatrix(spec.in, r, spec.seed + 1));
  const M = orthonormalize(gaussianMatrix(r, r, spec.seed + 2)); // B·A = (B₀·M)(Mᵀ·A₀) = B₀·A₀
  const root = spec.sigma.map((s) => Math.sqrt(s / scaling));
  const B = new Float32Array(spec.out * r);
  const A = new Float32Array(r * spec.in);
  for (let i = 0; i < spec.out; i++) {
    for (let c = 0; c < r; c++) {
      let acc = 0;
      for (let j = 0; j < r; j++) acc += U.data[i * r + j] * root[j] * M.data[j * r + c];
      B[i * r + c] = acc;
    }
  }
  for (let c = 0; c < r; c++) {
    for (let k = 0; k < spec.in; k++) {
      let acc = 0;
      for (let j = 0; j < r; j++) acc += M.data[j * r + c] * root[j] * V.data[k * r + j];
      A[c * spec.in + k] = acc;
    }
  }
  const module: LoraModule = { name: spec.name, kind: 'linear', A: { rows: r, cols: spec.in, data: A }, B: { rows: spec.out, cols: r, data: B }, alpha: spec.alpha };
  if (spec.latent) {
    // B·R·A with R = Mᵀ and B' = B·M: B'·R = B, so the product is unchanged
    const Bm = new Float32Array(spec.out * r);
    for (let i = 0; i < spec.out; i++) {
      for (let c = 0; c < r; c++) {
        let acc = 0;
        for (let j = 0; j < r; j++) acc += B[i * r + j] * M.data[j * r + c];
        Bm[i * r + c] = acc;
      }
    }
    const R = new Float32Array(r * r);
    for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) R[i * r + j] = M.data[j * r + i];
    module.B = { rows: spec.out, cols: r, data: Bm };
    module.latent = { rows: r, cols: r, data: R };
  }
  return { module, scaling, U, V, sigma: spec.sigma };
}

/** scaling·B·A (·R folded in) as a dense out × in f64 array. */
export function denseUpdate(m: LoraModule, scaling: number): Float64Array {
  const r = m.A.rows;
  const out = m.B.rows;
  const inF = m.A.cols;
  let B = Float64Array.from(m.B.data);
  if (m.latent) {
    const BR = new Float64Array(out * r);
    for (let i = 0; i < out; i++) for (let c = 0; c < r; c++) for (let j = 0; j < r; j++) BR[i * r + c] += B[i * r + j] * m.latent.data[j * r + c];
    B = BR;
  }
  const d = new Float64Array(out * inF);
  for (let i = 0; i < out; i++) {
    for (let j = 0; j < r; j++) {
      const b = scaling * B[i * r + j];
      if (b === 0) continue;
      for (let k = 0; k < inF; k++) d[i * inF + k] += b * m.A.data[j * inF + k];
    }
  }
  return d;
}

/** Σ_i weights[i]·σ_i·u_i·v_iᵀ over the planted triplets, dense f64. */
export function plantedSum(p: PlantedLora, weights: ArrayLike<number>): Float64Array {
  const { U, V } = p;
  const r = p.sigma.length;
  const d = new Float64Array(U.rows * V.rows);
  for (let c = 0; c < r; c++) {
    const w = weights[c] * p.sigma[c];
    if (w === 0) continue;
    for (let i = 0; i < U.rows; i++) for (let k = 0; k < V.rows; k++) d[i * V.rows + k] += w * U.data[i * r + c] * V.data[k * r + c];
  }
  return d;
}

/** max |x − y| / max |y|: a scale-free distance between two dense updates. */
export function relMaxDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < y.length; i++) {
    d = Math.max(d, Math.abs(x[i] - y[i]));
    m = Math.max(m, Math.abs(y[i]));
  }
  return m === 0 ? d : d / m;
}

export interface AdapterFolderOptions {
  useRslora?: boolean;
  useDora?: boolean;
  /** modules_to_save tensors */
  full?: Record<string, { shape: number[]; data: Float32Array }>;
}

/** Writes `modules` as a PEFT adapter folder (F32). */
export async function writeAdapter(dir: string, modules: LoraModule[], opts: AdapterFolderOptions = {}): Promise<void> {
  const w = await PeftAdapterWriter.create(dir, { useRslora: opts.useRslora, useDora: opts.useDora, baseModel: 'synthetic-base' });
  for (const m of modules) await w.addModule(m);
  for (const [name, t] of Object.entries(opts.full ?? {})) await w.addFull(name, t.shape, t.data);
  await w.finish();
}
