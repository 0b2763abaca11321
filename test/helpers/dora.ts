/**
 * Test fixtures for DoRA / EDoRA: adapter folders written key by key exactly as PEFT and the EDoRA
 * reference code save them (independently of loraforge's own writer), and a naive, loop-by-loop
 * merge in f64 following PEFT's definitions, to check the streaming implementation against.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeSafetensorsFile } from '../../src/io/safetensors.js';
import type { FloatDType } from '../../src/io/types.js';
import { createRng } from '../../src/linalg/random.js';

/** A row-major f64 matrix as nested arrays: easy to write loops over, nothing shared with src/. */
export type Mat = number[][];

/** Seeded N(0, scale²) entries, rounded to f32 so that files and the f64 reference hold the same values. */
export function randomMat(rows: number, cols: number, seed: number, scale = 1): Mat {
  const rng = createRng(seed);
  return Array.from({ length: rows }, () => Array.from({ length: cols }, () => Math.fround(rng.normal() * scale)));
}

export function flat(m: Mat): Float32Array {
  return Float32Array.from(m.flat());
}

export function unflat(data: ArrayLike<number>, rows: number, cols: number): Mat {
  return Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => data[i * cols + j]));
}

export function transposeMat(m: Mat): Mat {
  return m[0].map((_, j) => m.map((row) => row[j]));
}

export function matmul(a: Mat, b: Mat): Mat {
  const out: Mat = [];
  for (let i = 0; i < a.length; i++) {
    const row: number[] = [];
    for (let j = 0; j < b[0].length; j++) {
      let s = 0;
      for (let k = 0; k < b.length; k++) s += a[i][k] * b[k][j];
      row.push(s);
    }
    out.push(row);
  }
  return out;
}

/** Columns made orthonormal by Gram–Schmidt (f64), for planting singular values. */
export function orthonormalColumns(m: Mat): Mat {
  const done: number[][] = [];
  for (const c of transposeMat(m)) {
    const v = [...c];
    for (const q of done) {
      const d = v.reduce((s, x, i) => s + x * q[i], 0);
      for (let i = 0; i < v.length; i++) v[i] -= d * q[i];
    }
    const n = Math.hypot(...v);
    done.push(v.map((x) => x / n));
  }
  return transposeMat(done);
}

/** A module as PEFT stores it: linear A (r × in), B (out × r); embedding A (r × vocab), B (hidden × r). */
export interface PeftModuleFixture {
  /** module path without the `base_model.model.` prefix */
  name: string;
  kind: 'linear' | 'embedding';
  A: Mat;
  B: Mat;
  /** DoRA magnitude: out entries (linear) or hidden entries (embedding) */
  magnitude?: number[];
  /** EDoRA / LoRA-XS latent R (r × r) */
  latent?: Mat;
}

/**
 * The merged weight, straight from PEFT's definitions, with loops: ΔW = s·B·R·A (embedding:
 * ΔW = s·(B·A)ᵀ in PEFT's storage orientation), V = W + ΔW, DoRA W' = m/‖V‖ · V with the norm over
 * each row (linear) or each column (embedding), then W + w·(W' − W).
 */
