/**
 * Storage dtypes <-> f32.
 *
 * All arithmetic happens in f32; F16 and BF16 exist only on disk. Conversions work on the bit
 * patterns (through Uint16/Uint32 views), so they are exact, keep the sign of zero and keep NaN a
 * NaN. Typed-array views use the host byte order while the formats are little-endian: every
 * platform Node runs on is little-endian, and `assertLittleEndianHost` makes that assumption loud.
 */
import { endianness } from 'node:os';
import type { FloatDType } from '../io/types.js';
import { bf16Kernels, f32BitsToBf16 } from './bf16-simd.js';
import { allFinite } from './finite.js';

/** Bytes per element of the safetensors dtypes we know (only F32/F16/BF16 are decoded). */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  F8_E8M0: 1,
};

const FLOAT_DTYPES: ReadonlySet<string> = new Set<FloatDType>(['F32', 'F16', 'BF16']);

/** Element size in bytes, or undefined for a dtype we do not know. */
export function dtypeByteSize(dtype: string): number | undefined {
  return Object.hasOwn(DTYPE_BYTES, dtype) ? DTYPE_BYTES[dtype] : undefined;
}

/** True for the dtypes loraforge converts to and from f32. */
export function isFloatDType(dtype: string): dtype is FloatDType {
  return FLOAT_DTYPES.has(dtype);
}

function assertLittleEndianHost(): void {
  if (endianness() !== 'LE') {
    throw new Error('loraforge reads and writes little-endian tensor data and needs a little-endian host');
  }
}
assertLittleEndianHost();

/** f16 bit pattern -> f32 bit pattern for all 65 536 inputs (256 KiB); built on first use. */
let f16ToF32Bits: Uint32Array | undefined;

function buildF16Table(): Uint32Array {
  const table = new Uint32Array(65536);
  const asFloat = new Float32Array(1);
  const asBits = new Uint32Array(asFloat.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0x1f) {
      // inf / NaN: widen the payload so a NaN stays a NaN (and keeps its quiet bit)
      table[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0;
    } else if (exp === 0) {
      // zero / subnormal: mant × 2^-24 is exact in f32
      asFloat[0] = mant * 2 ** -24;
      table[h] = (sign | asBits[0]) >>> 0;
    } else {
      // normal: rebias the exponent from 15 to 127
      table[h] = (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
    }
  }
  return table;
}

/**
 * `bytes` as 32-bit words, each holding two 16-bit elements (low half first: little-endian).
 * Two elements per load is what makes the loops below reach ~1.5 GB/s; copies only when the
 * view would be misaligned. An odd trailing element is left to the caller.
 */
function u32Pairs(bytes: Uint8Array): Uint32Array {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  return new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength >>> 2);
}

/** The last 16-bit element of `bytes` (for odd element counts). */
function lastU16(bytes: Uint8Array): number {
  const n = bytes.byteLength;
  return bytes[n - 2] | (bytes[n - 1] << 8);
}

function checkLength(bytes: Uint8Array, size: number, dtype: string, outLength: number): void {
  if (bytes.byteLength !== outLength * size) {
    throw new Error(`decode ${dtype}: ${bytes.byteLength} bytes cannot fill ${outLength} elements of ${size} bytes`);
  }
}

/**
 * 16-bit elements whose exponent bits are all set are NaN or ±Inf (bf16: 0x7f80, f16: 0x7c00).
 * `(w & mask) + carry` on a word of two elements reaches bit 15 of a half only then (`carry` is the
 * exponent's lowest bit), never carrying across halves; OR-ing it into the decode loops costs ~5%
 * where a second pass over the f32 output cost ~60%.
 */
const BF16_PAIR_EXPONENTS = 0x7f807f80;
const BF16_PAIR_CARRY = 0x00800080;
const F16_PAIR_EXPONENTS = 0x7c007c00;
const F16_PAIR_CARRY = 0x04000400;
const PAIR_OVERFLOW = 0x80008000;

/**
 * Decodes little-endian `bytes` of `dtype` into `out` (a Float32Array, possibly a subarray).
 * `bytes.byteLength` must be exactly `out.length` elements. Used to decode a tensor chunk by chunk.
 * Returns whether every value is finite (the caller locates a NaN or ±Inf in `out` when not).
 */
export function decodeIntoF32(bytes: Uint8Array, dtype: FloatDType, out: Float32Array): boolean {
  const n = out.length;
  const out32 = new Uint32Array(out.buffer, out.byteOffset, n);
  let acc = 0;
  if (dtype === 'F32') {
    checkLength(bytes, 4, dtype, n);
    out32.set(bytes.byteOffset % 4 === 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset, n) : new Uint32Array(bytes.slice().buffer));
    return allFinite(out);
  } else if (dtype === 'BF16') {
    checkLength(bytes, 2, dtype, n);
    // bf16 is the top half of an f32: widening is a shift, exact for every value incl. NaN/inf
    const pairs = u32Pairs(bytes);
    for (let i = 0, j = 0; i < pairs.length; i++, j += 2) {
      const w = pairs[i];
      acc |= (w & BF16_PAIR_EXPONENTS) + BF16_PAIR_CARRY;
      out32[j] = w << 16;
      out32[j + 1] = w & 0xffff0000;
    }
    if (n % 2 === 1) {
      const last = lastU16(bytes);
      acc |= (last & BF16_PAIR_EXPONENTS) + BF16_PAIR_CARRY;
      out32[n - 1] = last << 16;
    }
  } else if (dtype === 'F16') {
    checkLength(bytes, 2, dtype, n);
    const table = (f16ToF32Bits ??= buildF16Table());
    const pairs = u32Pairs(bytes);
    for (let i = 0, j = 0; i < pairs.length; i++, j += 2) {
      const w = pairs[i];
      acc |= (w & F16_PAIR_EXPONENTS) + F16_PAIR_CARRY;
      out32[j] = table[w & 0xffff];
      out32[j + 1] = table[w >>> 16];
    }
    if (n % 2 === 1) {
      const last = lastU16(bytes);
      acc |= (last & F16_PAIR_EXPONENTS) + F16_PAIR_CARRY;
      out32[n - 1] = table[last];
    }
  } else {
    throw new Error(`decode: dtype ${String(dtype)} is not one of F32, F16, BF16`);
  }
  return (acc & PAIR_OVERFLOW) === 0;
}

