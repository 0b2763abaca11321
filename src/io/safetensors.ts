/**
 * safetensors reader and streaming writer.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 *   {"__metadata__": {str: str}, "<tensor>": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...}
 * then the data section; offsets are relative to its start (byte 8 + N). Writers pad the JSON
 * with spaces so the data starts 8-byte aligned.
 *
 * The reader parses only the header when opening and reads one tensor at a time with positioned
 * reads, so a checkpoint far larger than memory can be processed tensor by tensor. The writer
 * (`createSafetensorsSink`) streams tensors to disk as they arrive and shards them like
 * Hugging Face's `save_pretrained`.
 */
import { open, lstat, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { assertFinite, firstNonFiniteError } from '../tensor/finite.js';
import { decodeIntoF32, dtypeByteSize, encodeFromF32, encodeIntoBytes, isFloatDType } from '../tensor/dtype.js';
import { atomicWriteFile } from './atomic.js';
import { newTemporary, releaseTemporary } from './temporaries.js';
import type { FloatDType, TensorInfo, TensorLocation, TensorSink, TensorSource } from './types.js';
import { pathExists } from './paths.js';
import { noteInput } from './inputs.js';

/**
 * Largest header we accept. The reference implementation (the Rust `safetensors` crate) refuses
 * headers above 100 MB too; a real header is a few MB even for models with ~100k tensors, and the
 * limit stops a crafted length prefix from making us allocate and parse gigabytes.
 */
export const MAX_HEADER_BYTES = 100_000_000;

/** Size of one read or write call when copying data between files: large enough for full disk speed, small enough to double-buffer cheaply. */
const IO_CHUNK_BYTES = 8 << 20;

/** Bytes of F16/BF16 read per step while decoding: small enough to stay in cache between the read and the decode. */
const DECODE_CHUNK_BYTES = 1 << 20;

export const SUPPORTED_HINT = 'loraforge handles F32, F16 and BF16 tensors (dequantize quantized checkpoints first)';

// ---------------------------------------------------------------------------------------------
// Positioned I/O
// ---------------------------------------------------------------------------------------------

async function readFully(fh: FileHandle, buf: Uint8Array, position: number, what: string): Promise<void> {
  let done = 0;
  while (done < buf.byteLength) {
    const want = Math.min(buf.byteLength - done, 1 << 30); // a single read(2) returns at most ~2 GiB
    const { bytesRead } = await fh.read(buf, done, want, position + done);
    if (bytesRead === 0) {
      throw new Error(`${what}: the file ended ${buf.byteLength - done} bytes early (truncated, or changed while reading)`);
    }
    done += bytesRead;
  }
}

async function writeFully(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.byteLength) {
    const want = Math.min(buf.byteLength - done, 1 << 30);
    const { bytesWritten } = await fh.write(buf, done, want, position + done);
    done += bytesWritten;
  }
}

