/**
 * The element-wise parts of a transformer block, in TypeScript: they are O(tokens × width) against
 * the GEMMs' O(tokens × width²), so they are not where the time goes. Sums are taken in f64.
 */

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

/** act(g)·u element-wise into g: SiLU (Llama, Qwen, Mistral) or tanh-approximated GELU (Gemma's GeGLU). */
export function gatedActivation(g: Float32Array, u: Float32Array, act: 'silu' | 'gelu_tanh'): Float32Array {
  if (act === 'silu') {
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
