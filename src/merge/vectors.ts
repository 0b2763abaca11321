/**
 * How a tensor splits into the vectors that per-vector methods (nuslerp, model_stock's filter_wise,
 * arcee_fusion's softmax) treat one at a time, without copying: vector j's entries are
 * start(j), start(j) + step, … (length of them).
 */
export interface VectorLayout {
  count: number;
  length: number;
  step: number;
  start(j: number): number;
}

/** The whole tensor as one vector. */
export function wholeTensor(numel: number): VectorLayout {
  return { count: 1, length: numel, step: 1, start: () => 0 };
}

/** Vectors along the last dim (a 2-D weight's rows; a 1-D tensor is one vector), as torch's dim=-1. */
export function lastDimVectors(shape: readonly number[]): VectorLayout {
  const numel = shape.reduce((a, b) => a * b, 1);
  const length = shape.length > 0 ? shape[shape.length - 1] : 1;
  return { count: length > 0 ? numel / length : 0, length, step: 1, start: (j) => j * length };
}

/** Vectors along dim 0 (a 2-D weight's columns; a 1-D tensor is one vector), as torch's transpose(0, -1). */
export function firstDimVectors(shape: readonly number[]): VectorLayout {
  const numel = shape.reduce((a, b) => a * b, 1);
  const length = shape.length > 0 ? shape[0] : 1;
  const count = length > 0 ? numel / length : 0;
  return { count, length, step: count, start: (j) => j };
}

/**
 * The Gram matrix G[i·n + j] = (x_i − base)·(x_j − base) of whole tensors (base optional), in f64,
 * in one pass. Methods whose every intermediate vector is a linear combination of their inputs
 * (multislerp, karcher) work on it and touch the tensors once more to write the result.
 */
export function gramMatrix(xs: readonly Float32Array[], base?: Float32Array): Float64Array {
  const n = xs.length;
  const g = new Float64Array(n * n);
  const d = new Float64Array(n);
  const numel = xs[0].length;
  for (let k = 0; k < numel; k++) {
    const b = base ? base[k] : 0;
    for (let i = 0; i < n; i++) {
      const di = xs[i][k] - b;
      d[i] = di;
      for (let j = 0; j <= i; j++) g[i * n + j] += di * d[j];
    }
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) g[j * n + i] = g[i * n + j];
  return g;
}

/** Σ c_i·(x_i − base) (+ base), written into `out` (which may be one of xs or base). */
export function combineInto(out: Float32Array, xs: readonly Float32Array[], c: ArrayLike<number>, base?: Float32Array): Float32Array {
  const n = xs.length;
  for (let k = 0; k < out.length; k++) {
    const b = base ? base[k] : 0;
    let s = 0;
    for (let i = 0; i < n; i++) s += c[i] * (xs[i][k] - b);
    out[k] = b + s;
  }
  return out;
}
