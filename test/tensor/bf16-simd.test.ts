import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bf16Kernels, f32BitsToBf16 } from '../../src/tensor/bf16-simd.js';
import { decodeIntoF32 } from '../../src/tensor/dtype.js';

const kernels = bf16Kernels();

/** f32 bit patterns, so NaN payloads and −0 compare exactly. */
function bits(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

describe('bf16 SIMD kernels', () => {
  it('load on Node ≥ 20', () => assert.ok(kernels));

  it('widen every one of the 65,536 bf16 bit patterns exactly like the JS decoder', () => {
    const k = kernels!;
    const all = new Uint16Array(1 << 16).map((_, i) => i);
    const bytes = new Uint8Array(all.buffer);
    const expected = new Float32Array(all.length);
    decodeIntoF32(bytes, 'BF16', expected);
    for (let start = 0; start < all.length; start += k.chunk) {
      // 8·k + 3 elements per call, so the tail path runs too
      for (let off = start; off < Math.min(all.length, start + k.chunk); off += 1003) {
        const count = Math.min(1003, all.length - off);
        k.bytesA.set(bytes.subarray(2 * off, 2 * (off + count)));
        k.decode(count);
        assert.deepEqual(bits(k.floats.subarray(0, count)), bits(expected.subarray(off, off + count)), `patterns ${off}…`);
      }
    }
  });

  it('form Δ = B − A and its norms like the JS loop, tail included', () => {
    const k = kernels!;
    const n = 8 * 1000 + 7;
    const a = new Uint16Array(n).map((_, i) => 0x3c00 + ((i * 2654435761) >>> 22));
    const b = new Uint16Array(n).map((_, i) => 0xbc00 + ((i * 40503) & 0x3ff));
    const [fa, fb] = [new Float32Array(n), new Float32Array(n)];
    decodeIntoF32(new Uint8Array(a.buffer), 'BF16', fa);
    decodeIntoF32(new Uint8Array(b.buffer), 'BF16', fb);
    k.reset();
    k.bytesA.set(new Uint8Array(a.buffer));
    k.bytesB.set(new Uint8Array(b.buffer));
    k.delta(n);
    let deltaSq = 0;
    let baseSq = 0;
    for (let i = 0; i < n; i++) {
      const d = Math.fround(fb[i] - fa[i]);
      assert.equal(k.floats[i], d, `element ${i}`);
      deltaSq += d * d;
      baseSq += fa[i] * fa[i];
    }
    const sums = k.sums();
    assert.ok(Math.abs(sums.deltaSq - deltaSq) <= 1e-6 * deltaSq, `${sums.deltaSq} vs ${deltaSq}`);
    assert.ok(Math.abs(sums.baseSq - baseSq) <= 1e-6 * baseSq, `${sums.baseSq} vs ${baseSq}`);
    k.reset();
    assert.deepEqual(k.sums(), { deltaSq: 0, baseSq: 0 });
  });

  it('let a NaN or infinity in either input show in the sums', () => {
    const k = kernels!;
    for (const [where, pattern] of [['a', 0x7fc0], ['b', 0x7f80], ['a', 0xff80]] as const) {
      k.reset();
      const a = new Uint16Array(16).fill(0x3f80);
      const b = new Uint16Array(16).fill(0x4000);
      (where === 'a' ? a : b)[5] = pattern;
      k.bytesA.set(new Uint8Array(a.buffer));
      k.bytesB.set(new Uint8Array(b.buffer));
      k.delta(16);
      assert.ok(!Number.isFinite(k.sums().deltaSq), `${where} holding ${pattern.toString(16)}`);
    }
  });

  it('round f32 to bf16 like the scalar formula, NaN quieted, tail included', () => {
    const k = kernels!;
    const n = 8 * 5000 + 5;
    const bits = new Uint32Array(n).map((_, i) => (Math.imul(i + 1, 2654435761) ^ (i << 7)) >>> 0);
    // ties to even, the largest finite values (which round to inf), infinities and NaNs
    bits.set([0x3f808000, 0x3f818000, 0x7f7fffff, 0x7f7f8000, 0x7f800000, 0xff800000, 0x7f800001, 0xffc00001, 0x00008000], n - 9);
    k.floats.set(new Float32Array(bits.buffer));
    k.encode(n);
    const got = new Uint16Array(k.bytesA.buffer, k.bytesA.byteOffset, n);
    for (let i = 0; i < n; i++) assert.equal(got[i], f32BitsToBf16(bits[i] | 0), `bits ${bits[i].toString(16)}`);
    assert.deepEqual([...got.subarray(n - 9)], [0x3f80, 0x3f82, 0x7f80, 0x7f80, 0x7f80, 0xff80, 0x7fc0, 0xffc0, 0x0000]);
  });

  it('refuse more elements than a chunk', () => {
    assert.throws(() => kernels!.delta(kernels!.chunk + 1), /not between 0 and the chunk size/);
  });

  it('keep their buffers off page boundaries, so copies to and from page-aligned arrays do not alias', () => {
    // the module's memory starts on a page; tensors' arrays usually do too (see bf16-simd.ts)
    for (const view of [kernels!.bytesA, kernels!.bytesB, kernels!.floats]) {
      assert.notEqual(view.byteOffset % 4096, 0);
      assert.equal(view.byteOffset % 16, 0, 'SIMD loads stay 16-byte aligned');
    }
    const offsets = new Set([kernels!.bytesA, kernels!.bytesB, kernels!.floats].map((v) => v.byteOffset % 4096));
    assert.equal(offsets.size, 3, 'the kernels read one region while writing another: they must not alias each other either');
  });
});
