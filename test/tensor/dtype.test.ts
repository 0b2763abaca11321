import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeIntoF32, decodeToF32, dtypeByteSize, encodeFromF32, isFloatDType, roundTo } from '../../src/tensor/dtype.js';

// ---- independent references: plain arithmetic on doubles, no bit tricks ----

/** Round half to even on a non-negative double. */
function roundHalfEven(q: number): number {
  const f = Math.floor(q);
  const d = q - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function floorLog2(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  return e;
}

/** Nearest value of a binary format with `p` significand bits, minimum normal exponent `emin`, largest finite `max`. */
function roundToFormat(v: number, p: number, emin: number, max: number): number {
  if (Number.isNaN(v) || v === 0 || !Number.isFinite(v)) return v;
  const a = Math.abs(v);
  const ulp = 2 ** (Math.max(floorLog2(a), emin) - (p - 1));
  const r = roundHalfEven(a / ulp) * ulp;
  return Math.sign(v) * (r > max ? Infinity : r);
}

const F16_MAX = 65504;
const BF16_MAX = (2 - 2 ** -7) * 2 ** 127;
const refF16 = (v: number) => roundToFormat(v, 11, -14, F16_MAX);
const refBf16 = (v: number) => roundToFormat(v, 8, -126, BF16_MAX);

/** Value of an f16 bit pattern from its fields. */
function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  if (exp === 0) return sign * mant * 2 ** -24;
  return sign * 2 ** (exp - 15) * (1 + mant / 1024);
}

/** Value of a bf16 bit pattern from its fields. */
function bf16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 7) & 0xff;
  const mant = h & 0x7f;
  if (exp === 0xff) return mant === 0 ? sign * Infinity : NaN;
  if (exp === 0) return sign * mant * 2 ** -133;
  return sign * 2 ** (exp - 127) * (1 + mant / 128);
}

function bitsOf(f: Float32Array): Uint32Array {
  return new Uint32Array(f.buffer, f.byteOffset, f.length);
}

function u16Bytes(words: number[] | Uint16Array): Uint8Array {
  return new Uint8Array(Uint16Array.from(words).buffer);
}

/** Same number, with -0 and +0 distinguished and NaN equal to NaN. */
function sameValue(actual: number, expected: number, what: string): void {
  assert.ok(Object.is(actual, expected), `${what}: got ${actual}, expected ${expected}`);
}

