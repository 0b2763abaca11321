/**
 * GGUF (llama.cpp's file format) writer and reader.
 *
 * Layout (little-endian): magic "GGUF", u32 version, u64 tensor count, u64 KV count, the KVs
 * (u64-length key, u32 value type, value), the tensor infos (name, u32 n_dims, u64 dims in ggml
 * order = PyTorch order reversed, u32 ggml type, u64 offset into the data section), zero padding
 * up to `general.alignment` (default 32), then the tensor data, each tensor starting at an aligned
 * offset and followed by zero padding to the next multiple of the alignment (as gguf-py writes it;
 * llama.cpp requires the offsets to be exactly the running sum of the padded sizes).
 */
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { decodeToF32, encodeFromF32 } from '../tensor/dtype.js';
import { assertNotAnInputSoFar } from './atomic.js';
import { newTemporary, releaseTemporary, sweepStaleTemporaries } from './temporaries.js';
import type { FloatDType, TensorInfo, TensorSink, TensorSource } from './types.js';
import { noteInput } from './inputs.js';

export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
const GGUF_MAGIC = Buffer.from('GGUF', 'latin1');

/** llama.cpp keeps tensor names in a char[GGML_MAX_NAME = 64] including the terminating NUL. */
export const GGML_MAX_NAME_BYTES = 63;
/** ggml tensors have at most 4 dimensions (GGML_MAX_DIMS). */
export const GGML_MAX_DIMS = 4;

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** ggml tensor types (values as in ggml.h / gguf-py). We write and decode only F32, F16 and BF16. */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
}

const QK_K = 256;
/** [elements per block, bytes per block] for each type, from gguf-py's GGML_QUANT_SIZES. */
const GGML_BLOCK_LAYOUT: ReadonlyMap<GgmlType, readonly [number, number]> = new Map([
  [GgmlType.F32, [1, 4]],
  [GgmlType.F16, [1, 2]],
  [GgmlType.Q4_0, [32, 2 + 16]],
  [GgmlType.Q4_1, [32, 2 + 2 + 16]],
  [GgmlType.Q5_0, [32, 2 + 4 + 16]],
  [GgmlType.Q5_1, [32, 2 + 2 + 4 + 16]],
  [GgmlType.Q8_0, [32, 2 + 32]],
  [GgmlType.Q8_1, [32, 4 + 4 + 32]],
  [GgmlType.Q2_K, [QK_K, 2 + 2 + QK_K / 16 + QK_K / 4]],
  [GgmlType.Q3_K, [QK_K, 2 + QK_K / 4 + QK_K / 8 + 12]],
  [GgmlType.Q4_K, [QK_K, 2 + 2 + QK_K / 2 + 12]],
  [GgmlType.Q5_K, [QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12]],
  [GgmlType.Q6_K, [QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16]],
  [GgmlType.Q8_K, [QK_K, 4 + QK_K + QK_K / 8]],
  [GgmlType.IQ2_XXS, [QK_K, 2 + QK_K / 4]],
  [GgmlType.IQ2_XS, [QK_K, 2 + QK_K / 4 + QK_K / 32]],
  [GgmlType.IQ3_XXS, [QK_K, 2 + QK_K / 4 + QK_K / 8]],
  [GgmlType.IQ1_S, [QK_K, 2 + QK_K / 8 + QK_K / 16]],
  [GgmlType.IQ4_NL, [32, 2 + 16]],
  [GgmlType.IQ3_S, [QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4]],
  [GgmlType.IQ2_S, [QK_K, 2 + QK_K / 4 + QK_K / 16]],
  [GgmlType.IQ4_XS, [QK_K, 2 + 2 + QK_K / 2 + QK_K / 64]],
  [GgmlType.I8, [1, 1]],
  [GgmlType.I16, [1, 2]],
  [GgmlType.I32, [1, 4]],
  [GgmlType.I64, [1, 8]],
  [GgmlType.F64, [1, 8]],
  [GgmlType.IQ1_M, [QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32]],
  [GgmlType.BF16, [1, 2]],
  [GgmlType.TQ1_0, [QK_K, 2 + 4 * 13]],
  [GgmlType.TQ2_0, [QK_K, 2 + 64]],
  [GgmlType.MXFP4, [32, 1 + 16]],
]);

const FLOAT_DTYPE_TO_GGML: Record<FloatDType, GgmlType> = { F32: GgmlType.F32, F16: GgmlType.F16, BF16: GgmlType.BF16 };

/** The spelling used in TensorInfo.dtype: 'F32', 'F16', 'BF16', 'Q8_0', ... */
export function ggmlTypeName(type: GgmlType): string {
  return GgmlType[type] ?? `GGML_TYPE_${type}`;
}

/** Element types an array may hold. llama.cpp cannot read nested arrays, so neither writes nor reads them. */
export type GgufElemType = Exclude<GgufValueType, GgufValueType.ARRAY>;
export type GgufScalar = number | bigint | boolean | string;