/** Copies `length` bytes between files, reading the next chunk while the previous one is written. */
async function copyRange(src: FileHandle, srcPos: number, dst: FileHandle, dstPos: number, length: number, what: string): Promise<void> {
  const buffers = [new Uint8Array(Math.min(IO_CHUNK_BYTES, length)), new Uint8Array(Math.min(IO_CHUNK_BYTES, length))];
  let pendingWrite: Promise<void> | undefined;
  for (let off = 0, k = 0; off < length; off += IO_CHUNK_BYTES, k ^= 1) {
    const chunk = buffers[k].subarray(0, Math.min(IO_CHUNK_BYTES, length - off));
    await readFully(src, chunk, srcPos + off, what);
    await pendingWrite;
    pendingWrite = writeFully(dst, chunk, dstPos + off);
  }
  await pendingWrite;
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

interface Entry extends TensorInfo {
  /** data_offsets, relative to the start of the data section */
  begin: number;
  end: number;
}

interface ParsedHeader {
  headerSize: number;
  metadata: Record<string, string>;
  /** in data order */
  entries: Entry[];
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegativeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Element count of a shape, or undefined when it exceeds what a Number counts exactly. */
function elementCount(shape: readonly number[]): number | undefined {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (n > Number.MAX_SAFE_INTEGER) return undefined;
  }
  return n;
}

function parseEntry(path: string, name: string, raw: unknown, dataSize: number): Entry {
  const where = `${path}: tensor "${name}"`;
  if (!isPlainObject(raw)) throw new Error(`${where}: header entry is not an object (corrupt safetensors header)`);
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== 'string') throw new Error(`${where}: header entry has no "dtype" string (corrupt safetensors header)`);
  const size = dtypeByteSize(dtype);
  if (size === undefined) throw new Error(`${where}: unknown dtype "${dtype}"; ${SUPPORTED_HINT}`);
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInt)) {
    throw new Error(`${where}: "shape" must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInt)) {
    throw new Error(`${where}: "data_offsets" must be [begin, end] non-negative integers, got ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw new Error(`${where}: data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataSize) {
    throw new Error(`${where}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataSize} bytes): the file is truncated or corrupt`);
  }
  const count = elementCount(shape);
  if (count === undefined || count * size !== end - begin) {
    throw new Error(`${where}: shape ${fmtShape(shape)} of ${dtype} needs ${count === undefined ? 'too many' : count * size} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`);
  }
  return { name, dtype, shape: [...shape], bytes: end - begin, begin, end };
}

function parseMetadata(path: string, raw: unknown): Record<string, string> {
  if (!isPlainObject(raw)) throw new Error(`${path}: "__metadata__" must be an object of string values`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') throw new Error(`${path}: "__metadata__" value for "${k}" is ${JSON.stringify(v)}, not a string`);
    out[k] = v;
  }
  return out;
}

async function parseHeader(path: string, fh: FileHandle): Promise<ParsedHeader> {
  const fileSize = (await fh.stat()).size;
  if (fileSize < 8) {
    throw new Error(`${path}: ${fileSize} bytes is too short for a safetensors file (it starts with an 8-byte header length): truncated or not safetensors`);
  }
  const prefix = new Uint8Array(8);
  await readFully(fh, prefix, 0, path);
  const declared = new DataView(prefix.buffer).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    throw new Error(`${path}: header length ${declared} exceeds the ${MAX_HEADER_BYTES}-byte limit: corrupt or not a safetensors file`);
  }
  const headerSize = Number(declared);
  if (8 + headerSize > fileSize) {
    throw new Error(`${path}: header length ${headerSize} runs past the end of the ${fileSize}-byte file: truncated or not a safetensors file`);
  }
  const headerBytes = new Uint8Array(headerSize);
  await readFully(fh, headerBytes, 8, path);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new Error(`${path}: header is not valid UTF-8: corrupt or not a safetensors file`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: header is not valid JSON (${(err as Error).message}): corrupt or not a safetensors file`);
  }
  if (!isPlainObject(json)) throw new Error(`${path}: header JSON is not an object: corrupt or not a safetensors file`);

  const dataSize = fileSize - 8 - headerSize;
  let metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === '__metadata__') metadata = parseMetadata(path, raw);
    else entries.push(parseEntry(path, name, raw, dataSize));
  }
  // Gaps between tensors are tolerated (nothing reads them); overlaps mean a corrupt or hostile file.
  entries.sort((x, y) => x.begin - y.begin || x.end - y.end);
  for (let i = 1; i < entries.length; i++) {
    const prev = entries[i - 1];
    const cur = entries[i];
    if (cur.begin < prev.end) {
      throw new Error(`${path}: tensors "${prev.name}" [${prev.begin}, ${prev.end}) and "${cur.name}" [${cur.begin}, ${cur.end}) overlap in the data section: corrupt file`);
    }
  }
  return { headerSize, metadata, entries };
}

function toInfo(e: Entry): TensorInfo {
  return { name: e.name, dtype: e.dtype, shape: [...e.shape], bytes: e.bytes };
}

