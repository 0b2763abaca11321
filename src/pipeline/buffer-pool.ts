/**
 * Recycled f32 working buffers. Touching fresh memory costs about as much as decoding into it, and
 * a merge needs the same few sizes over and over. `shared` buffers (SharedArrayBuffer) can be lent
 * to a worker thread without copying.
 *
 * `limit` bounds what the pool holds, lent and free together: a buffer that must be allocated
 * first drops free ones (all too small, or one would have been taken) until it fits. Without it,
 * small tensors taking large free buffers make later large ones allocate anew, and the pool grows
 * with every layer towards (most arrays ever lent at once) × (largest size).
 */

/** Smallest buffer worth recycling; smaller ones are cheap to allocate. */
const MIN_POOLED_BYTES = 1 << 20;

export class BufferPool {
  private readonly free: ArrayBufferLike[] = [];
  private freeBytes = 0;
  private lent = 0;
  /** most bytes held, lent and free (pooled sizes only); a single request larger than what is left is still served */
  limit = Infinity;

  constructor(private readonly shared = false) {}

  /** Bytes of pooled-size buffers lent out and not yet released. */
  get lentBytes(): number {
    return this.lent;
  }

  /** Bytes of pooled-size buffers lent out and kept free. */
  get heldBytes(): number {
    return this.freeBytes + this.lent;
  }

  /** An array of n entries (contents undefined): the smallest free buffer that fits, or a new one. */
  acquire(n: number): Float32Array {
    const bytes = n * 4;
    if (bytes < MIN_POOLED_BYTES) return new Float32Array(n);
    let best = -1;
    this.free.forEach((b, i) => {
      if (b.byteLength >= bytes && (best < 0 || b.byteLength < this.free[best].byteLength)) best = i;
    });
    let buffer: ArrayBufferLike;
    if (best >= 0) {
      buffer = this.free.splice(best, 1)[0];
      this.freeBytes -= buffer.byteLength;
    } else {
      // largest first: the fewest buffers dropped
      this.free.sort((a, b) => a.byteLength - b.byteLength);
      while (this.free.length > 0 && this.heldBytes + bytes > this.limit) this.freeBytes -= (this.free.pop() as ArrayBufferLike).byteLength;
      buffer = this.shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes);
    }
    this.lent += buffer.byteLength;
    return new Float32Array(buffer, 0, n);
  }

  /** Returns an array's buffer to the pool; the caller must not use the array afterwards. */
  release(a: Float32Array): void {
    if (a.buffer.byteLength < MIN_POOLED_BYTES) return;
    this.lent -= a.buffer.byteLength;
    this.free.push(a.buffer);
    this.freeBytes += a.buffer.byteLength;
  }
}