/**
 * A typed metadata value. 64-bit integers are `bigint`, or `number` where that is exact
 * (the reader returns `number` whenever the value is a safe integer, `bigint` otherwise).
 */
export type GgufKv =
  | { type: GgufValueType.STRING; value: string }
  | { type: GgufValueType.BOOL; value: boolean }
  | {
      type:
        | GgufValueType.UINT8
        | GgufValueType.INT8
        | GgufValueType.UINT16
        | GgufValueType.INT16
        | GgufValueType.UINT32
        | GgufValueType.INT32
        | GgufValueType.FLOAT32
        | GgufValueType.FLOAT64;
      value: number;
    }
  | { type: GgufValueType.UINT64 | GgufValueType.INT64; value: number | bigint }
  | { type: GgufValueType.ARRAY; elemType: GgufElemType; value: ArrayLike<GgufScalar> };

export const kvString = (value: string): GgufKv => ({ type: GgufValueType.STRING, value });
export const kvBool = (value: boolean): GgufKv => ({ type: GgufValueType.BOOL, value });
export const kvU8 = (value: number): GgufKv => ({ type: GgufValueType.UINT8, value });
export const kvI8 = (value: number): GgufKv => ({ type: GgufValueType.INT8, value });
export const kvU16 = (value: number): GgufKv => ({ type: GgufValueType.UINT16, value });
export const kvI16 = (value: number): GgufKv => ({ type: GgufValueType.INT16, value });
export const kvU32 = (value: number): GgufKv => ({ type: GgufValueType.UINT32, value });
export const kvI32 = (value: number): GgufKv => ({ type: GgufValueType.INT32, value });
export const kvF32 = (value: number): GgufKv => ({ type: GgufValueType.FLOAT32, value });
export const kvF64 = (value: number): GgufKv => ({ type: GgufValueType.FLOAT64, value });
export const kvU64 = (value: number | bigint): GgufKv => ({ type: GgufValueType.UINT64, value });
export const kvI64 = (value: number | bigint): GgufKv => ({ type: GgufValueType.INT64, value });
export const kvArray = (elemType: GgufElemType, value: ArrayLike<GgufScalar>): GgufKv => ({
  type: GgufValueType.ARRAY,
  elemType,
  value,
});

/** Bytes of each fixed-size value type (strings and arrays are variable). */
const FIXED_SIZE: Partial<Record<GgufValueType, number>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

const INT_RANGE: Partial<Record<GgufValueType, readonly [bigint, bigint]>> = {
  [GgufValueType.UINT8]: [0n, 0xffn],
  [GgufValueType.INT8]: [-0x80n, 0x7fn],
  [GgufValueType.UINT16]: [0n, 0xffffn],
  [GgufValueType.INT16]: [-0x8000n, 0x7fffn],
  [GgufValueType.UINT32]: [0n, 0xffffffffn],
  [GgufValueType.INT32]: [-0x80000000n, 0x7fffffffn],
  [GgufValueType.UINT64]: [0n, 0xffffffffffffffffn],
  [GgufValueType.INT64]: [-0x8000000000000000n, 0x7fffffffffffffffn],
};