export function naiveMerge(W: Mat, mod: PeftModuleFixture, scaling: number, weight = 1): Mat {
  const out = W.length;
  const inF = W[0].length;
  const r = mod.A.length;
  const R = mod.latent ?? Array.from({ length: r }, (_, i) => Array.from({ length: r }, (_, j) => (i === j ? 1 : 0)));
  const delta = (i: number, j: number): number => {
    let s = 0;
    for (let k = 0; k < r; k++) {
      for (let l = 0; l < r; l++) {
        // embedding: W is vocab × hidden, ΔW[i][j] = Σ B[j][k]·R[k][l]·A[l][i]
        s += mod.kind === 'embedding' ? mod.B[j][k] * R[k][l] * mod.A[l][i] : mod.B[i][k] * R[k][l] * mod.A[l][j];
      }
    }
    return scaling * s;
  };
  const V: Mat = [];
  for (let i = 0; i < out; i++) {
    V.push([]);
    for (let j = 0; j < inF; j++) V[i].push(W[i][j] + delta(i, j));
  }
  let merged = V;
  if (mod.magnitude) {
    const m = mod.magnitude;
    if (mod.kind === 'embedding') {
      const norms = Array.from({ length: inF }, (_, j) => Math.sqrt(V.reduce((s, row) => s + row[j] * row[j], 0)));
      merged = V.map((row) => row.map((v, j) => (m[j] / norms[j]) * v));
    } else {
      merged = V.map((row, i) => {
        const norm = Math.sqrt(row.reduce((s, v) => s + v * v, 0));
        return row.map((v) => (m[i] / norm) * v);
      });
    }
  }
  return W.map((row, i) => row.map((w, j) => w + weight * (merged[i][j] - w)));
}

/** ‖W + s·B·A‖ per row (rounded to f32, as stored): a DoRA with this magnitude is a plain LoRA. */
export function rowNormsAfterLora(W: Mat, mod: PeftModuleFixture, scaling: number): number[] {
  return naiveMerge(W, { ...mod, magnitude: undefined }, scaling).map((row) => Math.fround(Math.sqrt(row.reduce((s, v) => s + v * v, 0))));
}

export interface AdapterFixture {
  config: Record<string, unknown>;
  modules: PeftModuleFixture[];
  /** modules_to_save tensors by base tensor name */
  full?: Record<string, { shape: number[]; data: Float32Array }>;
  /** the latent key form; default the one PEFT's save produces for EDoRA (`<module>_lora_latent_mapping.weight`) */
  latentKey?: 'saved' | 'with-adapter-name';
  /** reconstr_config.json written into the adapter folder */
  reconstrConfig?: Record<string, unknown>;
  dtype?: FloatDType;
}

/** Writes an adapter folder with PEFT's key names and orientations. */
export async function writePeftFixture(dir: string, fx: AdapterFixture): Promise<void> {
  await mkdir(dir, { recursive: true });
  const dtype = fx.dtype ?? 'F32';
  const tensors: Array<{ name: string; shape: number[]; data: Float32Array; dtype: FloatDType }> = [];
  const add = (name: string, m: Mat) => tensors.push({ name, shape: [m.length, m[0].length], data: flat(m), dtype });
  for (const mod of fx.modules) {
    const p = `base_model.model.${mod.name}`;
    if (mod.kind === 'embedding') {
      add(`${p}.lora_embedding_A`, mod.A);
      add(`${p}.lora_embedding_B`, mod.B);
    } else {
      add(`${p}.lora_A.weight`, mod.A);
      add(`${p}.lora_B.weight`, mod.B);
    }
    if (mod.magnitude) tensors.push({ name: `${p}.lora_magnitude_vector`, shape: [mod.magnitude.length], data: Float32Array.from(mod.magnitude), dtype: 'F32' });
    if (mod.latent) add(fx.latentKey === 'with-adapter-name' ? `${p}.default_lora_latent_mapping.weight` : `${p}_lora_latent_mapping.weight`, mod.latent);
  }
  for (const [name, t] of Object.entries(fx.full ?? {})) tensors.push({ name: `base_model.model.${name}`, shape: t.shape, data: t.data, dtype });
  await writeSafetensorsFile(join(dir, 'adapter_model.safetensors'), tensors);
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', ...fx.config }));
  if (fx.reconstrConfig) await writeFile(join(dir, 'reconstr_config.json'), JSON.stringify(fx.reconstrConfig));
}

/** Largest |a − b| over two equally shaped matrices. */
export function maxAbsDiff(a: Mat, b: Mat): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) for (let j = 0; j < a[0].length; j++) m = Math.max(m, Math.abs(a[i][j] - b[i][j]));
  return m;
}

export function frob(m: Mat): number {
  return Math.sqrt(m.reduce((s, row) => s + row.reduce((t, v) => t + v * v, 0), 0));
}