/** One .safetensors file; tensors are read on demand through one file handle. */
export class SafetensorsFile implements TensorSource {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Byte length of the JSON header (the 8-byte prefix's value); data starts at 8 + headerSize. */
  readonly headerSize: number;
  private readonly entries: Map<string, Entry>;
  private readonly order: Entry[];
  private handle: Promise<FileHandle> | undefined;
  private closed = false;
  private checkFinite = true;

  constructor(path: string, header: ParsedHeader, handle: FileHandle | undefined) {
    this.path = path;
    this.metadata = header.metadata;
    this.headerSize = header.headerSize;
    this.order = header.entries;
    this.entries = new Map(header.entries.map((e) => [e.name, e]));
    this.handle = handle && Promise.resolve(handle);
  }

  /** Tensors in the order their data is stored (sequential reads when iterated). */
  list(): TensorInfo[] {
    return this.order.map(toInfo);
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    return toInfo(this.entry(name));
  }

  /** Where the tensor's bytes are, for a reader on another thread. */
  locate(name: string): TensorLocation {
    const e = this.entry(name);
    return { ...toInfo(e), path: this.path, offset: this.dataStart + e.begin };
  }

  /** Reads return NaN and ±Inf instead of refusing them: for checking stored bits, never for computing. */
  allowNonFinite(): this {
    this.checkFinite = false;
    return this;
  }

  /** The tensor's bytes exactly as stored. */
  async readRaw(name: string): Promise<Uint8Array> {
    const e = this.entry(name);
    const buf = new Uint8Array(e.bytes);
    await readFully(await this.fileHandle(), buf, this.dataStart + e.begin, this.where(name));
    return buf;
  }

  /** The tensor as f32, in a fresh array. */
  async read(name: string): Promise<Float32Array> {
    const e = this.entry(name);
    return this.decodeInto(e, new Float32Array(this.elementsOf(e)));
  }

  /**
   * Like read(), into `out` (exactly the tensor's element count). Lets a pipeline reuse buffers:
   * first-touching fresh memory costs about as much as decoding it.
   */
  async readInto(name: string, out: Float32Array): Promise<Float32Array> {
    const e = this.entry(name);
    const n = this.elementsOf(e);
    if (out.length !== n) throw new Error(`${this.where(name)}: readInto needs an array of ${n} elements, got ${out.length}`);
    return this.decodeInto(e, out);
  }

  /** Element count of a tensor we can decode (refuses other dtypes). */
  private elementsOf(e: Entry): number {
    if (!isFloatDType(e.dtype)) throw new Error(`${this.where(e.name)} has dtype ${e.dtype}; ${SUPPORTED_HINT}`);
    return e.bytes / (dtypeByteSize(e.dtype) as number);
  }

  /**
   * F32 data is read straight into `out`; F16/BF16 are decoded chunk by chunk. Every value is
   * checked finite: a NaN or ±Inf would spread through whatever a command computes from it.
   */
  private async decodeInto(e: Entry, out: Float32Array): Promise<Float32Array> {
    const dtype = e.dtype as FloatDType;
    const what = this.where(e.name);
    const fh = await this.fileHandle();
    const start = this.dataStart + e.begin;
    if (dtype === 'F32') {
      await readFully(fh, new Uint8Array(out.buffer, out.byteOffset, out.byteLength), start, what);
      if (this.checkFinite) assertFinite(out, what, { file: this.path, tensor: e.name });
      return out;
    }
    // Double-buffered: the next chunk is read from disk while this one is decoded.
    const size = Math.min(DECODE_CHUNK_BYTES, e.bytes);
    const buffers = [new Uint8Array(size), new Uint8Array(size)];
    const chunkAt = (k: number, off: number) => buffers[k].subarray(0, Math.min(DECODE_CHUNK_BYTES, e.bytes - off));
    let pending: Promise<void> | undefined = e.bytes > 0 ? readFully(fh, chunkAt(0, 0), start, what) : undefined;
    for (let off = 0, k = 0; off < e.bytes; off += DECODE_CHUNK_BYTES, k ^= 1) {
      await pending;
      const chunk = chunkAt(k, off);
      const next = off + DECODE_CHUNK_BYTES;
      pending = next < e.bytes ? readFully(fh, chunkAt(k ^ 1, next), start + next, what) : undefined;
      const from = off / 2;
      const to = (off + chunk.byteLength) / 2;
      // the decoder checks the stored bits as it goes
      const finite = decodeIntoF32(chunk, dtype, out.subarray(from, to));
      if (this.checkFinite && !finite) throw firstNonFiniteError(out, what, { file: this.path, tensor: e.name }, from, to);
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const handle = this.handle;
    this.handle = undefined;
    if (handle) await (await handle).close();
  }

  private get dataStart(): number {
    return 8 + this.headerSize;
  }

  private where(name: string): string {
    return `${this.path}: tensor "${name}"`;
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: no tensor named "${name}"`);
    return e;
  }

  private fileHandle(): Promise<FileHandle> {
    if (this.closed) throw new Error(`${this.path}: file was already closed`);
    return (this.handle ??= open(this.path, 'r'));
  }
}

/**
 * Opens a .safetensors file, reading and validating only its header.
 * `lazyHandle`: close the file after the header and reopen it on the first read (for checkpoints
 * with many shards, so unread shards hold no file descriptor).
 */
export async function openSafetensors(path: string, opts: { lazyHandle?: boolean } = {}): Promise<SafetensorsFile> {
  noteInput(path);
  const fh = await open(path, 'r');
  try {
    const header = await parseHeader(path, fh);
    if (opts.lazyHandle) {
      await fh.close();
      return new SafetensorsFile(path, header, undefined);
    }
    return new SafetensorsFile(path, header, fh);
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Writer: shared pieces
// ---------------------------------------------------------------------------------------------

interface Placed {
  name: string;
  shape: number[];
  dtype: FloatDType;
  begin: number;
  end: number;
}

/** Validates a tensor to be written and returns its byte size. */
function checkTensorSpec(where: string, name: string, shape: readonly number[], dtype: string): number {
  if (name === '__metadata__') throw new Error(`${where}: "__metadata__" is reserved in safetensors and cannot name a tensor`);
  if (!isFloatDType(dtype)) throw new Error(`${where}: tensor "${name}": dtype ${dtype} cannot be written (use F32, F16 or BF16)`);
  if (!Array.isArray(shape) || !shape.every(isNonNegativeInt)) {
    throw new Error(`${where}: tensor "${name}": shape ${JSON.stringify(shape)} must be non-negative integers`);
  }
  const count = elementCount(shape);
  if (count === undefined) throw new Error(`${where}: tensor "${name}": shape ${fmtShape(shape)} is too large`);
  return count * (dtypeByteSize(dtype) as number);
}

function checkDataLength(where: string, name: string, shape: readonly number[], data: Float32Array): void {
  const count = elementCount(shape);
  if (data.length !== count) {
    throw new Error(`${where}: tensor "${name}": shape ${fmtShape(shape)} has ${count} elements but ${data.length} values were given`);
  }
}

/**
 * The metadata every file gets: transformers refuses safetensors files whose metadata lacks a
 * "format" it knows, so "pt" is filled in unless the caller set one.
 */
function fileMetadata(where: string, metadata: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = { format: 'pt', ...metadata };
  for (const [k, v] of Object.entries(out)) {
    if (typeof v !== 'string') throw new Error(`${where}: metadata "${k}" must be a string, got ${JSON.stringify(v)}`);
  }
  return out;
}

/** 8-byte length + JSON header padded with spaces to a multiple of 8; tensors listed in data order. */
function encodeHeader(tensors: readonly Placed[], metadata: Record<string, string>): Uint8Array {
  // Built by hand rather than from an object so integer-like tensor names keep their position.
  const parts = [`"__metadata__":${JSON.stringify(metadata)}`];
  for (const t of tensors) {
    parts.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [t.begin, t.end] })}`);
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

/** Elements encoded per write call (16 MiB of f32). */
const ENCODE_CHUNK_ELEMENTS = 4 << 20;

/**
 * Encode buffers (ENCODE_CHUNK_ELEMENTS bf16/f16 values each) kept between tensors: first-touching
 * fresh memory costs about as much as encoding into it. A few, as concurrent writes may each hold two.
 */
const spareEncodeBuffers: Uint8Array[] = [];
const SPARE_ENCODE_BUFFERS = 4;

/** Encodes `data` chunk by chunk and writes it at `position`, encoding the next chunk while the previous one is written. */
async function writeEncoded(fh: FileHandle, data: Float32Array, dtype: FloatDType, position: number): Promise<void> {
  if (dtype === 'F32') {
    await writeFully(fh, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), position);
    return;
  }
  const buffers = [0, 1].map(() => spareEncodeBuffers.pop() ?? new Uint8Array(ENCODE_CHUNK_ELEMENTS * 2));
  let pending: Promise<void> | undefined;
  let pos = position;
  for (let i = 0, k = 0; i < data.length; i += ENCODE_CHUNK_ELEMENTS, k ^= 1) {
    // buffer k's last write (two chunks ago) was awaited in the previous round
    const bytes = encodeIntoBytes(data.subarray(i, Math.min(data.length, i + ENCODE_CHUNK_ELEMENTS)), dtype, buffers[k]);
    await pending;
    pending = writeFully(fh, bytes, pos);
    pos += bytes.byteLength;
  }
  await pending;
  // only now are both buffers free (after a failure one may still be in a write: it is dropped)
  for (const b of buffers) if (spareEncodeBuffers.length < SPARE_ENCODE_BUFFERS) spareEncodeBuffers.push(b);
}

/** Writes a small safetensors file in one go (atomically: temp file + rename). */
export async function writeSafetensorsFile(
  path: string,
  tensors: Array<{ name: string; shape: number[]; data: Float32Array; dtype: FloatDType }>,
  metadata?: Record<string, string>,
): Promise<void> {
  const placed: Placed[] = [];
  const seen = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (seen.has(t.name)) throw new Error(`${path}: tensor "${t.name}" is given twice`);
    seen.add(t.name);
    const bytes = checkTensorSpec(path, t.name, t.shape, t.dtype);
    checkDataLength(path, t.name, t.shape, t.data);
    placed.push({ name: t.name, shape: [...t.shape], dtype: t.dtype, begin: offset, end: offset + bytes });
    offset += bytes;
  }
  const header = encodeHeader(placed, fileMetadata(path, metadata));
  const body = Buffer.concat([header, ...tensors.map((t) => encodeFromF32(t.data, t.dtype))]);
  await atomicWriteFile(path, body);
}

/** "5GB" (10^9), "500MB", "2GiB" (2^30), "1.5 GB", "123456" (bytes); units are case-insensitive. */
export function parseShardSize(s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$/i.exec(s);
  const units: Record<string, number> = {
    b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
  };
  const bytes = m ? Math.floor(Number(m[1]) * units[(m[2] ?? 'b').toLowerCase()]) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new Error(`invalid shard size "${s}": use a positive size such as 5GB, 500MB, 2GiB or a number of bytes`);
  }
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Writer: streaming sink
// ---------------------------------------------------------------------------------------------

export interface SafetensorsSinkOptions {
  /** File name stem: `<baseName>.safetensors` or `<baseName>-00001-of-0000N.safetensors`; default 'model'. */
  baseName?: string;
  /** Start a new shard when the next tensor would push a shard's data past this many bytes. */
  maxShardBytes?: number;
  /** Written as `__metadata__` in every file ("format": "pt" is added when missing). */
  metadata?: Record<string, string>;
  /** Storage dtype for add() calls that give none; default 'F32'. */
  dtype?: FloatDType;
  /** Every tensor to come, in file order: headers are written up front and data goes straight into place. */
  plan?: Array<{ name: string; shape: number[]; dtype: FloatDType }>;
}

export interface SafetensorsSink extends TensorSink {
  /** Names (relative to the sink's directory) of the files written, shards first then the index; after finish(). */
  writtenFiles(): string[];
}

/** One output file under construction, under a temporary name until finish(). */
interface Shard {
  tmpPath: string;
  tensors: Placed[];
  dataBytes: number;
  fh?: FileHandle;
  /** Unplanned mode: the temporary data file the shard's tensors are appended to. */
  dataTmpPath?: string;
  dataFh?: FileHandle;
  /** Planned mode: where the data section starts in the shard file. */
  dataStart?: number;
}

/** Greedy split as in huggingface_hub: a new shard starts when the next tensor would overflow the current one. */
function splitIntoShards(tensors: Array<{ bytes: number }>, maxShardBytes: number | undefined): number[][] {
  const shards: number[][] = [[]];
  let bytes = 0;
  tensors.forEach((t, i) => {
    const current = shards[shards.length - 1];
    if (maxShardBytes !== undefined && current.length > 0 && bytes + t.bytes > maxShardBytes) {
      shards.push([i]);
      bytes = t.bytes;
    } else {
      current.push(i);
      bytes += t.bytes;
    }
  });
  return shards;
}

function shardFileName(base: string, index: number, count: number): string {
  if (count === 1) return `${base}.safetensors`;
  const pad = (n: number) => String(n).padStart(5, '0');
  return `${base}-${pad(index + 1)}-of-${pad(count)}.safetensors`;
}

class StreamingSafetensorsSink implements SafetensorsSink {
  private readonly shards: Shard[] = [];
  /** Planned mode: name -> [shard, tensor]. */
  private readonly planned?: Map<string, { shard: Shard; tensor: Placed }>;
  /** Names claimed by add() calls (checked, written or queued). */
  private readonly added = new Set<string>();
  private readonly metadata: Record<string, string>;
  private state: 'open' | 'failed' | 'finished' | 'aborted' = 'open';
  private queue: Promise<unknown> = Promise.resolve();
  private finalNames: string[] = [];

