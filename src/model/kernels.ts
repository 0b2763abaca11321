/**
 * The element-wise parts of a transformer block: O(tokens × width) against the GEMMs'
 * O(tokens × width²), but those that call exp or tanh per element (the gated activation, the
 * attention softmax) took 15 % of an evaluation in JS, so they run in WebAssembly SIMD where the
 * runtime has it (act-simd.ts) and in the JS loops here where not. Sums are taken in f64.
 */
import { actKernels } from './act-simd.js';


/**
 * RMSNorm of each row of x (rows × width) into out: w·x/√(mean(x²) + eps), or (1 + w)·… for
 * Gemma. `out` may be `x`.
 */
export function rmsNorm(x: Float32Array, rows: number, width: number, w: Float32Array, eps: number, plusOne: boolean, out: Float32Array): Float32Array {
  for (let r = 0; r < rows; r++) {
    const o = r * width;
    let sq = 0;
    for (let j = 0; j < width; j++) sq += x[o + j]! * x[o + j]!;
    // transformers computes the scale in f32: x * rsqrt(variance + eps)
    const scale = Math.fround(1 / Math.sqrt(Math.fround(Math.fround(sq / width) + eps)));
    if (plusOne) for (let j = 0; j < width; j++) out[o + j] = Math.fround(x[o + j]! * scale) * (1 + w[j]!);
    else for (let j = 0; j < width; j++) out[o + j] = w[j]! * Math.fround(x[o + j]! * scale);
  }
  return out;
}

/**
 * act(g)·u element-wise into g: SiLU (Llama, Qwen, Mistral) or tanh-approximated GELU (Gemma's
 * GeGLU). `simd: false` runs the JS loops, as where WebAssembly SIMD is missing (tests compare the two).
 */
export function gatedActivation(g: Float32Array, u: Float32Array, act: 'silu' | 'gelu_tanh', simd = true): Float32Array {
  const k = simd ? actKernels() : undefined;
  if (k) k.gated(g, u, act);
  else if (act === 'silu') {
    for (let i = 0; i < g.length; i++) {
      const x = g[i]!;
      g[i] = (x / (1 + Math.exp(-x))) * u[i]!;
    }
  } else {
    const c = Math.sqrt(2 / Math.PI);
    for (let i = 0; i < g.length; i++) {
      const x = g[i]!;
      g[i] = 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x * x * x))) * u[i]!;
    }
  }
  return g;
}

export interface SoftmaxMask {
  /** multiplies the scores */
  scale: number;
  /** soft-caps the scaled scores to cap·tanh(x/cap) (Gemma 2) */
  softcap?: number;
  /** a row sees this many positions, its own included (sliding-window layers) */
  window?: number;
}

/**
 * Causal softmax of `rows` rows of `len` attention scores, in place: row j sees positions
 * [lo, last] with last = `last` + j (the query's own position) and lo = last − window + 1 (0
 * without a window); those become the softmax of the scaled (and soft-capped) scores, the others 0.
 * `simd: false` runs the JS loops.
 */
export function causalSoftmax(s: Float32Array, rows: number, len: number, last: number, m: SoftmaxMask, simd = true): void {
  const { scale, softcap, window } = m;
  const k = simd ? actKernels() : undefined;
  if (k) return k.softmaxRows(s, rows, len, last, scale, softcap ?? 0, window ?? 0);
  for (let i = 0; i < rows; i++) {
    const row = i * len;
    const end = last + i;
    const lo = window ? Math.max(0, end - window + 1) : 0;
    let max = -Infinity;
    for (let t = lo; t <= end; t++) {
      let x = s[row + t]! * scale;
      if (softcap) x = softcap * Math.tanh(x / softcap);
      s[row + t] = x;
      if (x > max) max = x;
    }
    let sum = 0;
    for (let t = lo; t <= end; t++) {
      const e = Math.exp(s[row + t]! - max);
      s[row + t] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let t = 0; t < lo; t++) s[row + t] = 0;
    for (let t = lo; t <= end; t++) s[row + t]! *= inv;
    for (let t = end + 1; t < len; t++) s[row + t] = 0;
  }
}

/** cap·tanh(x/cap), in place (Gemma 2's soft-capping of attention scores and final logits). */
export function softcap(x: Float32Array, cap: number, from = 0, to = x.length): void {
  for (let i = from; i < to; i++) x[i] = cap * Math.tanh(x[i]! / cap);
}

/** a += b, element-wise. */
export function addInto(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i]! += b[i]!;
}

/** Adds `bias` (width) to every row of x. */
export function addBias(x: Float32Array, bias: Float32Array): void {
  const w = bias.length;
  for (let o = 0; o < x.length; o += w) for (let j = 0; j < w; j++) x[o + j]! += bias[j]!;
}
