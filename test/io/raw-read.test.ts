import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { RawTensorReader } from '../../src/io/raw-read.js';
import { roundTo } from '../../src/tensor/dtype.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

const values = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k) * 3);

describe('RawTensorReader', () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir('loraforge-raw-read-');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    it(`reads located ${dtype} tensors of a sharded checkpoint as the async reader does`, async () => {
      const folder = join(dir, dtype);
      const tensors = { x: { shape: [7, 5], data: values(35, 0.3) }, y: { shape: [33], data: values(33, 1.7) }, z: { shape: [4, 4], data: values(16, 2.1) } };
      await writeModelFolder(folder, tensors, { dtype, maxShardBytes: 150 });
      const ckpt = await openCheckpoint(folder);
      const reader = new RawTensorReader();
      try {
        assert.ok(ckpt.files.length > 1, 'the checkpoint is sharded');
        for (const [name, t] of Object.entries(tensors)) {
          const loc = ckpt.locate(name);
          assert.ok(ckpt.files.includes(loc.path));
          const out = reader.readF32(loc, new Float32Array(t.data.length));
          assert.deepEqual(out, roundTo(t.data, dtype));
          assert.deepEqual(out, await ckpt.read(name));
        }
      } finally {
        reader.close();
        await ckpt.close();
      }
    });
  }

  it('forms Δ of two BF16 tensors like decoding both and subtracting, longer than a chunk and with a ragged end', async () => {
    const folder = join(dir, 'delta');
    const n = (1 << 16) * 2 + 13;
    const a = values(n, 0.37);
    const b = Float32Array.from(a, (x, i) => x + (i % 3 === 0 ? 0 : Math.cos(i) * 0.01));
    await writeModelFolder(join(folder, 'a'), { t: { shape: [n], data: a } }, { dtype: 'BF16' });
    await writeModelFolder(join(folder, 'b'), { t: { shape: [n], data: b } }, { dtype: 'BF16' });
    const [ca, cb] = [await openCheckpoint(join(folder, 'a')), await openCheckpoint(join(folder, 'b'))];
    const reader = new RawTensorReader();
    try {
      const out = new Float32Array(n);
      const sums = reader.deltaBf16(ca.locate('t'), cb.locate('t'), out);
      const [ra, rb] = [roundTo(a, 'BF16'), roundTo(b, 'BF16')];
      let deltaSq = 0;
      let baseSq = 0;
      for (let i = 0; i < n; i++) {
        assert.equal(out[i], Math.fround(rb[i] - ra[i]), `element ${i}`);
        deltaSq += out[i] * out[i];
        baseSq += ra[i] * ra[i];
      }
      assert.ok(sums, 'the SIMD kernels load');
      assert.ok(Math.abs(sums.deltaSq - deltaSq) <= 1e-6 * deltaSq);
      assert.ok(Math.abs(sums.baseSq - baseSq) <= 1e-6 * baseSq);
      assert.equal(reader.deltaBf16(ca.locate('t'), { ...cb.locate('t'), dtype: 'F32' }, out), undefined, 'only for BF16 pairs');
      const plain = new RawTensorReader({ simd: false });
      try {
        assert.equal(plain.deltaBf16(ca.locate('t'), cb.locate('t'), out), undefined, 'no SIMD: the caller decodes and subtracts');
        assert.deepEqual(plain.readF32(ca.locate('t'), new Float32Array(n)), reader.readF32(ca.locate('t'), new Float32Array(n)), 'JS and SIMD decoding agree');
        assert.deepEqual(plain.readF32(ca.locate('t'), new Float32Array(n)), ra);
      } finally {
        plain.close();
      }
    } finally {
      reader.close();
      await Promise.all([ca.close(), cb.close()]);
    }
  });

  it('names the file and tensor when the file is shorter than its header says', async () => {
    const folder = join(dir, 'short');
    await writeModelFolder(folder, { a: { shape: [64], data: values(64, 0.1) }, b: { shape: [64], data: values(64, 0.2) } });
    const ckpt = await openCheckpoint(folder);
    const loc = ckpt.locate('b');
    await ckpt.close();
    await truncate(loc.path, loc.offset + 10);
    const reader = new RawTensorReader();
    try {
      assert.throws(() => reader.readF32(loc, new Float32Array(64)), new RegExp(`${loc.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: tensor "b": the file ended 246 bytes early`));
      assert.throws(() => reader.readBytes(loc, new Uint8Array(8), 252), /tensor "b": bytes \[252, 260\) lie outside its 256/);
      assert.throws(() => reader.readF32(loc, new Float32Array(63)), /tensor "b": needs an array of 64 elements, got 63/);
      assert.throws(() => reader.readF32({ ...loc, dtype: 'I8' }, new Float32Array(64)), /tensor "b" has dtype I8/);
    } finally {
      reader.close();
    }
  });

  it('keeps only a few files open however many it reads from', { skip: !existsSync('/proc/self/fd') && 'needs /proc' }, async () => {
    const folder = join(dir, 'many');
    const tensors = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`t${i}`, { shape: [40], data: values(40, i + 1) }]));
    await writeModelFolder(folder, tensors, { maxShardBytes: 100 });
    const ckpt = await openCheckpoint(folder);
    assert.equal(ckpt.files.length, 12);
    const reader = new RawTensorReader();
    const openFiles = () => readdirSync('/proc/self/fd').length;
    const before = openFiles();
    try {
      for (const name of Object.keys(tensors)) assert.deepEqual(reader.readF32(ckpt.locate(name), new Float32Array(40)), tensors[name].data);
      assert.equal(openFiles() - before, 8);
      reader.close();
      assert.equal(openFiles(), before);
    } finally {
      reader.close();
      await ckpt.close();
    }
  });
});
