/**
 * Reading one tensor pair and forming Δ = B − A from it: the pure I/O and decoding every pair
 * command shares, and its finite-value guard (NaN/±Inf in either input, a difference that
 * overflows f32) — the one check pairs get. It runs on a worker thread (see pair-loader.ts) so that it overlaps the
 * GEMMs of the previous pair, or inline where no worker can start; same code, same result.
 */
import { RawTensorReader, where } from '../io/raw-read.js';
import type { TensorLocation } from '../io/types.js';
import { BufferPool } from '../pipeline/buffer-pool.js';
import { subtractInPlace, type DeltaStats } from './delta.js';

export interface PairRequest {
  /** absent when only B is needed (full embeddings with a different vocabulary) */
  a?: TensorLocation;
  b: TensorLocation;
  /** B itself is needed afterwards (it is saved whole) */
  keepB: boolean;
}

export interface LoadedPair {
  /** Δ = B − A (absent without A) */
  delta?: Float32Array;
  stats?: DeltaStats;
  /** B as f32: when asked for, or when there is no A */
  b?: Float32Array;
}

function elements(loc: TensorLocation): number {
  return loc.shape.reduce((x, y) => x * y, 1);
}

/** Every array of a loaded pair, for handing its buffers back or across threads. */
export function arraysOf(pair: LoadedPair): Float32Array[] {
  return [pair.delta, pair.b].filter((x): x is Float32Array => x !== undefined);
}

export class PairReader {
  private readonly reader = new RawTensorReader();

  constructor(readonly pool: BufferPool) {}

  load(req: PairRequest): LoadedPair {
    const fast = req.a && !req.keepB ? this.deltaBf16(req.a, req.b) : undefined;
    if (fast) return fast;
    // without A, nothing else looks at B's values: the read refuses NaN and ±Inf itself
    const b = this.readF32(req.b, !req.a);
    if (!req.a) return { b };
    let delta: Float32Array | undefined;
    try {
      delta = this.readF32(req.a, false);
      const stats = subtractInPlace(delta, b, { a: where(req.a), b: where(req.b) });
      if (req.keepB) return { delta, stats, b };
      this.pool.release(b);
      return { delta, stats };
    } catch (err) {
      this.pool.release(b);
      if (delta) this.pool.release(delta);
      throw err;
    }
  }

  close(): void {
    this.reader.close();
  }

  /**
   * Δ of two BF16 tensors in one SIMD pass, without decoding B into its own array. Undefined when
   * that path does not apply, and when an input holds NaN or ±Inf: then the plain path finds it.
   */
  private deltaBf16(a: TensorLocation, b: TensorLocation): LoadedPair | undefined {
    const delta = this.pool.acquire(elements(b));
    try {
      const sums = this.reader.deltaBf16(a, b, delta);
      if (sums && Number.isFinite(sums.deltaSq) && Number.isFinite(sums.baseSq)) {
        return { delta, stats: { identical: sums.deltaSq === 0, frobSq: sums.deltaSq, baseFrobSq: sums.baseSq } };
      }
    } catch (err) {
      this.pool.release(delta);
      throw err;
    }
    this.pool.release(delta);
    return undefined;
  }

  private readF32(loc: TensorLocation, finite: boolean): Float32Array {
    const out = this.pool.acquire(elements(loc));
    try {
      return finite ? this.reader.readFiniteF32(loc, out) : this.reader.readF32(loc, out);
    } catch (err) {
      this.pool.release(out);
      throw err;
    }
  }
}
