/**
 * The one radix-select kernel behind every "keep the k largest |x|" rule (mergekit's TIES trim in
 * merge/sparsify.ts, PEFT's magnitude pruning in merge-adapters/prune.ts). It works on f32 bit
 * patterns with the sign cleared: for non-negative floats the bits order like the values, so two
 * counting passes (top 15 bits, then bottom 16) find the k-th largest in O(n) instead of a sort —
 * deltas of 7B-sized layers have 45M entries.
 */

/** The f32 bit patterns of `x` (a view over the same memory, not a copy). */
export function bitsOf(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

/**
 * The k-th largest |x| as an f32 bit pattern with the sign cleared, and how many entries lie
 * strictly above it (1 ≤ k ≤ n). Which of the entries equal to it are kept (k − above of them) is
 * the caller's tie rule; both callers take them in index order, as a stable sort would.
 */
export function kthLargestMagnitude(bits: Uint32Array, k: number): { threshold: number; above: number } {
  const high = new Uint32Array(1 << 15); // |x| has the sign bit clear: 15 high bits remain
  for (let i = 0; i < bits.length; i++) high[(bits[i] & 0x7fffffff) >>> 16]++;
  let above = 0;
  let h = high.length - 1;
  for (; h > 0 && above + high[h] < k; h--) above += high[h];
  const low = new Uint32Array(1 << 16);
  for (let i = 0; i < bits.length; i++) {
    const a = bits[i] & 0x7fffffff;
    if (a >>> 16 === h) low[a & 0xffff]++;
  }
  let l = low.length - 1;
  for (; l > 0 && above + low[l] < k; l--) above += low[l];
  return { threshold: (h << 16) | l, above };
}
