/**
 * Causal self-attention of one sequence with grouped KV heads, over a KV cache.
 *
 * The query heads that share a KV head are stacked into one matrix, so each KV head costs two
 * GEMMs on the backend (scores = Q·Kᵀ, out = P·V) whatever the number of query heads; softmax,
 * masking, scaling and soft-capping are done on the scores in between. The cache keeps each KV
 * head's keys and values contiguous (positions × head_dim), so its rows are the GEMM operands
 * as they are, without copies.
 */
import type { LinalgBackend } from '../linalg/backend.js';
import { matrix } from '../tensor/matrix.js';
import { causalSoftmax } from './kernels.js';
import { product } from './small-product.js';

export interface KvCache {
  /** per KV head: capacity × headDim keys (rotated) and values */
  k: Float32Array[];
  v: Float32Array[];
  /** positions held */
  length: number;
}

export function newKvCache(kvHeads: number, headDim: number, capacity: number): KvCache {
  const make = () => Array.from({ length: kvHeads }, () => new Float32Array(capacity * headDim));
  return { k: make(), v: make(), length: 0 };
}

/** Appends n positions of k and v (n × kvHeads·headDim each), growing the cache when full. */
export function appendKv(cache: KvCache, k: Float32Array, v: Float32Array, n: number, headDim: number): void {
  const kvHeads = cache.k.length;
  const need = (cache.length + n) * headDim;
  if (need > cache.k[0]!.length) {
    const grow = (a: Float32Array) => {
      const b = new Float32Array(Math.max(need, 2 * a.length));
      b.set(a.subarray(0, cache.length * headDim));
      return b;
    };
    cache.k = cache.k.map(grow);
    cache.v = cache.v.map(grow);
  }
  const width = kvHeads * headDim;
  for (let j = 0; j < kvHeads; j++) {
    const kj = cache.k[j]!;
    const vj = cache.v[j]!;
    for (let t = 0; t < n; t++) {
      const src = t * width + j * headDim;
      const dst = (cache.length + t) * headDim;
      kj.set(k.subarray(src, src + headDim), dst);
      vj.set(v.subarray(src, src + headDim), dst);
    }
  }
  cache.length += n;
}

export interface AttentionOptions {
  heads: number;
  headDim: number;
  /** multiplies the scores */
  scale: number;
  softcap?: number;
  /** a query sees this many positions, itself included (sliding-window layers) */
  window?: number;
}

/**
 * Attention of n new queries (q: n × heads·headDim, already rotated) at positions
 * [cache.length − n, cache.length) over every cached position, into `out` (n × heads·headDim).
 */
export async function attend(backend: LinalgBackend, q: Float32Array, n: number, cache: KvCache, o: AttentionOptions, out: Float32Array = new Float32Array(q.length)): Promise<Float32Array> {
  const { heads, headDim: hd, scale, softcap, window } = o;
  const kvHeads = cache.k.length;
  const rep = heads / kvHeads;
  const len = cache.length;
  const first = len - n;
  const width = heads * hd;
  const qg = new Float32Array(rep * n * hd);
  for (let j = 0; j < kvHeads; j++) {
    for (let r = 0; r < rep; r++) {
      const h = j * rep + r;
      for (let i = 0; i < n; i++) qg.set(q.subarray(i * width + h * hd, i * width + (h + 1) * hd), (r * n + i) * hd);
    }
    const K = matrix(len, hd, cache.k[j]!.subarray(0, len * hd));
    const V = matrix(len, hd, cache.v[j]!.subarray(0, len * hd));
    const s = (await product(backend, matrix(rep * n, hd, qg), K, { transB: true })).data;
    for (let r = 0; r < rep; r++) causalSoftmax(s.subarray(r * n * len, (r + 1) * n * len), n, len, first, { scale, softcap, window });
    const ctx = (await product(backend, matrix(rep * n, len, s), V)).data;
    for (let r = 0; r < rep; r++) {
      const h = j * rep + r;
      for (let i = 0; i < n; i++) out.set(ctx.subarray((r * n + i) * hd, (r * n + i + 1) * hd), i * width + h * hd);
    }
  }
  return out;
}