function padTo(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0 && n <= 0x80000000;
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/** Growable little-endian byte buffer: the header of a GGUF file is built in memory in one pass. */
class ByteWriter {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const grown = Buffer.alloc(size);
    this.buf.copy(grown, 0, 0, this.length);
    this.buf = grown;
  }

  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  zeros(n: number): void {
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }
  u64(v: number | bigint): void {
    this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  /** u64 byte length + UTF-8 bytes, encoded straight into the buffer (no per-string allocation). */
  string(s: string): void {
    this.reserve(8 + s.length * 3);
    const written = this.buf.write(s, this.length + 8, 'utf8');
    this.buf.writeBigUInt64LE(BigInt(written), this.length);
    this.length += 8 + written;
  }
  scalar(type: GgufElemType, v: GgufScalar, where: () => string): void {
    if (type === GgufValueType.STRING) {
      if (typeof v !== 'string') throw new Error(`${where()}: expected a string, got ${typeof v}`);
      this.string(v);
      return;
    }
    if (type === GgufValueType.BOOL) {
      if (typeof v !== 'boolean') throw new Error(`${where()}: expected a boolean, got ${typeof v}`);
      this.reserve(1);
      this.buf[this.length++] = v ? 1 : 0;
      return;
    }
    if (type === GgufValueType.FLOAT32 || type === GgufValueType.FLOAT64) {
      if (typeof v !== 'number') throw new Error(`${where()}: expected a number, got ${typeof v}`);
      this.reserve(8);
      if (type === GgufValueType.FLOAT32) this.buf.writeFloatLE(v, this.length);
      else this.buf.writeDoubleLE(v, this.length);
      this.length += FIXED_SIZE[type]!;
      return;
    }
    const range = INT_RANGE[type];
    if (range === undefined) throw new Error(`${where()}: unknown GGUF value type ${type}`);
    if (typeof v === 'number' ? !Number.isSafeInteger(v) : typeof v !== 'bigint') {
      throw new Error(`${where()}: expected an integer for ${GgufValueType[type]}, got ${String(v)}`);
    }
    const big = BigInt(v);
    if (big < range[0] || big > range[1]) {
      throw new Error(`${where()}: ${String(v)} does not fit in ${GgufValueType[type]} [${range[0]}, ${range[1]}]`);
    }
    this.reserve(8);
    const n = Number(v);
    switch (type) {
      case GgufValueType.UINT8: this.buf.writeUInt8(n, this.length); break;
      case GgufValueType.INT8: this.buf.writeInt8(n, this.length); break;
      case GgufValueType.UINT16: this.buf.writeUInt16LE(n, this.length); break;
      case GgufValueType.INT16: this.buf.writeInt16LE(n, this.length); break;
      case GgufValueType.UINT32: this.buf.writeUInt32LE(n, this.length); break;
      case GgufValueType.INT32: this.buf.writeInt32LE(n, this.length); break;
      case GgufValueType.UINT64: this.buf.writeBigUInt64LE(big, this.length); break;
      case GgufValueType.INT64: this.buf.writeBigInt64LE(big, this.length); break;
    }
    this.length += FIXED_SIZE[type]!;
  }
  result(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function encodeKvs(path: string, kvs: ReadonlyArray<readonly [string, GgufKv]>): Buffer {
  const w = new ByteWriter();
  const seen = new Set<string>();
  for (const [key, kv] of kvs) {
    if (key.length === 0) throw new Error(`${path}: GGUF metadata keys must not be empty`);
    if (seen.has(key)) throw new Error(`${path}: GGUF metadata key "${key}" is given twice; llama.cpp refuses duplicate keys`);
    seen.add(key);
    const where = () => `${path}: metadata "${key}"`;
    w.string(key);
    w.u32(kv.type);
    if (kv.type !== GgufValueType.ARRAY) {
      w.scalar(kv.type, kv.value, where);
      continue;
    }
    if (kv.elemType === (GgufValueType.ARRAY as number) || !(kv.elemType in GgufValueType)) {
      throw new Error(`${where()}: array element type ${kv.elemType} is not supported (llama.cpp reads no nested arrays)`);
    }
    w.u32(kv.elemType);
    w.u64(kv.value.length);
    for (let i = 0; i < kv.value.length; i++) w.scalar(kv.elemType, kv.value[i]!, () => `${where()}[${i}]`);
  }
  return w.result();
}

interface PlacedTensor {
  name: string;
  shape: number[];
  dtype: FloatDType;
  /** Offset relative to the start of the data section. */
  offset: number;
  bytes: number;
}

function encodeHeader(kvBytes: Buffer, nKv: number, tensors: readonly PlacedTensor[], alignment: number): Buffer {
  const w = new ByteWriter();
  w.bytes(GGUF_MAGIC);
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  w.u64(nKv);
  w.bytes(kvBytes);
  for (const t of tensors) {
    w.string(t.name);
    w.u32(t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) w.u64(t.shape[d]!);
    w.u32(FLOAT_DTYPE_TO_GGML[t.dtype]);
    w.u64(t.offset);
  }
  w.zeros(padTo(w.length, alignment) - w.length);
  return w.result();
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

export interface GgufTensorPlan {
  name: string;
  /** PyTorch order. */
  shape: number[];
  dtype: FloatDType;
}

export interface GgufSinkOptions {
  kv: Array<[string, GgufKv]>;
  /** Data alignment, a power of two; default 32. Written as `general.alignment` only when it is not 32. */
  alignment?: number;
  /** Storage dtype for tensors added without one; default F32. */
  dtype?: FloatDType;
  /** All tensors known up front: the header is written first and data streams straight into place. */
  plan?: GgufTensorPlan[];
}

export interface GgufSink extends TensorSink {
  readonly path: string;
}

const COPY_CHUNK_BYTES = 8 << 20;
const FLOAT_DTYPES: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16']);

function checkTensorSpec(path: string, name: string, shape: number[], dtype: string): number {
  const nameBytes = Buffer.byteLength(name, 'utf8');
  if (nameBytes === 0 || nameBytes > GGML_MAX_NAME_BYTES) {
    throw new Error(`${path}: tensor name "${name}" is ${nameBytes} bytes; llama.cpp accepts 1 to ${GGML_MAX_NAME_BYTES}`);
  }
  if (!FLOAT_DTYPES.has(dtype)) throw new Error(`${path}: tensor "${name}": dtype ${dtype} cannot be written (use F32, F16 or BF16)`);
  if (shape.length > GGML_MAX_DIMS) {
    throw new Error(`${path}: tensor "${name}" has ${shape.length} dimensions; ggml supports at most ${GGML_MAX_DIMS}`);
  }
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new Error(`${path}: tensor "${name}" has invalid shape [${shape.join(', ')}]`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new Error(`${path}: tensor "${name}" shape [${shape.join(', ')}] is too large`);
  return n;
}

function dtypeBytes(dtype: FloatDType): number {
  return dtype === 'F32' ? 4 : 2;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

async function writeFully(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

async function readFully(fh: FileHandle, into: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

class GgufFileSink implements GgufSink {
  private readonly placed: PlacedTensor[] = [];
  private readonly planned: Map<string, PlacedTensor> | undefined;
  private readonly written = new Set<string>();
  private dataBytes = 0;
  /** Unplanned mode, during finish(): the output file being assembled. */
  private extraTemp: string | undefined;
  private state: 'open' | 'finishing' | 'done' = 'open';
  private failure: Error | undefined;

  constructor(
    readonly path: string,
    private readonly kvBytes: Buffer,
    private readonly nKv: number,
    private readonly alignment: number,
    private readonly defaultDtype: FloatDType,
    /** Planned: the output temp file (header already in it). Unplanned: the temp file holding only data. */
    private readonly fh: FileHandle,
    private readonly tempPath: string,
    /** Where tensor data starts inside `fh`. */
    private readonly dataStart: number,
    plan: PlacedTensor[] | undefined,
  ) {
    if (plan) {
      this.planned = new Map(plan.map((t) => [t.name, t]));
      this.placed = plan;
      this.dataBytes = plan.reduce((end, t) => Math.max(end, t.offset + padTo(t.bytes, alignment)), 0);
    }
  }

  async add(name: string, shape: number[], data: Float32Array, dtype?: FloatDType): Promise<void> {
    if (this.state !== 'open') throw new Error(`${this.path}: cannot add tensor "${name}": the GGUF sink is already finished or aborted`);
    const target = this.planned
      ? this.plannedSlot(name, shape, data, dtype)
      : this.appendSlot(name, shape, data, dtype ?? this.defaultDtype);
    this.written.add(name);
    const bytes = encodeFromF32(data, target.dtype);
    const at = this.dataStart + target.offset;
    try {
      await writeFully(this.fh, bytes, at);
      const pad = padTo(bytes.length, this.alignment) - bytes.length;
      if (pad > 0) await writeFully(this.fh, new Uint8Array(pad), at + bytes.length);
    } catch (err) {
      // A half-written tensor must never end up in a finished file.
      this.failure ??= err as Error;
      throw err;
    }
  }

  private checkLength(name: string, shape: number[], data: Float32Array, n: number): void {
    if (data.length !== n) {
      throw new Error(`${this.path}: tensor "${name}" has ${data.length} values but shape [${shape.join(', ')}] needs ${n}`);
    }
  }

  private plannedSlot(name: string, shape: number[], data: Float32Array, dtype: FloatDType | undefined): PlacedTensor {
    const slot = this.planned!.get(name);
    if (!slot) throw new Error(`${this.path}: tensor "${name}" is not in the plan this GGUF file was created with`);
    if (this.written.has(name)) throw new Error(`${this.path}: tensor "${name}" was already added`);
    if (!sameShape(slot.shape, shape)) {
      throw new Error(`${this.path}: tensor "${name}" has shape [${shape.join(', ')}] but the plan says [${slot.shape.join(', ')}]`);
    }
    if (dtype !== undefined && dtype !== slot.dtype) {
      throw new Error(`${this.path}: tensor "${name}" is added as ${dtype} but the plan says ${slot.dtype}`);
    }
    this.checkLength(name, shape, data, slot.bytes / dtypeBytes(slot.dtype));
    return slot;
  }

  private appendSlot(name: string, shape: number[], data: Float32Array, dtype: FloatDType): PlacedTensor {
    if (this.written.has(name)) throw new Error(`${this.path}: tensor "${name}" was already added; GGUF names must be unique`);
    const n = checkTensorSpec(this.path, name, shape, dtype);
    this.checkLength(name, shape, data, n);
    // The slot is reserved synchronously so that concurrent add() calls never overlap.
    const slot: PlacedTensor = { name, shape: [...shape], dtype, offset: this.dataBytes, bytes: n * dtypeBytes(dtype) };
    this.dataBytes += padTo(slot.bytes, this.alignment);
    this.placed.push(slot);
    return slot;
  }

  async finish(): Promise<void> {
    if (this.state !== 'open') throw new Error(`${this.path}: the GGUF sink is already finished or aborted`);
    this.state = 'finishing';
    try {
      assertNotAnInputSoFar(this.path); // inputs read since the sink opened count too
      if (this.failure) throw new Error(`${this.path}: not finishing: an earlier tensor write failed (${this.failure.message})`);
      if (this.planned) {
        const missing = this.placed.filter((t) => !this.written.has(t.name)).map((t) => t.name);
        if (missing.length > 0) {
          throw new Error(`${this.path}: ${missing.length} planned tensor(s) were never added: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
        }
        await this.fh.truncate(this.dataStart + this.dataBytes);
        await this.fh.sync();
        await this.fh.close();
        await rename(this.tempPath, this.path);
        releaseTemporary(this.tempPath);
      } else {
        await this.assembleFromDataFile();
      }
      this.state = 'done';
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  /** Unplanned mode: header now that every tensor is known, then the data temp file copied behind it. */
  private async assembleFromDataFile(): Promise<void> {
    const outPath = newTemporary(this.path, 'tmp');
    this.extraTemp = outPath;
    const out = await open(outPath, 'w');
    try {
      const header = encodeHeader(this.kvBytes, this.nKv, this.placed, this.alignment);
      await writeFully(out, header, 0);
      const chunk = Buffer.allocUnsafe(Math.min(COPY_CHUNK_BYTES, Math.max(this.dataBytes, 1)));
      for (let pos = 0; pos < this.dataBytes; ) {
        const want = Math.min(chunk.length, this.dataBytes - pos);
        const got = await readFully(this.fh, chunk.subarray(0, want), pos);
        if (got !== want) throw new Error(`${this.path}: temporary data file ${this.tempPath} ended early (disk full?)`);
        await writeFully(out, chunk.subarray(0, want), header.length + pos);
        pos += want;
      }
      await out.sync();
    } finally {
      await out.close();
    }
    await this.fh.close();
    await rename(outPath, this.path);
    releaseTemporary(outPath);
    this.extraTemp = undefined;
    await unlink(this.tempPath);
    releaseTemporary(this.tempPath);
  }

  async abort(): Promise<void> {
    this.state = 'done';
    await this.fh.close().catch(() => undefined);
    for (const p of [this.tempPath, this.extraTemp]) {
      if (p === undefined) continue;
      await unlink(p).catch(() => undefined);
      releaseTemporary(p);
    }
  }
}

/**
 * Creates a GGUF v3 file at `path`, written atomically: tensors go to a temporary file next to it
 * and `path` appears only when `finish()` succeeds; `abort()` (or a failing `finish()`) removes
 * the temporaries. `add()` takes PyTorch-order shapes and f32 data and stores the requested dtype.
 */
export async function createGgufSink(path: string, opts: GgufSinkOptions): Promise<GgufSink> {
  const kvs: Array<[string, GgufKv]> = [...opts.kv];
  const alignmentKv = kvs.find(([k]) => k === 'general.alignment')?.[1];
  if (alignmentKv && alignmentKv.type !== GgufValueType.UINT32) {
    throw new Error(`${path}: metadata "general.alignment" must be UINT32 (llama.cpp refuses other types)`);
  }
  const alignment = opts.alignment ?? (alignmentKv ? Number(alignmentKv.value) : GGUF_DEFAULT_ALIGNMENT);
  if (!isPowerOfTwo(alignment)) throw new Error(`${path}: GGUF alignment ${alignment} is not a power of two`);
  if (alignmentKv && Number(alignmentKv.value) !== alignment) {
    throw new Error(`${path}: metadata general.alignment=${String(alignmentKv.value)} disagrees with the alignment option ${alignment}`);
  }
  if (!alignmentKv && alignment !== GGUF_DEFAULT_ALIGNMENT) kvs.push(['general.alignment', kvU32(alignment)]);
  const kvBytes = encodeKvs(path, kvs);
  const defaultDtype = opts.dtype ?? 'F32';
  if (!FLOAT_DTYPES.has(defaultDtype)) throw new Error(`${path}: dtype ${defaultDtype} cannot be written (use F32, F16 or BF16)`);
  assertNotAnInputSoFar(path);
  await sweepStaleTemporaries(path);
  // like the folder writers (atomicOutputDir): a missing parent folder is created, not an error
  await mkdir(dirname(path), { recursive: true });

  if (!opts.plan) {
    const dataPath = newTemporary(path, 'data');
    const fh = await open(dataPath, 'w+');
    return new GgufFileSink(path, kvBytes, kvs.length, alignment, defaultDtype, fh, dataPath, 0, undefined);
  }

  const placed: PlacedTensor[] = [];
  const names = new Set<string>();
  let offset = 0;
  for (const t of opts.plan) {
    if (names.has(t.name)) throw new Error(`${path}: tensor "${t.name}" appears twice in the plan; GGUF names must be unique`);
    names.add(t.name);
    const n = checkTensorSpec(path, t.name, t.shape, t.dtype);
    placed.push({ name: t.name, shape: [...t.shape], dtype: t.dtype, offset, bytes: n * dtypeBytes(t.dtype) });
    offset += padTo(n * dtypeBytes(t.dtype), alignment);
  }
  const header = encodeHeader(kvBytes, kvs.length, placed, alignment);
  const outPath = newTemporary(path, 'tmp');
  const fh = await open(outPath, 'w');
  try {
    await writeFully(fh, header, 0);
  } catch (err) {
    await fh.close();
    await unlink(outPath).catch(() => undefined);
    throw err;
  }
  return new GgufFileSink(path, kvBytes, kvs.length, alignment, defaultDtype, fh, outPath, header.length, placed);
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/** Real files hold a few thousand tensors (a 405B model: ~1.1k per shard); far more means a corrupt count. */
export const GGUF_MAX_TENSOR_COUNT = 1_000_000;
/** Real files hold tens of KVs; a huge count is corruption and would make us loop for nothing. */
export const GGUF_MAX_KV_COUNT = 1_000_000;
/** Longest real strings are embedded tokenizer JSON / chat templates (a few MB); also keeps under V8's string limit. */
export const GGUF_MAX_STRING_BYTES = 64 << 20;
/** Vocab-sized arrays (token lists, merges) stay under ~1M; 64M elements bounds memory for a corrupt count. */
export const GGUF_MAX_ARRAY_ELEMENTS = 1 << 26;
/** Header bytes fetched per positioned read; big enough that a 150k-token vocabulary takes a handful of reads. */
const HEADER_CHUNK_BYTES = 1 << 20;

export interface GgufTensorEntry {
  name: string;
  /** PyTorch order (outermost first). */
  shape: number[];
  /** As stored in the file: innermost (contiguous) dimension first. */
  ggmlDims: number[];
  type: GgmlType;
  /** Offset of the data relative to `dataOffset` (the start of the data section). */
  offset: number;
  bytes: number;
}

/** Sequential reader over the header that fetches the file in large positioned chunks. */
class HeaderReader {
  private buf: Buffer = Buffer.alloc(0);
  private bufStart = 0;
  pos = 0;
  /** What is being read, for error messages. */
  context = 'the file header';

  constructor(
    private readonly fh: FileHandle,
    readonly fileSize: number,
    private readonly path: string,
  ) {}

  fail(msg: string): Error {
    return new Error(`${this.path}: invalid GGUF file: ${msg} (while reading ${this.context})`);
  }

  /** Whether the next n bytes are already buffered (lets hot loops skip an await per element). */
  has(n: number): boolean {
    return this.pos + n <= this.bufStart + this.buf.length;
  }

  async need(n: number): Promise<void> {
    if (this.has(n)) return;
    if (this.pos + n > this.fileSize) {
      throw new Error(
        `${this.path}: GGUF file is truncated: ${this.context} needs ${n} bytes at offset ${this.pos} but the file ends at ${this.fileSize} (incomplete download or copy?)`,
      );
    }
    const size = Math.min(Math.max(n, HEADER_CHUNK_BYTES), this.fileSize - this.pos);
    const buf = Buffer.allocUnsafe(size);
    const got = await readFully(this.fh, buf, this.pos);
    if (got < n) throw new Error(`${this.path}: GGUF file shrank while being read (${this.context})`);
    this.buf = buf.subarray(0, got);
    this.bufStart = this.pos;
  }

  private at(n: number): number {
    const i = this.pos - this.bufStart;
    this.pos += n;
    return i;
  }
  u8(): number { return this.buf.readUInt8(this.at(1)); }
  i8(): number { return this.buf.readInt8(this.at(1)); }
  u16(): number { return this.buf.readUInt16LE(this.at(2)); }
  i16(): number { return this.buf.readInt16LE(this.at(2)); }
  u32(): number { return this.buf.readUInt32LE(this.at(4)); }
  i32(): number { return this.buf.readInt32LE(this.at(4)); }
  f32(): number { return this.buf.readFloatLE(this.at(4)); }
  f64(): number { return this.buf.readDoubleLE(this.at(8)); }
  u64(): bigint { return this.buf.readBigUInt64LE(this.at(8)); }
  i64(): bigint { return this.buf.readBigInt64LE(this.at(8)); }
  utf8(n: number): string {
    const i = this.at(n);
    return this.buf.toString('utf8', i, i + n);
  }

  /** A u64 that must fit a JS number (counts, lengths, dims, offsets). */
  async size(what: string): Promise<number> {
    await this.need(8);
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw this.fail(`${what} ${v} is impossibly large`);
    return Number(v);
  }

  async string(): Promise<string> {
    const n = await this.size('string length');
    if (n > GGUF_MAX_STRING_BYTES) throw this.fail(`string length ${n} exceeds the limit of ${GGUF_MAX_STRING_BYTES} bytes`);
    await this.need(n);
    return this.utf8(n);
  }

  /** The next string if it is entirely buffered, else undefined (nothing consumed). */
  bufferedString(): string | undefined {
    if (!this.has(8)) return undefined;
    const n = this.buf.readBigUInt64LE(this.pos - this.bufStart);
    if (n > BigInt(GGUF_MAX_STRING_BYTES) || !this.has(8 + Number(n))) return undefined;
    this.pos += 8;
    return this.utf8(Number(n));
  }
}

function safeInt(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

async function readScalar(r: HeaderReader, type: GgufElemType): Promise<GgufScalar> {
  if (type === GgufValueType.STRING) return r.bufferedString() ?? (await r.string());
  const size = FIXED_SIZE[type]!;
  if (!r.has(size)) await r.need(size);
  return readBufferedFixed(r, type);
}

/** A fixed-size value whose bytes are already buffered. */
function readBufferedFixed(r: HeaderReader, type: Exclude<GgufElemType, GgufValueType.STRING>): GgufScalar {
  switch (type) {
    case GgufValueType.UINT8: return r.u8();
    case GgufValueType.INT8: return r.i8();
    case GgufValueType.UINT16: return r.u16();
    case GgufValueType.INT16: return r.i16();
    case GgufValueType.UINT32: return r.u32();
    case GgufValueType.INT32: return r.i32();
    case GgufValueType.FLOAT32: return r.f32();
    case GgufValueType.BOOL: return r.u8() !== 0;
    case GgufValueType.UINT64: return safeInt(r.u64());
    case GgufValueType.INT64: return safeInt(r.i64());
    case GgufValueType.FLOAT64: return r.f64();
  }
}

function checkValueType(r: HeaderReader, t: number, allowArray: boolean): GgufValueType {
  const ok = Number.isInteger(t) && t >= 0 && t <= GgufValueType.FLOAT64 && (allowArray || t !== GgufValueType.ARRAY);
  if (!ok) {
    throw r.fail(t === GgufValueType.ARRAY ? 'nested arrays are not supported (llama.cpp cannot read them either)' : `unknown value type ${t}`);
  }
  return t as GgufValueType;
}

async function readKv(r: HeaderReader): Promise<[string, GgufKv]> {
  const key = await r.string();
  if (key.length === 0) throw r.fail('empty metadata key');
  r.context = `metadata "${key}"`;
  await r.need(4);
  const type = checkValueType(r, r.u32(), true);
  if (type !== GgufValueType.ARRAY) return [key, { type, value: await readScalar(r, type) } as GgufKv];
  await r.need(4);
  const elemType = checkValueType(r, r.u32(), false) as GgufElemType;
  const n = await r.size('array length');
  const minBytes = FIXED_SIZE[elemType] ?? 8;
  if (n > GGUF_MAX_ARRAY_ELEMENTS || n * minBytes > r.fileSize - r.pos) {
    throw r.fail(`array of ${n} elements cannot fit (limit ${GGUF_MAX_ARRAY_ELEMENTS}, ${r.fileSize - r.pos} bytes left in the file)`);
  }
  // Vocabulary arrays hold ~150k elements: awaiting only when the buffer runs dry keeps this fast.
  const values = new Array<GgufScalar>(n);
  if (elemType === GgufValueType.STRING) {
    for (let i = 0; i < n; i++) values[i] = r.bufferedString() ?? (await r.string());
  } else {
    const size = FIXED_SIZE[elemType]!;
    for (let i = 0; i < n; i++) {
      if (!r.has(size)) await r.need(size);
      values[i] = readBufferedFixed(r, elemType);
    }
  }
  return [key, { type, elemType, value: values }];
}

function plainValue(kv: GgufKv): unknown {
  return kv.type === GgufValueType.ARRAY ? (kv.value as GgufScalar[]) : kv.value;
}

/** An open GGUF file: header parsed, tensor data read on demand (never the whole file). */
export class GgufFile implements TensorSource {
  private readonly byName: Map<string, GgufTensorEntry>;
  /**
   * Metadata as plain JS values: numbers, booleans, strings, arrays of those. 64-bit integers are
   * numbers when they are safe integers and bigints otherwise.
   */
  readonly kv: Map<string, unknown>;

  constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly version: number,
    /** Typed metadata in file order. */
    readonly metadata: Map<string, GgufKv>,
    readonly tensors: GgufTensorEntry[],
    readonly alignment: number,
    /** Absolute file offset where the data section starts. */
    readonly dataOffset: number,
  ) {
    this.byName = new Map(tensors.map((t) => [t.name, t]));
    this.kv = new Map([...metadata].map(([k, v]) => [k, plainValue(v)]));
  }

  list(): TensorInfo[] {
    return this.tensors.map((t) => this.toInfo(t));
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): TensorInfo {
    return this.toInfo(this.entry(name));
  }

  private toInfo(t: GgufTensorEntry): TensorInfo {
    return { name: t.name, dtype: ggmlTypeName(t.type), shape: [...t.shape], bytes: t.bytes };
  }

  private entry(name: string): GgufTensorEntry {
    const t = this.byName.get(name);
    if (!t) throw new Error(`${this.path}: no tensor named "${name}" in this GGUF file`);
    return t;
  }

  /** Reads an F32, F16 or BF16 tensor as f32 (row-major in PyTorch order, which is ggml's memory order). */
  async read(name: string): Promise<Float32Array> {
    const t = this.entry(name);
    const dtype = ggmlTypeName(t.type);
    if (!FLOAT_DTYPES.has(dtype)) {
      throw new Error(`${this.path}: tensor "${name}" is ${dtype}; only F32, F16 and BF16 tensors can be read (dequantize it with llama.cpp first)`);
    }
    const bytes = new Uint8Array(t.bytes);
    const got = await readFully(this.fh, bytes, this.dataOffset + t.offset);
    if (got !== t.bytes) throw new Error(`${this.path}: tensor "${name}" is cut short: the file is truncated`);
    return decodeToF32(bytes, dtype as FloatDType);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

async function parseHeader(r: HeaderReader, path: string, fh: FileHandle): Promise<GgufFile> {
  await r.need(4).catch(() => {
    throw new Error(`${path}: not a GGUF file (only ${r.fileSize} bytes long)`);
  });
  const magic = r.utf8(4);
  if (magic !== 'GGUF') throw new Error(`${path}: not a GGUF file (starts with ${JSON.stringify(magic)} instead of "GGUF")`);
  await r.need(4);
  const version = r.u32();
  if (version !== 0 && (version & 0xffff) === 0) {
    throw new Error(`${path}: this GGUF file is big-endian; only little-endian GGUF files are supported`);
  }
  if (version === 1) throw new Error(`${path}: GGUF version 1 is obsolete and unsupported; re-convert the model with a current llama.cpp`);
  if (version !== 2 && version !== 3) {
    throw new Error(`${path}: unsupported GGUF version ${version} (this reader understands versions 2 and 3)`);
  }
  const nTensors = await r.size('tensor count');
  const nKv = await r.size('metadata count');
  if (nTensors > GGUF_MAX_TENSOR_COUNT) throw r.fail(`tensor count ${nTensors} is absurd (limit ${GGUF_MAX_TENSOR_COUNT})`);
  if (nKv > GGUF_MAX_KV_COUNT) throw r.fail(`metadata count ${nKv} is absurd (limit ${GGUF_MAX_KV_COUNT})`);
  // Plausible counts that cannot fit are a file cut short (the usual case: a copy or download that
  // stopped), said before reading on: each KV takes at least 13 bytes (key length, one key byte,
  // type) and each tensor info at least 25.
  const leastBytes = r.pos + nKv * 13 + nTensors * 25;
  if (leastBytes > r.fileSize) {
    throw new Error(
      `${path}: GGUF file is truncated: its header declares ${nKv} metadata entries and ${nTensors} tensors, which take at least ${leastBytes} bytes, but the file ends at ${r.fileSize} (incomplete download or copy?)`,
    );
  }

  const metadata = new Map<string, GgufKv>();
  for (let i = 0; i < nKv; i++) {
    r.context = `metadata entry #${i}`;
    const [key, kv] = await readKv(r);
    if (metadata.has(key)) throw r.fail(`duplicate metadata key "${key}"`);
    metadata.set(key, kv);
  }

  const alignmentKv = metadata.get('general.alignment');
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if (alignmentKv) {
    if (alignmentKv.type !== GgufValueType.UINT32 || !isPowerOfTwo(alignmentKv.value)) {
      throw new Error(`${path}: invalid GGUF file: general.alignment must be a UINT32 power of two`);
    }
    alignment = alignmentKv.value;
  }

  const tensors: GgufTensorEntry[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    r.context = `tensor info #${i}`;
    const name = await r.string();
    r.context = `tensor info "${name}"`;
    if (seen.has(name)) throw r.fail(`duplicate tensor name "${name}"`);
    seen.add(name);
    await r.need(4);
    const nDims = r.u32();
    if (nDims > GGML_MAX_DIMS) throw r.fail(`tensor has ${nDims} dimensions; ggml allows at most ${GGML_MAX_DIMS}`);
    const ggmlDims: number[] = [];
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      const dim = await r.size('dimension');
      ggmlDims.push(dim);
      elements *= dim;
    }
    if (!Number.isSafeInteger(elements)) throw r.fail(`shape [${ggmlDims.join(', ')}] has too many elements`);
    await r.need(4);
    const type = r.u32() as GgmlType;
    const layout = GGML_BLOCK_LAYOUT.get(type);
    if (!layout) throw r.fail(`unknown ggml tensor type ${type} (newer than this reader?)`);
    const [blockSize, blockBytes] = layout;
    if ((ggmlDims[0] ?? 1) % blockSize !== 0) {
      throw r.fail(`row length ${ggmlDims[0] ?? 1} is not a multiple of the ${ggmlTypeName(type)} block size ${blockSize}`);
    }
    const offset = await r.size('tensor offset');
    if (offset % alignment !== 0) throw r.fail(`data offset ${offset} is not a multiple of the alignment ${alignment}`);
    tensors.push({ name, shape: [...ggmlDims].reverse(), ggmlDims, type, offset, bytes: (elements / blockSize) * blockBytes });
  }

  const dataOffset = padTo(r.pos, alignment);
  for (const t of tensors) {
    const end = dataOffset + t.offset + t.bytes;
    if (end > r.fileSize) {
      throw new Error(
        `${path}: GGUF file is truncated or corrupt: tensor "${t.name}" occupies bytes ${dataOffset + t.offset}..${end} but the file has ${r.fileSize}`,
      );
    }
  }
  return new GgufFile(path, fh, version, metadata, tensors, alignment, dataOffset);
}

/** Opens a GGUF file and parses its header with buffered positioned reads. Call `close()` when done. */
export async function openGguf(path: string): Promise<GgufFile> {
  noteInput(path);
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    // open() succeeds on a folder; reading it would then fail with a bare EISDIR
    if (st.isDirectory()) throw new Error(`${path}: is a folder, not a GGUF file: give the path of the .gguf file itself`);
    const { size } = st;
    return await parseHeader(new HeaderReader(fh, size, path), path, fh);
  } catch (err) {
    await fh.close();
    throw err;
  }
}