/** Tiny deterministic LCG (numerical recipes constants). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s;
  };
}

const EDGE_VALUES: number[] = [
  0, -0, 1, -1, 0.1, -3.75, 1e-3, 1e6, 3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45, 1.1754943508222875e-38,
  Infinity, -Infinity,
  // bf16 ties: 1 + 2^-8 (to even 1), 1 + 3·2^-8 (to even 1 + 2^-6), just above a tie (up)
  1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -23, -(1 + 2 ** -8),
  // bf16 overflow: largest finite, and the midpoint above it (ties to even = inf)
  BF16_MAX, BF16_MAX + 2 ** 119, BF16_MAX + 2 ** 119 - 2 ** 104,
  // f16 ties and range ends
  1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65519, 65520, -65520, 65536, 1e5,
  // f16 subnormals: smallest, the tie below it (to 0), just above the tie, 1.5 units (to 2), below smallest normal
  2 ** -24, 2 ** -25, 2 ** -25 + 2 ** -40, 3 * 2 ** -25, 5 * 2 ** -25, 2 ** -14, 2 ** -14 - 2 ** -25, 2 ** -14 - 2 ** -24, 2 ** -26, -(2 ** -24),
  // bf16 subnormals
  2 ** -133, 2 ** -134, 3 * 2 ** -134, 2 ** -126 - 2 ** -134,
];

describe('dtypeByteSize', () => {
  it('knows the element sizes of the safetensors dtypes', () => {
    const expected: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1 };
    for (const [d, n] of Object.entries(expected)) assert.equal(dtypeByteSize(d), n, d);
  });
  it('returns undefined for unknown names, including Object prototype keys', () => {
    for (const d of ['Q4_0', 'f32', '', 'toString', '__proto__', 'constructor']) assert.equal(dtypeByteSize(d), undefined, d);
  });
  it('isFloatDType accepts exactly F32, F16, BF16', () => {
    assert.deepEqual(['F32', 'F16', 'BF16', 'F64', 'I8', 'bf16'].map(isFloatDType), [true, true, true, false, false, false]);
  });
});

describe('decodeToF32', () => {
  it('decodes all 65536 f16 patterns exactly (subnormals, inf, nan)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const out = decodeToF32(u16Bytes(all), 'F16');
    for (let h = 0; h < 65536; h++) sameValue(out[h], f16Value(h), `f16 0x${h.toString(16)}`);
  });
  it('decodes all 65536 bf16 patterns exactly', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const out = decodeToF32(u16Bytes(all), 'BF16');
    for (let h = 0; h < 65536; h++) sameValue(out[h], bf16Value(h), `bf16 0x${h.toString(16)}`);
  });
  it('decodes F32 bit-exactly, NaN payloads included', () => {
    const bits = Uint32Array.from([0x3f800000, 0x80000000, 0x7fc00001, 0xff800001, 0x00000001, 0x7f7fffff]);
    const out = decodeToF32(new Uint8Array(bits.buffer), 'F32');
    assert.deepEqual(bitsOf(out), bits);
  });
  it('handles unaligned byte offsets and odd element counts for every dtype', () => {
    const next = lcg(7);
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      for (const count of [1, 2, 7, 1001]) {
        const size = dtype === 'F32' ? 4 : 2;
        const raw = new Uint8Array(count * size).map(() => next() & 0xff);
        // avoid NaN patterns so the comparison below is plain numeric
        const expected = decodeToF32(raw, dtype).map((v) => (Number.isNaN(v) ? 0 : v));
        const clean = encodeFromF32(expected, dtype);
        for (const shift of [1, 2, 3]) {
          const host = new Uint8Array(clean.byteLength + 4);
          host.set(clean, shift);
          const view = host.subarray(shift, shift + clean.byteLength);
          assert.deepEqual(decodeToF32(view, dtype), expected, `${dtype} n=${count} offset ${shift}`);
        }
      }
    }
  });
  it('decodeIntoF32 fills a subarray and leaves the rest alone', () => {
    const out = new Float32Array(5).fill(9);
    decodeIntoF32(u16Bytes([0x3c00, 0xc000, 0x3800]), 'F16', out.subarray(1, 4));
    assert.deepEqual([...out], [9, 1, -2, 0.5, 9]);
  });
  it('refuses byte counts that do not fit the dtype', () => {
    assert.throws(() => decodeToF32(new Uint8Array(3), 'BF16'), /3 bytes/);
    assert.throws(() => decodeToF32(new Uint8Array(6), 'F32'), /6 bytes/);
    assert.throws(() => decodeIntoF32(new Uint8Array(4), 'F16', new Float32Array(3)), /4 bytes cannot fill 3/);
  });
});

describe('encodeFromF32', () => {
  it('rounds edge values to nearest-even exactly as an independent formula (bf16 and f16)', () => {
    const data = Float32Array.from(EDGE_VALUES);
    for (const [dtype, ref] of [['BF16', refBf16], ['F16', refF16]] as const) {
      const back = roundTo(data, dtype);
      for (let i = 0; i < data.length; i++) sameValue(back[i], ref(data[i]), `${dtype}(${data[i]})`);
    }
  });
  it('matches the formula on 200k random f32 bit patterns', () => {
    const next = lcg(12345);
    const bits = new Uint32Array(200_000).map(() => next());
    const data = new Float32Array(bits.buffer);
    for (const [dtype, ref] of [['BF16', refBf16], ['F16', refF16]] as const) {
      const back = roundTo(data, dtype);
      for (let i = 0; i < data.length; i++) {
        const expected = ref(data[i]);
        if (Number.isNaN(expected)) assert.ok(Number.isNaN(back[i]), `${dtype} NaN 0x${bits[i].toString(16)}`);
        else sameValue(back[i], expected, `${dtype}(0x${bits[i].toString(16)})`);
      }
    }
  });
  it('re-encodes every non-NaN f16/bf16 pattern to the same bits', () => {
    for (const [dtype, valueOf] of [['F16', f16Value], ['BF16', bf16Value]] as const) {
      const patterns = Uint16Array.from({ length: 65536 }, (_, h) => h).filter((h) => !Number.isNaN(valueOf(h)));
      const encoded = encodeFromF32(decodeToF32(u16Bytes(patterns), dtype), dtype);
      assert.deepEqual(new Uint16Array(encoded.buffer), patterns, dtype);
    }
  });
  it('keeps NaN a NaN (quiet, signaling, either sign) and keeps the sign of zero', () => {
    const nanBits = Uint32Array.from([0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fffffff, 0x7f802000]);
    const nans = new Float32Array(nanBits.buffer);
    for (const dtype of ['F16', 'BF16'] as const) {
      const words = new Uint16Array(encodeFromF32(nans, dtype).buffer);
      const exp = dtype === 'F16' ? 0x7c00 : 0x7f80;
      for (let i = 0; i < words.length; i++) {
        assert.equal(words[i] & exp, exp, `${dtype} NaN exponent`);
        assert.notEqual(words[i] & ~exp & 0x7fff, 0, `${dtype} NaN mantissa must stay non-zero`);
        assert.equal(words[i] >> 15, nanBits[i] >>> 31, `${dtype} NaN sign`);
      }
      sameValue(roundTo(Float32Array.of(-0), dtype)[0], -0, `${dtype} -0`);
    }
  });
  it('produces known bit patterns', () => {
    const data = Float32Array.of(1, -2, 65504, 65520, 2 ** -24, 1 + 2 ** -8);
    assert.deepEqual([...new Uint16Array(encodeFromF32(data, 'F16').buffer)], [0x3c00, 0xc000, 0x7bff, 0x7c00, 0x0001, 0x3c04]);
    assert.deepEqual([...new Uint16Array(encodeFromF32(data, 'BF16').buffer)], [0x3f80, 0xc000, 0x4780, 0x4780, 0x3380, 0x3f80]);
  });
  it('F32 encoding is a bit-exact copy that does not alias the input', () => {
    const data = Float32Array.of(1.5, -0, NaN);
    const bytes = encodeFromF32(data, 'F32');
    assert.deepEqual(new Uint8Array(bytes), new Uint8Array(data.buffer));
    data[0] = 7;
    assert.equal(new Float32Array(bytes.buffer)[0], 1.5);
  });
  it('works on subarrays and odd lengths (the pairwise fast path has a tail)', () => {
    const whole = Float32Array.from(EDGE_VALUES);
    for (const dtype of ['F16', 'BF16'] as const) {
      const part = whole.subarray(3, 10);
      assert.deepEqual(roundTo(part, dtype), roundTo(Float32Array.from(part), dtype));
      assert.equal(encodeFromF32(part, dtype).byteLength, 14);
    }
  });
});