  constructor(
    private readonly dir: string,
    private readonly base: string,
    private readonly maxShardBytes: number | undefined,
    private readonly defaultDtype: FloatDType,
    metadata: Record<string, string> | undefined,
    plan: SafetensorsSinkOptions['plan'],
  ) {
    this.metadata = fileMetadata(this.where, metadata);
    if (plan) this.planned = this.layOut(plan);
  }

  private get where(): string {
    return join(this.dir, `${this.base}.safetensors`);
  }

  private layOut(plan: NonNullable<SafetensorsSinkOptions['plan']>): Map<string, { shard: Shard; tensor: Placed }> {
    const sized = plan.map((t) => ({ ...t, bytes: checkTensorSpec(this.where, t.name, t.shape, t.dtype) }));
    const byName = new Map<string, { shard: Shard; tensor: Placed }>();
    for (const indices of splitIntoShards(sized, this.maxShardBytes)) {
      const shard: Shard = { tmpPath: this.tempPath(`part-${this.shards.length}`), tensors: [], dataBytes: 0 };
      for (const i of indices) {
        const t = sized[i];
        if (byName.has(t.name)) throw new Error(`${this.where}: tensor "${t.name}" appears twice in the plan`);
        const placed: Placed = { name: t.name, shape: [...t.shape], dtype: t.dtype, begin: shard.dataBytes, end: shard.dataBytes + t.bytes };
        shard.tensors.push(placed);
        shard.dataBytes += t.bytes;
        byName.set(t.name, { shard, tensor: placed });
      }
      this.shards.push(shard);
    }
    return byName;
  }