/** Decodes little-endian `bytes` of `dtype` into a fresh Float32Array (never aliases `bytes`). */
export function decodeToF32(bytes: Uint8Array, dtype: FloatDType): Float32Array {
  const size = dtype === 'F32' ? 4 : 2;
  if (bytes.byteLength % size !== 0) {
    throw new Error(`decode ${dtype}: ${bytes.byteLength} bytes is not a whole number of ${size}-byte elements`);
  }
  const out = new Float32Array(bytes.byteLength / size);
  decodeIntoF32(bytes, dtype, out);
  return out;
}

/** f32 bits (signed int32) -> f16 bits, round to nearest, ties to even; overflow -> inf; NaN stays a (quiet) NaN. */
function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const abs = (x & 0x7fffffff) >>> 0;
  if (abs >= 0x7f800000) {
    return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 | ((abs >>> 13) & 0x3ff) : 0);
  }
  // 65520 (= 0x477ff000) is the midpoint between f16 max 65504 and 65536; ties go to the even inf
  if (abs >= 0x477ff000) return sign | 0x7c00;
  if (abs >= 0x38800000) {
    // normal f16 (|x| ≥ 2^-14): rebias the exponent (127 -> 15) and round away 13 mantissa bits
    const m = abs - 0x38000000;
    return sign | ((m + 0xfff + ((m >>> 13) & 1)) >>> 13);
  }
  // subnormal f16: count units of 2^-24. |x| = mant × 2^(e-150) = mant × 2^-24 / 2^(126-e)
  const e = abs >>> 23;
  if (e < 102) return sign; // below 2^-25: rounds to zero (2^-25 itself is a tie that goes to even 0)
  const mant = (abs & 0x7fffff) | 0x800000;
  const shift = 126 - e; // 14..24
  let q = mant >>> shift;
  const rem = mant & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) === 1)) q++;
  return sign | q; // q may reach 0x400, which is the smallest normal: still the right bits
}

/** Encodes f32 values as little-endian `dtype` bytes (fresh array). */
export function encodeFromF32(data: Float32Array, dtype: FloatDType): Uint8Array {
  return encodeIntoBytes(data, dtype, new Uint8Array(data.length * (dtype === 'F32' ? 4 : 2)));
}

/**
 * Encodes f32 values as little-endian `dtype` bytes into the start of `out` (4-byte aligned, long
 * enough); returns the filled view. Lets writers reuse buffers: first-touching fresh memory costs
 * as much as encoding into it. bf16 goes through the SIMD kernels where they load.
 */
export function encodeIntoBytes(data: Float32Array, dtype: FloatDType, out: Uint8Array): Uint8Array {
  const n = data.length;
  const size = dtype === 'F32' ? 4 : 2;
  if (out.byteLength < n * size || out.byteOffset % 4 !== 0) {
    throw new Error(`encode: needs a 4-byte aligned buffer of ${n * size} bytes, got ${out.byteLength} at offset ${out.byteOffset}`);
  }
  const filled = out.subarray(0, n * size);
  if (dtype === 'F32') {
    filled.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return filled;
  }
  const k = dtype === 'BF16' ? bf16Kernels() : undefined;
  if (k) {
    for (let i = 0; i < n; i += k.chunk) {
      const count = Math.min(k.chunk, n - i);
      k.floats.set(data.subarray(i, i + count));
      k.encode(count);
      filled.set(k.bytesA.subarray(0, 2 * count), 2 * i);
    }
    return filled;
  }
  const bits = new Int32Array(data.buffer, data.byteOffset, n);
  const halves = new Uint16Array(out.buffer, out.byteOffset, n);
  // Two results per 32-bit store (~2x faster than 16-bit stores). One loop per dtype, each calling
  // its converter directly: a shared loop over a function variable turns polymorphic and runs
  // at half speed once both dtypes have been used.
  const pairs = new Uint32Array(out.buffer, out.byteOffset, n >>> 1);
  if (dtype === 'BF16') {
    for (let i = 0, j = 0; i < pairs.length; i++, j += 2) {
      pairs[i] = f32BitsToBf16(bits[j]) | (f32BitsToBf16(bits[j + 1]) << 16);
    }
    if (n % 2 === 1) halves[n - 1] = f32BitsToBf16(bits[n - 1]);
  } else if (dtype === 'F16') {
    for (let i = 0, j = 0; i < pairs.length; i++, j += 2) {
      pairs[i] = f32BitsToF16(bits[j]) | (f32BitsToF16(bits[j + 1]) << 16);
    }
    if (n % 2 === 1) halves[n - 1] = f32BitsToF16(bits[n - 1]);
  } else {
    throw new Error(`encode: dtype ${String(dtype)} is not one of F32, F16, BF16`);
  }
  return filled;
}

/** The values as they read back after being stored in `dtype` (simulates storage rounding). */
export function roundTo(data: Float32Array, dtype: FloatDType): Float32Array {
  return decodeToF32(encodeFromF32(data, dtype), dtype);
}
