/**
 * The finite check the decoders do on the stored bits (JS decodeIntoF32, the SIMD bf16 kernel):
 * it must agree with Number.isFinite on every 16-bit pattern, and every reader built on it must
 * name the first NaN or ±Inf at its true index, across decode chunks and kernel tails.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { RawTensorReader } from '../../src/io/raw-read.js';
import { openSafetensors, writeSafetensorsFile } from '../../src/io/safetensors.js';
import type { FloatDType, TensorLocation } from '../../src/io/types.js';
import { bf16Kernels } from '../../src/tensor/bf16-simd.js';
import { decodeIntoF32 } from '../../src/tensor/dtype.js';
import { makeTempDir } from '../helpers/synthetic.js';

const DTYPES: FloatDType[] = ['F32', 'F16', 'BF16'];
const BAD = [NaN, Infinity, -Infinity];

/** 16-bit patterns 0…65535 as little-endian bytes. */
function allPatterns(): Uint8Array {
  return new Uint8Array(new Uint16Array(1 << 16).map((_, i) => i).buffer);
}

describe('the decoders\' finite check', () => {
  for (const dtype of ['F16', 'BF16'] as const) {
    it(`${dtype}: agrees with Number.isFinite on every bit pattern, alone and in either half of a word`, () => {
      const bytes = allPatterns();
      const out = new Float32Array(3);
      for (let p = 0; p < 1 << 16; p++) {
        const one = bytes.subarray(2 * p, 2 * p + 2);
        const finite = decodeIntoF32(one, dtype, out.subarray(0, 1));
        assert.equal(finite, Number.isFinite(out[0]), `pattern ${p.toString(16)}`);
        // as the low and as the high half of a word, beside a finite 1.0
        const pair = new Uint8Array(6);
        pair.set(one, 0);
        pair.set(dtype === 'BF16' ? [0x80, 0x3f] : [0x00, 0x3c], 2);
        pair.set(one, 4);
        assert.equal(decodeIntoF32(pair.subarray(0, 4), dtype, out.subarray(0, 2)), finite, `pattern ${p.toString(16)} low`);
        assert.equal(decodeIntoF32(pair.subarray(2, 6), dtype, out.subarray(0, 2)), finite, `pattern ${p.toString(16)} high`);
      }
    });
  }

  it('F32: the largest finite values and subnormals are finite, NaN and ±Inf are not', () => {
    const f = new Float32Array([3.4028234663852886e38, -3.4028234663852886e38, 1e-45, -0]);
    const bytes = () => new Uint8Array(f.slice().buffer);
    assert.equal(decodeIntoF32(bytes(), 'F32', new Float32Array(4)), true);
    for (const v of BAD) {
      for (const at of [0, 2, 3]) {
        const g = f.slice();
        g[at] = v;
        assert.equal(decodeIntoF32(new Uint8Array(g.buffer), 'F32', new Float32Array(4)), false, `${v} at ${at}`);
      }
    }
  });

  it('the SIMD bf16 kernel agrees with the JS decoder on every bit pattern, in its groups of eight and in its tail', () => {
    const k = bf16Kernels();
    assert.ok(k, 'WebAssembly SIMD loads on Node ≥ 20');
    const bytes = allPatterns();
    const one = new Float32Array(1);
    const count = 11; // one kernel group of eight and a JS tail of three
    for (let p = 0; p < 1 << 16; p++) {
      const jsFinite = decodeIntoF32(bytes.subarray(2 * p, 2 * p + 2), 'BF16', one);
      k.bytesA.fill(0, 0, 2 * count);
      const at = p % count;
      k.bytesA.set(bytes.subarray(2 * p, 2 * p + 2), 2 * at);
      assert.equal(k.decode(count), jsFinite, `pattern ${p.toString(16)} at ${at}`);
    }
  });
});

describe('readers name the first NaN or ±Inf at its index', () => {
  // 16-bit tensors cross safetensors' 1 MiB decode chunks, the SIMD reader's 65,536-element
  // chunks, and end in a kernel tail (n is odd and not a multiple of 8); F32 is read whole.
  const N16 = (1 << 19) + 29;
  const N32 = 1001;
  const size = (dtype: FloatDType) => (dtype === 'F32' ? N32 : N16);
  const positions = (n: number) => [0, n === N32 ? 500 : (1 << 19) + 3, n - 1];
  const name = (v: number, at: number) => `${v}@${at}`;
  let dir: string;
  const file = (dtype: FloatDType) => join(dir, `${dtype}.safetensors`);

  before(async () => {
    dir = await makeTempDir('loraforge-finite-decode-');
    for (const dtype of DTYPES) {
      const n = size(dtype);
      const tensors = [{ name: 'finite', shape: [n], dtype, data: Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 2) }];
      for (const v of BAD) {
        for (const at of positions(n)) {
          const data = new Float32Array(n).fill(0.5);
          data[at] = v;
          if (at + 1 < n) data[at + 1] = NaN; // only the first one is named
          tensors.push({ name: name(v, at), shape: [n], dtype, data });
        }
      }
      await writeSafetensorsFile(file(dtype), tensors);
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const message = (path: string, t: string, v: number, at: number) =>
    `${path}: tensor "${t}" holds ${v} at element ${at}: the file is corrupt or the training diverged; fix or re-export that tensor`;

  for (const dtype of DTYPES) {
    it(`${dtype}: the safetensors reader and the blocking reader (SIMD and JS) report the same element`, async () => {
      const st = await openSafetensors(file(dtype));
      const readers = [new RawTensorReader(), new RawTensorReader({ simd: false })];
      try {
        const n = size(dtype);
        const out = new Float32Array(n);
        const finite = await st.read('finite');
        for (const r of readers) assert.deepEqual(r.readFiniteF32(st.locate('finite'), out), finite);
        for (const v of BAD) {
          for (const at of positions(n)) {
            const t = name(v, at);
            const expected = { message: message(file(dtype), t, v, at), file: file(dtype), tensor: t };
            await assert.rejects(st.readInto(t, out), expected, `safetensors ${t}`);
            for (const [i, r] of readers.entries()) {
              assert.throws(() => r.readFiniteF32(st.locate(t) as TensorLocation, out), expected, `${i === 0 ? 'SIMD' : 'JS'} ${t}`);
              assert.equal(Object.is(r.readF32(st.locate(t), out)[at], v), true, 'readF32 passes the value through');
            }
          }
        }
      } finally {
        for (const r of readers) r.close();
        await st.close();
      }
    });
  }
});
