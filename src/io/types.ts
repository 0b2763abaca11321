/** Storage dtypes we convert to and from f32. */
export type FloatDType = 'F32' | 'F16' | 'BF16';

export interface TensorInfo {
  name: string;
  /** dtype as spelled in the file (safetensors spelling: F32, F16, BF16, I8, F8_E4M3, ...) */
  dtype: string;
  /** PyTorch order (row-major, outermost first). */
  shape: number[];
  bytes: number;
}

/**
 * Where a tensor's bytes are stored: enough for another thread to read and decode it on its own
 * (see io/raw-read.ts), so the thread that computes never waits on I/O or decoding.
 */
export interface TensorLocation extends TensorInfo {
  /** the file, absolute */
  path: string;
  /** byte offset of the tensor's first byte in `path` */
  offset: number;
}

/** Anything that lists tensors and reads one at a time as f32 (a file, a sharded checkpoint, an adapter). */
export interface TensorSource {
  /** Where the tensors come from, for error messages. */
  readonly path: string;
  list(): TensorInfo[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  read(name: string): Promise<Float32Array>;
  close(): Promise<void>;
}

/** Accepts tensors one at a time; nothing is visible at the destination until `finish()` succeeds. */
export interface TensorSink {
  add(name: string, shape: number[], data: Float32Array, dtype?: FloatDType): Promise<void>;
  finish(): Promise<void>;
  /** Removes every temporary file; the destination is left as it was. */
  abort(): Promise<void>;
}
