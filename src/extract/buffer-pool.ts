/**
 * Reuse of the big f32 read buffers. Touching freshly allocated memory for the first time costs
 * about as much as decoding bf16 into it, and consecutive layers have the same shapes, so a
 * handful of free buffers kept by size saves most allocations. Only a few are kept, so memory
 * stays bounded by the largest tensors in flight.
 */
export class BufferPool {
  private readonly free: Float32Array[] = [];

  constructor(private readonly capacity = 4) {}

  /** A buffer of exactly `length` elements; its contents are whatever it held before. */
  acquire(length: number): Float32Array {
    const i = this.free.findIndex((b) => b.length === length);
    if (i >= 0) return this.free.splice(i, 1)[0];
    return new Float32Array(length);
  }

  /** Hands a buffer back; the oldest free one is dropped when the pool is full. */
  release(buffer: Float32Array): void {
    if (buffer.length === 0) return;
    this.free.push(buffer);
    if (this.free.length > this.capacity) this.free.shift();
  }
}
