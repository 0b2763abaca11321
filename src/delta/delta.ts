/**
 * Δ = W_B − W_A, formed in place in A's buffer in one pass that also checks every input value is
 * finite and gathers the norms the rest of the pipeline needs (so the big arrays are walked once).
 */
import { assertNoOverflow, firstNonFinite, nonFiniteError } from '../tensor/finite.js';

export interface DeltaStats {
  /** every element of B equals A's (then Δ is all zeros and nothing is extracted) */
  identical: boolean;
  /** ‖Δ‖²_F, summed in f64 */
  frobSq: number;
  /** ‖W_A‖²_F, summed in f64: the scale a difference is judged against */
  baseFrobSq: number;
}

/** Where each input tensor comes from, for error messages (`<file>: tensor "<name>"`). */
export interface DeltaSources {
  a: string;
  b: string;
}

/**
 * After a pass found a non-finite value: which input holds it. `b` is intact and `a` holds b − a,
 * so a NaN there with a finite b came from A's NaN, and ±Inf from A's ∓Inf.
 */
function blameNonFinite(delta: Float32Array, b: Float32Array, sources: DeltaSources): Error {
  const inB = firstNonFinite(b);
  if (inB >= 0) return nonFiniteError(sources.b, inB, b[inB]);
  const inDelta = firstNonFinite(delta);
  if (inDelta >= 0) return nonFiniteError(sources.a, inDelta, Number.isNaN(delta[inDelta]) ? NaN : -delta[inDelta]);
  return new Error(`${sources.a} or ${sources.b} holds a NaN or infinite value`);
}

/**
 * a ← b − a, elementwise. Throws, naming the file and tensor, when either input holds NaN or ±Inf
 * or a difference overflows f32.
 * The loop itself has no branch (the f64 sums turn non-finite exactly when some input or
 * difference is), which keeps it at memory speed; the culprit is looked for only on failure.
 * Four partial sums per norm break the chain of dependent additions: 2x faster in V8.
 */
export function subtractInPlace(a: Float32Array, b: Float32Array, sources: DeltaSources): DeltaStats {
  if (a.length !== b.length) throw new Error(`${sources.a} has ${a.length} elements but ${sources.b} has ${b.length}`);
  let d0 = 0, d1 = 0, d2 = 0, d3 = 0;
  let x0 = 0, x1 = 0, x2 = 0, x3 = 0;
  const whole = a.length - (a.length % 4);
  for (let i = 0; i < whole; i += 4) {
    const a0 = a[i], a1 = a[i + 1], a2 = a[i + 2], a3 = a[i + 3];
    const e0 = b[i] - a0, e1 = b[i + 1] - a1, e2 = b[i + 2] - a2, e3 = b[i + 3] - a3;
    a[i] = e0;
    a[i + 1] = e1;
    a[i + 2] = e2;
    a[i + 3] = e3;
    d0 += e0 * e0;
    d1 += e1 * e1;
    d2 += e2 * e2;
    d3 += e3 * e3;
    x0 += a0 * a0;
    x1 += a1 * a1;
    x2 += a2 * a2;
    x3 += a3 * a3;
  }
  for (let i = whole; i < a.length; i++) {
    const x = a[i];
    const e = b[i] - x;
    a[i] = e;
    d0 += e * e;
    x0 += x * x;
  }
  const frobSq = d0 + d1 + d2 + d3;
  const baseFrobSq = x0 + x1 + x2 + x3;
  if (!Number.isFinite(frobSq) || !Number.isFinite(baseFrobSq)) throw blameNonFinite(a, b, sources);
  // the sums are of the exact f64 differences, finite even where the f32 store overflowed
  assertNoOverflow(a, frobSq, sources.b);
  // a sum of squares of f32 values in f64 cannot underflow to 0 unless every value is 0
  return { identical: frobSq === 0, frobSq, baseFrobSq };
}
