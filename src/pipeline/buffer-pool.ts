/**
 * Recycled f32 working buffers. Touching fresh memory costs about as much as decoding into it, and
 * a merge needs the same few sizes over and over. `shared` buffers (SharedArrayBuffer) can be lent
 * to a worker thread without copying.
 */

/** Smallest buffer worth recycling; smaller ones are cheap to allocate. */
const MIN_POOLED_BYTES = 1 << 20;

export class BufferPool {
  private readonly free: ArrayBufferLike[] = [];

  constructor(private readonly shared = false) {}

  /** An array of n entries (contents undefined): the smallest free buffer that fits, or a new one. */
  acquire(n: number): Float32Array {
    const bytes = n * 4;
    if (bytes < MIN_POOLED_BYTES) return new Float32Array(n);
    let best = -1;
    this.free.forEach((b, i) => {
      if (b.byteLength >= bytes && (best < 0 || b.byteLength < this.free[best].byteLength)) best = i;
    });
    const buffer = best >= 0 ? this.free.splice(best, 1)[0] : this.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
    return new Float32Array(buffer, 0, n);
  }

  /** Returns an array's buffer to the pool; the caller must not use the array afterwards. */
  release(a: Float32Array): void {
    if (a.buffer.byteLength >= MIN_POOLED_BYTES) this.free.push(a.buffer);
  }
}
