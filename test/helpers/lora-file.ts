/**
 * Synthetic image-model LoRA files (SDXL- and Flux-shaped subsets with real module names, small
 * widths), written key by key as kohya's sd-scripts and diffusers save them, independently of
 * loraforge's writer: kohya's names are made here from the module paths by kohya's own rule
 * (prefix + "." + path, then "." → "_").
 */
import { writeSafetensorsFile } from '../../src/io/safetensors.js';
import type { FloatDType } from '../../src/io/types.js';
import { createRng } from '../../src/linalg/random.js';

export interface PlantedModule {
  /** kohya: the stem (lora_unet_…); diffusers: unet.… / text_encoder.… */
  stem: string;
  out: number;
  in: number;
  rank: number;
  /** conv kernel [kh, kw]; absent: linear */
  kernel?: [number, number];
  /** absent: no alpha tensor (alpha = rank) */
  alpha?: number;
}

/** kohya's name for a module: prefix + "." + path, every "." then "_" (networks/lora.py). */
export function kohyaName(prefix: string, path: string): string {
  return `${prefix}.${path}`.replaceAll('.', '_');
}

/** SDXL (sgm names, as kohya's SDXL LoRAs): a linear attention projection, a 3×3 conv, both text encoders. */
export function sdxlModules(): PlantedModule[] {
  return [
    { stem: kohyaName('lora_unet', 'input_blocks.4.1.transformer_blocks.0.attn1.to_q'), out: 12, in: 12, rank: 4, alpha: 2 },
    { stem: kohyaName('lora_unet', 'input_blocks.4.1.proj_in'), out: 12, in: 12, rank: 4, alpha: 2 },
    { stem: kohyaName('lora_unet', 'input_blocks.1.0.in_layers.2'), out: 6, in: 5, rank: 3, kernel: [3, 3], alpha: 1.5 },
    { stem: kohyaName('lora_te1', 'text_model.encoder.layers.0.self_attn.q_proj'), out: 8, in: 8, rank: 4, alpha: 4 },
    { stem: kohyaName('lora_te2', 'text_model.encoder.layers.0.mlp.fc1'), out: 16, in: 8, rank: 4 },
  ];
}

/** Flux (BFL names, as kohya's lora_flux): fused qkv, a single block's linear1, CLIP-L. */
export function fluxModules(): PlantedModule[] {
  return [
    { stem: kohyaName('lora_unet', 'double_blocks.0.img_attn.qkv'), out: 18, in: 6, rank: 2, alpha: 1 },
    { stem: kohyaName('lora_unet', 'single_blocks.0.linear1'), out: 24, in: 6, rank: 2, alpha: 1 },
    { stem: kohyaName('lora_te1', 'text_model.encoder.layers.0.self_attn.k_proj'), out: 8, in: 8, rank: 2, alpha: 1 },
  ];
}

/** SD 1.5 in diffusers' layout: PEFT keys, a 3×3 resnet conv, the text encoder. */
export function diffusersModules(): PlantedModule[] {
  return [
    { stem: 'unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q', out: 10, in: 10, rank: 3 },
    { stem: 'unet.down_blocks.0.resnets.0.conv1', out: 6, in: 4, rank: 2, kernel: [3, 3] },
    { stem: 'text_encoder.text_model.encoder.layers.0.self_attn.q_proj', out: 8, in: 8, rank: 2 },
  ];
}

export interface PlantedFactors {
  /** r × (in·kh·kw), row-major as the down tensor's bytes */
  down: Float32Array;
  /** out × r */
  up: Float32Array;
}

export function plantFactors(m: PlantedModule, seed: number): PlantedFactors {
  const rng = createRng(seed);
  const k = m.kernel ? m.kernel[0] * m.kernel[1] : 1;
  const down = Float32Array.from({ length: m.rank * m.in * k }, () => rng.normal() * 0.5);
  const up = Float32Array.from({ length: m.out * m.rank }, () => rng.normal() * 0.5);
  return { down, up };
}

/** Writes the modules in kohya's or diffusers' keys; returns each module's factors by stem. */
export async function writeLoraFile(
  path: string,
  format: 'kohya' | 'diffusers',
  modules: PlantedModule[],
  seed: number,
  opts: { dtype?: FloatDType; metadata?: Record<string, string> } = {},
): Promise<Map<string, PlantedFactors>> {
  const factors = new Map<string, PlantedFactors>();
  modules.forEach((m, i) => factors.set(m.stem, plantFactors(m, seed * 1000 + i)));
  await writeLoraFactors(path, format, modules.map((m) => ({ module: m, factors: factors.get(m.stem)! })), opts);
  return factors;
}

