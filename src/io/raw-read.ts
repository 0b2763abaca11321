/**
 * Blocking reads of located tensors, for worker threads: a worker that only reads and decodes has
 * nothing else to do while it waits, and a blocking read of a whole tensor is one system call
 * instead of a chain of callbacks that a busy event loop would delay.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { bf16Kernels, type Bf16Kernels } from '../tensor/bf16-simd.js';
import { decodeIntoF32, dtypeByteSize, isFloatDType } from '../tensor/dtype.js';
import { allFinite, firstNonFiniteError } from '../tensor/finite.js';
import { SUPPORTED_HINT } from './safetensors.js';
import type { TensorLocation } from './types.js';

/** Descriptors kept open: a few shards per model, so a 100-shard checkpoint does not hold 100. */
const OPEN_FILES = 8;

/** Keeps the descriptors of the files it read from last, until close(). */
export class RawTensorReader {
  /** by path, least recently used first */
  private readonly fds = new Map<string, number>();
  private readonly kernels: Bf16Kernels | undefined;
  /** F16 bytes being decoded (a whole tensor or a part), for the JS decoder */
  private scratch = new Uint8Array(0);

  /** `simd: false`: decode in JS, as where WebAssembly SIMD is missing (tests compare the two) */
  constructor(opts: { simd?: boolean } = {}) {
    this.kernels = opts.simd === false ? undefined : bf16Kernels();
  }

  /**
   * Bytes [start, start + into.byteLength) of the tensor exactly as stored, into `into`; returns it.
   * Reading a tensor in slices lets callers put the bytes where they are processed next.
   */
  readBytes(loc: TensorLocation, into: Uint8Array, start = 0): Uint8Array {
    const length = into.byteLength;
    if (start < 0 || start + length > loc.bytes) throw new Error(`${where(loc)}: bytes [${start}, ${start + length}) lie outside its ${loc.bytes}`);
    const fd = this.fd(loc.path);
    let done = 0;
    while (done < length) {
      const want = Math.min(length - done, 1 << 30); // a single read(2) returns at most ~2 GiB
      const got = readSync(fd, into, done, want, loc.offset + start + done);
      if (got === 0) throw new Error(`${where(loc)}: the file ended ${loc.bytes - start - done} bytes early (truncated, or changed while reading)`);
      done += got;
    }
    return into;
  }

  /** The tensor decoded to f32 into `out` (exactly its element count); NaN and ±Inf pass through. */
  readF32(loc: TensorLocation, out: Float32Array): Float32Array {
    this.decode(loc, out, 0, true);
    return out;
  }

  /**
   * Like readF32, refusing NaN and ±Inf with an error naming the file, tensor and element. The
   * decoders test the stored bits as they go, so the check costs no second pass (F32 aside).
   */
  readFiniteF32(loc: TensorLocation, out: Float32Array): Float32Array {
    if (!this.decode(loc, out, 0, true)) throw firstNonFiniteError(out, where(loc), { file: loc.path, tensor: loc.name });
    return out;
  }

  /**
   * Elements [start, start + out.length) of the tensor decoded into `out` (a run of rows, one
   * expert); returns whether every value is finite, for the caller to name the part in its error.
   */
  readPartF32(loc: TensorLocation, out: Float32Array, start: number): boolean {
    return this.decode(loc, out, start);
  }

  /**
   * Decodes elements [start, start + out.length) into `out` (`whole`: the tensor, exactly);
   * returns whether every value is finite.
   */
  private decode(loc: TensorLocation, out: Float32Array, start: number, whole = false): boolean {
    if (!isFloatDType(loc.dtype)) throw new Error(`${where(loc)} has dtype ${loc.dtype}; ${SUPPORTED_HINT}`);
    const size = dtypeByteSize(loc.dtype)!;
    const n = out.length;
    if (whole && n !== loc.bytes / size) throw new Error(`${where(loc)}: needs an array of ${loc.bytes / size} elements, got ${n}`);
    if (loc.dtype === 'F32') {
      this.readBytes(loc, new Uint8Array(out.buffer, out.byteOffset, out.byteLength), 4 * start);
      return allFinite(out);
    }
    const k = loc.dtype === 'BF16' ? this.kernels : undefined;
    if (k) {
      let finite = true;
      for (let i = 0; i < n; i += k.chunk) {
        const count = Math.min(k.chunk, n - i);
        this.readBytes(loc, k.bytesA.subarray(0, 2 * count), 2 * (start + i));
        finite = k.decode(count) && finite;
        out.set(k.floats.subarray(0, count), i);
      }
      return finite;
    }
    if (this.scratch.byteLength < n * size) this.scratch = new Uint8Array(n * size);
    return decodeIntoF32(this.readBytes(loc, this.scratch.subarray(0, n * size), size * start), loc.dtype, out);
  }

  /** Δ = B − A of two BF16 tensors into `out`, with its norms, through the SIMD kernels (undefined without them). */
  deltaBf16(a: TensorLocation, b: TensorLocation, out: Float32Array): { deltaSq: number; baseSq: number } | undefined {
    const k = this.kernels;
    if (!k || a.dtype !== 'BF16' || b.dtype !== 'BF16') return undefined;
    const n = out.length;
    if (a.bytes !== 2 * n || b.bytes !== 2 * n) throw new Error(`${where(a)} and ${where(b)} must both hold ${n} bf16 elements`);
    k.reset();
    for (let i = 0; i < n; i += k.chunk) {
      const count = Math.min(k.chunk, n - i);
      this.readBytes(a, k.bytesA.subarray(0, 2 * count), 2 * i);
      this.readBytes(b, k.bytesB.subarray(0, 2 * count), 2 * i);
      k.delta(count);
      out.set(k.floats.subarray(0, count), i);
    }
    return k.sums();
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }

  private fd(path: string): number {
    let fd = this.fds.get(path);
    if (fd !== undefined) this.fds.delete(path);
    else {
      fd = openSync(path, 'r');
      if (this.fds.size >= OPEN_FILES) {
        const [oldest, oldFd] = this.fds.entries().next().value as [string, number];
        this.fds.delete(oldest);
        closeSync(oldFd);
      }
    }
    this.fds.set(path, fd);
    return fd;
  }
}

/** How errors name a tensor: `<file>: tensor "<name>"`, as everywhere else. */
export function where(loc: TensorLocation): string {
  return `${loc.path}: tensor "${loc.name}"`;
}