  private tempPath(tag: string): string {
    return newTemporary(join(this.dir, this.base), tag);
  }

  /** Runs operations one at a time (add() calls may overlap); a failed write poisons the sink. */
  private serialize<T>(op: () => Promise<T>): Promise<T> {
    const run = this.queue.then(async () => {
      if (this.state !== 'open') throw new Error(`${this.where}: cannot write: the sink is ${this.state}${this.state === 'failed' ? ' (an earlier write failed; call abort())' : ''}`);
      try {
        return await op();
      } catch (err) {
        this.state = 'failed';
        throw err;
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Checks the tensor at once (a refused tensor leaves the sink usable), claims its name, then
   * queues the write.
   */
  add(name: string, shape: number[], data: Float32Array, dtype?: FloatDType): Promise<void> {
    try {
      if (this.added.has(name)) throw new Error(`${this.where}: tensor "${name}" was already added`);
      const write = this.planned ? this.checkPlanned(this.planned, name, shape, data, dtype) : this.checkAppended(name, shape, data, dtype ?? this.defaultDtype);
      this.added.add(name);
      return this.serialize(write);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private checkPlanned(planned: Map<string, { shard: Shard; tensor: Placed }>, name: string, shape: number[], data: Float32Array, dtype: FloatDType | undefined): () => Promise<void> {
    const slot = planned.get(name);
    if (!slot) throw new Error(`${this.where}: tensor "${name}" is not in the plan given to the sink`);
    const { shard, tensor } = slot;
    if (shape.length !== tensor.shape.length || shape.some((d, i) => d !== tensor.shape[i])) {
      throw new Error(`${this.where}: tensor "${name}" is added with shape ${fmtShape(shape)} but the plan says ${fmtShape(tensor.shape)}`);
    }
    if (dtype !== undefined && dtype !== tensor.dtype) {
      throw new Error(`${this.where}: tensor "${name}" is added as ${dtype} but the plan says ${tensor.dtype}`);
    }
    checkDataLength(this.where, name, shape, data);
    return async () => {
      const fh = await this.openPlannedShard(shard);
      await writeEncoded(fh, data, tensor.dtype, (shard.dataStart as number) + tensor.begin);
    };
  }

  /** Creates a planned shard's file with its final header; its data is then written in place. */
  private async openPlannedShard(shard: Shard): Promise<FileHandle> {
    if (shard.fh) return shard.fh;
    const header = encodeHeader(shard.tensors, this.metadata);
    const fh = await open(shard.tmpPath, 'wx');
    shard.fh = fh;
    shard.dataStart = header.byteLength;
    await writeFully(fh, header, 0);
    return fh;
  }

  private checkAppended(name: string, shape: number[], data: Float32Array, dtype: FloatDType): () => Promise<void> {
    const bytes = checkTensorSpec(this.where, name, shape, dtype);
    checkDataLength(this.where, name, shape, data);
    return async () => {
      let shard = this.shards[this.shards.length - 1];
      const overflows = this.maxShardBytes !== undefined && shard !== undefined && shard.tensors.length > 0 && shard.dataBytes + bytes > this.maxShardBytes;
      if (shard === undefined || overflows) {
        if (shard) await this.assembleAppendedShard(shard);
        shard = await this.startAppendedShard();
      }
      await writeEncoded(shard.dataFh as FileHandle, data, dtype, shard.dataBytes);
      shard.tensors.push({ name, shape: [...shape], dtype, begin: shard.dataBytes, end: shard.dataBytes + bytes });
      shard.dataBytes += bytes;
    };
  }

  private async startAppendedShard(): Promise<Shard> {
    const k = this.shards.length;
    const shard: Shard = { tmpPath: this.tempPath(`part-${k}`), dataTmpPath: this.tempPath(`part-${k}.data`), tensors: [], dataBytes: 0 };
    this.shards.push(shard);
    shard.dataFh = await open(shard.dataTmpPath as string, 'wx+');
    return shard;
  }

  /** Writes the shard file: its header (now known), then the data streamed over from the temporary data file. */
  private async assembleAppendedShard(shard: Shard): Promise<void> {
    const header = encodeHeader(shard.tensors, this.metadata);
    const fh = await open(shard.tmpPath, 'wx');
    shard.fh = fh;
    await writeFully(fh, header, 0);
    await copyRange(shard.dataFh as FileHandle, 0, fh, header.byteLength, shard.dataBytes, shard.dataTmpPath as string);
    await (shard.dataFh as FileHandle).close();
    shard.dataFh = undefined;
    await unlink(shard.dataTmpPath as string);
    releaseTemporary(shard.dataTmpPath as string);
    shard.dataTmpPath = undefined;
  }

  finish(): Promise<void> {
    return this.serialize(async () => {
      if (this.planned) {
        const missing = [...this.planned.keys()].filter((n) => !this.added.has(n));
        if (missing.length > 0) {
          throw new Error(`${this.where}: ${missing.length} planned tensor(s) were never added, e.g. "${missing.slice(0, 3).join('", "')}"`);
        }
        for (const shard of this.shards) await this.openPlannedShard(shard);
      } else {
        if (this.shards.length === 0) await this.startAppendedShard(); // an empty but valid file
        await this.assembleAppendedShard(this.shards[this.shards.length - 1]);
      }
      const names = this.shards.map((_, i) => shardFileName(this.base, i, this.shards.length));
      const indexName = `${this.base}.safetensors.index.json`;
      const finalNames = this.shards.length > 1 ? [...names, indexName] : names;
      for (const n of finalNames) {
        if (await pathExists(join(this.dir, n), 'output')) throw new Error(`${join(this.dir, n)} already exists: write into an empty directory`);
      }
      // Flush before renaming so that a file under its final name is always complete, even after a crash.
      for (const shard of this.shards) {
        const fh = shard.fh as FileHandle;
        await fh.datasync();
        await fh.close();
        shard.fh = undefined;
      }
      for (let i = 0; i < this.shards.length; i++) {
        await rename(this.shards[i].tmpPath, join(this.dir, names[i]));
        releaseTemporary(this.shards[i].tmpPath);
      }
      if (this.shards.length > 1) await atomicWriteFile(join(this.dir, indexName), this.indexJson(names));
      this.finalNames = finalNames;
      this.state = 'finished';
    });
  }

  /** model.safetensors.index.json as transformers writes it: total data bytes and a sorted weight map. */
  private indexJson(names: string[]): string {
    const entries: Array<[string, string]> = [];
    let total = 0;
    this.shards.forEach((shard, i) => {
      for (const t of shard.tensors) {
        entries.push([t.name, names[i]]);
        total += t.end - t.begin;
      }
    });
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `${JSON.stringify({ metadata: { total_size: total }, weight_map: Object.fromEntries(entries) }, null, 2)}\n`;
  }

  async abort(): Promise<void> {
    await this.queue;
    if (this.state === 'finished' || this.state === 'aborted') return;
    this.state = 'aborted';
    for (const shard of this.shards) {
      await shard.fh?.close().catch(() => undefined);
      await shard.dataFh?.close().catch(() => undefined);
      for (const p of [shard.tmpPath, shard.dataTmpPath]) {
        if (!p) continue;
        await unlink(p).catch(() => undefined);
        releaseTemporary(p);
      }
    }
  }

  writtenFiles(): string[] {
    if (this.state !== 'finished') throw new Error(`${this.where}: writtenFiles() is known only after finish()`);
    return [...this.finalNames];
  }
}

/**
 * A TensorSink writing safetensors into `dir` (usually an AtomicDir's tmpPath). Tensors go to disk
 * as they are added; nothing appears under a final file name before finish(). Without a plan each
 * shard's data is appended to a temporary file and copied behind the header once the shard is
 * complete; with a plan, headers are written first and data lands directly in place (no copy),
 * and tensors may then be added in any order. `data` must not be modified until add() resolves.
 */
export async function createSafetensorsSink(dir: string, opts: SafetensorsSinkOptions = {}): Promise<SafetensorsSink> {
  const base = opts.baseName ?? 'model';
  if (base === '' || /[/\\]/.test(base)) throw new Error(`safetensors sink: baseName "${base}" must be a plain file name stem`);
  const dtype = opts.dtype ?? 'F32';
  if (!isFloatDType(dtype)) throw new Error(`safetensors sink: dtype ${String(dtype)} cannot be written (use F32, F16 or BF16)`);
  if (opts.maxShardBytes !== undefined && !(Number.isSafeInteger(opts.maxShardBytes) && opts.maxShardBytes > 0)) {
    throw new Error(`safetensors sink: maxShardBytes must be a positive integer, got ${opts.maxShardBytes}`);
  }
  const st = await lstat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new Error(`safetensors sink: ${dir} is not an existing directory`);
  return new StreamingSafetensorsSink(dir, base, opts.maxShardBytes, dtype, opts.metadata, opts.plan);
}