/** Writes given factors key by key in kohya's or diffusers' layout (down/up, and alpha when the module has one). */
export async function writeLoraFactors(
  path: string,
  format: 'kohya' | 'diffusers',
  entries: ReadonlyArray<{ module: PlantedModule; factors: PlantedFactors }>,
  opts: { dtype?: FloatDType; metadata?: Record<string, string> } = {},
): Promise<void> {
  const dtype = opts.dtype ?? 'F32';
  const tensors: Array<{ name: string; shape: number[]; data: Float32Array; dtype: FloatDType }> = [];
  for (const { module: m, factors: f } of entries) {
    const downShape = m.kernel ? [m.rank, m.in, ...m.kernel] : [m.rank, m.in];
    const upShape = m.kernel ? [m.out, m.rank, 1, 1] : [m.out, m.rank];
    const [down, up] = format === 'kohya' ? ['lora_down.weight', 'lora_up.weight'] : ['lora_A.weight', 'lora_B.weight'];
    tensors.push({ name: `${m.stem}.${down}`, shape: downShape, data: f.down, dtype });
    tensors.push({ name: `${m.stem}.${up}`, shape: upShape, data: f.up, dtype });
    if (m.alpha !== undefined) tensors.push({ name: `${m.stem}.alpha`, shape: [], data: Float32Array.of(m.alpha), dtype });
  }
  await writeSafetensorsFile(path, tensors, opts.metadata);
}

/** ΔW = s·up·down in f64, out × (in·kh·kw). */
export function deltaOf(m: PlantedModule, f: PlantedFactors, scale: number): Float64Array {
  const cols = f.down.length / m.rank;
  const d = new Float64Array(m.out * cols);
  for (let o = 0; o < m.out; o++) {
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let r = 0; r < m.rank; r++) s += f.up[o * m.rank + r] * f.down[r * cols + j];
      d[o * cols + j] = scale * s;
    }
  }
  return d;
}

/**
 * Singular values (descending) of a row-major rows × cols f64 matrix by one-sided Jacobi on its
 * columns, in f64: an SVD independent of loraforge's linalg, for small test matrices.
 */
export function singularValuesOf(d: ArrayLike<number>, rows: number, cols: number): number[] {
  return jacobiSvd(d, rows, cols).map((p) => p.sigma);
}

/**
 * The best rank-k approximation of a row-major rows × cols matrix (f64, same layout) and its k
 * largest singular values, by the same Jacobi SVD.
 */
export function truncationOf(d: ArrayLike<number>, rows: number, cols: number, k: number): { S: number[]; product: Float64Array } {
  const wide = rows < cols;
  const pairs = jacobiSvd(d, rows, cols).slice(0, k);
  const product = new Float64Array(rows * cols);
  // each pair is (σ·u, v) of the matrix Jacobi worked on: M or, when wide, Mᵀ
  for (const { su, v } of pairs) {
    for (let i = 0; i < su.length; i++) {
      for (let j = 0; j < v.length; j++) product[wide ? j * cols + i : i * cols + j] += su[i] * v[j];
    }
  }
  return { S: pairs.map((p) => p.sigma), product };
}

/**
 * One-sided Jacobi on the columns of M (of Mᵀ when rows < cols), rotations accumulated in V:
 * converged, M·V has orthogonal columns σ_j·u_j. Returns (σ_j, σ_j·u_j, v_j), σ descending.
 */
function jacobiSvd(d: ArrayLike<number>, rows: number, cols: number): Array<{ sigma: number; su: Float64Array; v: Float64Array }> {
  const [n, m] = rows >= cols ? [cols, rows] : [rows, cols];
  const col = Array.from({ length: n }, (_, j) => Float64Array.from({ length: m }, (_, i) => (rows >= cols ? d[i * cols + j] : d[j * cols + i])));
  const v = Array.from({ length: n }, (_, j) => Float64Array.from({ length: n }, (_, i) => (i === j ? 1 : 0)));
  const rotate = (x: Float64Array, y: Float64Array, cs: number, sn: number) => {
    for (let i = 0; i < x.length; i++) {
      const a = x[i];
      const b = y[i];
      x[i] = cs * a - sn * b;
      y[i] = sn * a + cs * b;
    }
  };
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        let a = 0;
        let b = 0;
        let c = 0;
        for (let i = 0; i < m; i++) {
          a += col[p][i] ** 2;
          b += col[q][i] ** 2;
          c += col[p][i] * col[q][i];
        }
        if (Math.abs(c) <= 1e-15 * Math.sqrt(a * b) || c === 0) continue;
        off = Math.max(off, Math.abs(c) / Math.sqrt(a * b));
        const zeta = (b - a) / (2 * c);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const cs = 1 / Math.sqrt(1 + t * t);
        const sn = cs * t;
        rotate(col[p], col[q], cs, sn);
        rotate(v[p], v[q], cs, sn);
      }
    }
    if (off < 1e-14) break;
  }
  return col
    .map((su, j) => ({ sigma: Math.sqrt(su.reduce((s, x) => s + x * x, 0)), su, v: v[j] }))
    .sort((x, y) => y.sigma - x.sigma);
}
