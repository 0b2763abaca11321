import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gguf as hfGguf } from '@huggingface/gguf';
import {
  createGgufSink,
  GgmlType,
  GgufValueType,
  kvArray,
  kvBool,
  kvF32,
  kvF64,
  kvI16,
  kvI32,
  kvI64,
  kvI8,
  kvString,
  kvU16,
  kvU32,
  kvU64,
  kvU8,
  openGguf,
  type GgufKv,
  type GgufTensorPlan,
} from '../../src/io/gguf.js';
import type { FloatDType } from '../../src/io/types.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'loraforge-gguf-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const padTo = (n: number, a: number) => Math.ceil(n / a) * a;

/** Values exactly representable in F16 and BF16 (k/8 with |k| < 256), so every encoding is exact. */
function exactValues(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (((i * 37 + seed * 11) % 255) - 127) / 8;
  return out;
}

/** Independent F16 encoder for values of the form k/8 (normal numbers or zero). */
function f16Bits(v: number): number {
  if (v === 0) return Object.is(v, -0) ? 0x8000 : 0;
  const sign = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  const e = Math.floor(Math.log2(a));
  const mant = (a / 2 ** e - 1) * 1024;
  assert.ok(Number.isInteger(mant), `test value ${v} is not exact in F16`);
  return sign | ((e + 15) << 10) | mant;
}

function expectedBytes(data: Float32Array, dtype: FloatDType): Buffer {
  if (dtype === 'F32') return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const out = Buffer.alloc(data.length * 2);
  const u32 = new Uint32Array(Float32Array.from(data).buffer);
  for (let i = 0; i < data.length; i++) {
    out.writeUInt16LE(dtype === 'BF16' ? u32[i]! >>> 16 : f16Bits(data[i]!), i * 2);
  }
  return out;
}

const TOKENS = ['<s>', '</s>', 'héllo', '✓', '🚀', '', ' world', '\u0000nul'];
const KVS: Array<[string, GgufKv]> = [
  ['general.architecture', kvString('llama')],
  ['general.type', kvString('adapter')],
  ['adapter.type', kvString('lora')],
  ['adapter.lora.alpha', kvF32(16)],
  ['test.f32.inexact', kvF32(1.1)],
  ['test.u8', kvU8(255)],
  ['test.i8', kvI8(-128)],
  ['test.u16', kvU16(65535)],
  ['test.i16', kvI16(-32768)],
  ['test.u32', kvU32(4294967295)],
  ['test.i32', kvI32(-123456789)],
  ['test.bool.true', kvBool(true)],
  ['test.bool.false', kvBool(false)],
  ['test.u64.big', kvU64(2n ** 53n + 1n)],
  ['test.u64.small', kvU64(42)],
  ['test.i64', kvI64(-(2n ** 40n))],
  ['test.f64', kvF64(Math.PI)],
  ['test.string.unicode', kvString('héllo ✓ 🚀')],
  ['test.string.empty', kvString('')],
  ['tokenizer.ggml.tokens', kvArray(GgufValueType.STRING, TOKENS)],
  ['test.arr.i32', kvArray(GgufValueType.INT32, [1, -2, 3, 2147483647])],
  ['test.arr.f32', kvArray(GgufValueType.FLOAT32, new Float32Array([0.25, -1.5, 3]))],
  ['test.arr.bool', kvArray(GgufValueType.BOOL, [true, false, true])],
  ['test.arr.u64', kvArray(GgufValueType.UINT64, [1n, 2n ** 60n])],
  ['test.arr.empty', kvArray(GgufValueType.UINT32, [])],
];

/** Plain values our reader (and @huggingface/gguf) should report for KVS. */
const EXPECTED_PLAIN: Record<string, unknown> = {
  'general.architecture': 'llama',
  'general.type': 'adapter',
  'adapter.type': 'lora',
  'adapter.lora.alpha': 16,
  'test.f32.inexact': Math.fround(1.1),
  'test.u8': 255,
  'test.i8': -128,
  'test.u16': 65535,
  'test.i16': -32768,
  'test.u32': 4294967295,
  'test.i32': -123456789,
  'test.bool.true': true,
  'test.bool.false': false,
  'test.u64.big': 2n ** 53n + 1n,
  'test.u64.small': 42,
  'test.i64': -(2 ** 40),
  'test.f64': Math.PI,
  'test.string.unicode': 'héllo ✓ 🚀',
  'test.string.empty': '',
  'tokenizer.ggml.tokens': TOKENS,
  'test.arr.i32': [1, -2, 3, 2147483647],
  'test.arr.f32': [0.25, -1.5, 3],
  'test.arr.bool': [true, false, true],
  'test.arr.u64': [1, 2n ** 60n],
  'test.arr.empty': [],
};

const TENSORS: Array<{ name: string; shape: number[]; dtype: FloatDType; data: Float32Array }> = [
  { name: 'blk.0.attn_q.weight.lora_a', shape: [3, 5], dtype: 'F32', data: exactValues(15, 1) },
  { name: 'blk.0.attn_q.weight.lora_b', shape: [7], dtype: 'F16', data: exactValues(7, 2) },
  { name: 'odd.bf16', shape: [2, 3, 5], dtype: 'BF16', data: exactValues(30, 3) },
  { name: 'four.dims', shape: [2, 1, 3, 5], dtype: 'F16', data: exactValues(30, 4) },
  { name: 'big.f32', shape: [33, 3], dtype: 'F32', data: exactValues(99, 5) },
];

async function writeTestFile(path: string, opts: { planned: boolean; alignment?: number }): Promise<void> {
  const plan: GgufTensorPlan[] | undefined = opts.planned
    ? TENSORS.map(({ name, shape, dtype }) => ({ name, shape, dtype }))
    : undefined;
  const sink = await createGgufSink(path, { kv: KVS, alignment: opts.alignment, plan });
  // Planned sinks accept tensors in any order; unplanned ones store them in the order added.
  const order = opts.planned ? [...TENSORS].reverse() : TENSORS;
  for (const t of order) await sink.add(t.name, t.shape, t.data, t.dtype);
  await sink.finish();
}

function expectedOffsets(alignment: number): number[] {
  const offsets: number[] = [];
  let at = 0;
  for (const t of TENSORS) {
    offsets.push(at);
    at += padTo(t.data.length * (t.dtype === 'F32' ? 4 : 2), alignment);
  }
  return offsets;
}

const GGML_OF: Record<FloatDType, number> = { F32: 0, F16: 1, BF16: 30 };

describe('GGUF writer checked by @huggingface/gguf', () => {
  for (const alignment of [32, 64]) {
    it(`writes KVs, tensor infos, aligned offsets and data (alignment ${alignment})`, async () => {
      const path = join(dir, `hf-${alignment}.gguf`);
      await writeTestFile(path, { planned: false, alignment });
      const parsed = await hfGguf(path, { allowLocalFile: true, typedMetadata: true });

      assert.equal(parsed.metadata.version, 3);
      const typed = parsed.typedMetadata as unknown as Record<string, { value: unknown; type: number; subType?: number }>;
      for (const [key, kv] of KVS) {
        const want = EXPECTED_PLAIN[key];
        const got = typed[key]!;
        assert.equal(got.type, kv.type, key);
        if (kv.type === GgufValueType.ARRAY) {
          assert.equal(got.subType, kv.elemType, `${key} element type`);
          // @huggingface/gguf returns every 64-bit integer as bigint.
          assert.deepEqual(got.value, (want as unknown[]).map((v) => (kv.elemType === GgufValueType.UINT64 ? BigInt(v as number) : v)), key);
        } else if (kv.type === GgufValueType.UINT64 || kv.type === GgufValueType.INT64) {
          assert.equal(got.value, BigInt(want as number), key);
        } else {
          assert.deepEqual(got.value, want, key);
        }
      }
      const alignKv = typed['general.alignment'];
      if (alignment === 32) assert.equal(alignKv, undefined, 'default alignment is not written');
      else assert.deepEqual(alignKv, { value: alignment, type: GgufValueType.UINT32 });
      assert.equal(Number(parsed.metadata.kv_count), KVS.length + (alignment === 32 ? 0 : 1));

      const offsets = expectedOffsets(alignment);
      assert.equal(parsed.tensorInfos.length, TENSORS.length);
      const bytes = await readFile(path);
      const dataStart = Number(parsed.tensorDataOffset);
      assert.equal(dataStart % alignment, 0);
      // Padding between the tensor infos and the data section is zeros.
      assert.ok(bytes.subarray(parsed.tensorInfoByteRange[1], dataStart).every((b) => b === 0));
      TENSORS.forEach((t, i) => {
        const info = parsed.tensorInfos[i]!;
        assert.equal(info.name, t.name);
        assert.deepEqual(info.shape.map(Number), [...t.shape].reverse(), `${t.name} ggml dims`);
        assert.equal(info.dtype, GGML_OF[t.dtype]);
        assert.equal(Number(info.offset), offsets[i]);
        const start = dataStart + offsets[i]!;
        const want = expectedBytes(t.data, t.dtype);
        assert.ok(bytes.subarray(start, start + want.length).equals(want), `${t.name} raw bytes`);
        const padEnd = start + padTo(want.length, alignment);
        assert.ok(bytes.subarray(start + want.length, padEnd).every((b) => b === 0), `${t.name} padding`);
      });
      const last = TENSORS.at(-1)!;
      assert.equal(bytes.length, dataStart + offsets.at(-1)! + padTo(last.data.length * 4, alignment));
    });
  }
});

describe('GGUF reader', () => {
  it('reads back metadata, tensor infos and bit-exact data', async () => {
    const path = join(dir, 'read.gguf');
    await writeTestFile(path, { planned: false, alignment: 64 });
    const file = await openGguf(path);
    try {
      assert.equal(file.version, 3);
      assert.equal(file.alignment, 64);
      assert.equal(file.dataOffset % 64, 0);
      for (const [key] of KVS) assert.deepEqual(file.kv.get(key), EXPECTED_PLAIN[key], key);
      assert.equal(file.kv.get('general.alignment'), 64);
      assert.equal(file.metadata.get('test.arr.u64')?.type, GgufValueType.ARRAY);
      const offsets = expectedOffsets(64);
      TENSORS.forEach((t, i) => {
        const e = file.tensors[i]!;
        assert.equal(e.name, t.name);
        assert.deepEqual(e.shape, t.shape);
        assert.deepEqual(e.ggmlDims, [...t.shape].reverse());
        assert.equal(e.type, GGML_OF[t.dtype]);
        assert.equal(e.offset, offsets[i]);
        assert.equal(e.bytes, t.data.length * (t.dtype === 'F32' ? 4 : 2));
        assert.deepEqual(file.info(t.name), { name: t.name, dtype: t.dtype, shape: t.shape, bytes: e.bytes });
      });
      assert.deepEqual(file.list().map((t) => t.name), TENSORS.map((t) => t.name));
      for (const t of TENSORS) assert.deepEqual(await file.read(t.name), t.data, t.name);
      assert.equal(file.has('four.dims'), true);
      assert.equal(file.has('nope'), false);
      assert.throws(() => file.info('nope'), (e: Error) => e.message.includes(path) && e.message.includes('"nope"'));
    } finally {
      await file.close();
    }
  });

  it('handles a 150k-token string array efficiently', async (t) => {
    const path = join(dir, 'vocab.gguf');
    const tokens = Array.from({ length: 150_000 }, (_, i) => (i % 7 === 0 ? `▁tök${i}` : `t${i}`));
    const scores = new Float32Array(tokens.length).map((_, i) => -i / 4);
    const t0 = performance.now();
    const sink = await createGgufSink(path, {
      kv: [
        ['tokenizer.ggml.tokens', kvArray(GgufValueType.STRING, tokens)],
        ['tokenizer.ggml.scores', kvArray(GgufValueType.FLOAT32, scores)],
      ],
    });
    await sink.add('w', [2, 2], new Float32Array([1, 2, 3, 4]));
    await sink.finish();
    const t1 = performance.now();
    const file = await openGguf(path);
    const t2 = performance.now();
    try {
      assert.deepEqual(file.kv.get('tokenizer.ggml.tokens'), tokens);
      assert.deepEqual(file.kv.get('tokenizer.ggml.scores'), Array.from(scores));
      assert.deepEqual(await file.read('w'), new Float32Array([1, 2, 3, 4]));
    } finally {
      await file.close();
    }
    const parsed = await hfGguf(path, { allowLocalFile: true });
    assert.deepEqual((parsed.metadata as Record<string, unknown>)['tokenizer.ggml.tokens'], tokens);
    t.diagnostic(`150k tokens + scores: write ${(t1 - t0).toFixed(0)} ms, open ${(t2 - t1).toFixed(0)} ms`);
    assert.ok(t2 - t0 < 5000, 'writing and parsing a 150k vocabulary should take well under 5 s');
  });
});

describe('GGUF sink modes and atomicity', () => {
  it('planned and unplanned files are byte-identical', async () => {
    for (const alignment of [32, 64]) {
      const a = join(dir, `plain-${alignment}.gguf`);
      const b = join(dir, `planned-${alignment}.gguf`);
      await writeTestFile(a, { planned: false, alignment });
      await writeTestFile(b, { planned: true, alignment });
      assert.ok((await readFile(a)).equals(await readFile(b)), `alignment ${alignment}`);
    }
  });

  it('shows the file only after finish and leaves nothing behind on abort', async () => {
    for (const planned of [false, true]) {
      const sub = await mkdtemp(join(dir, 'atomic-'));
      const path = join(sub, 'out.gguf');
      const plan = planned ? [{ name: 'x', shape: [2], dtype: 'F32' as const }] : undefined;
      const sink = await createGgufSink(path, { kv: [], plan });
      await sink.add('x', [2], new Float32Array([1, 2]));
      await assert.rejects(access(path), 'final file must not exist before finish');
      await sink.abort();
      assert.deepEqual(await readdir(sub), [], `planned=${planned}: temp files removed`);

      const sink2 = await createGgufSink(path, { kv: [], plan });
      await sink2.add('x', [2], new Float32Array([1, 2]));
      await sink2.finish();
      assert.deepEqual(await readdir(sub), ['out.gguf'], `planned=${planned}: only the result remains`);
    }
  });

  it('a failing finish (planned tensor never added) removes its temporaries', async () => {
    const sub = await mkdtemp(join(dir, 'missing-'));
    const path = join(sub, 'out.gguf');
    const sink = await createGgufSink(path, {
      kv: [],
      plan: [
        { name: 'a', shape: [1], dtype: 'F32' },
        { name: 'b', shape: [1], dtype: 'F16' },
      ],
    });
    await sink.add('a', [1], new Float32Array([1]));
    await assert.rejects(sink.finish(), /1 planned tensor\(s\) were never added: b/);
    assert.deepEqual(await readdir(sub), []);
  });

  it('uses the sink default dtype when add() gives none', async () => {
    const path = join(dir, 'default-dtype.gguf');
    const sink = await createGgufSink(path, { kv: [], dtype: 'BF16' });
    await sink.add('x', [3], new Float32Array([1, -2, 0.5]));
    await sink.finish();
    const file = await openGguf(path);
    assert.equal(file.tensors[0]!.type, GgmlType.BF16);
    assert.deepEqual(await file.read('x'), new Float32Array([1, -2, 0.5]));
    await file.close();
  });

  it('rejects invalid input with errors naming the file', async () => {
    const path = join(dir, 'invalid.gguf');
    const named = (re: RegExp) => (e: Error) => e.message.includes(path) && re.test(e.message);
    await assert.rejects(createGgufSink(path, { kv: [], alignment: 48 }), named(/not a power of two/));
    await assert.rejects(createGgufSink(path, { kv: [['a', kvU8(256)]] }), named(/does not fit in UINT8/));
    await assert.rejects(createGgufSink(path, { kv: [['a', kvI32(1.5)]] }), named(/expected an integer/));
    await assert.rejects(createGgufSink(path, { kv: [['a', kvU8(1)], ['a', kvU8(2)]] }), named(/given twice/));
    await assert.rejects(
      createGgufSink(path, { kv: [['a', kvArray(GgufValueType.ARRAY as never, [])]] }),
      named(/nested arrays/),
    );
    await assert.rejects(
      createGgufSink(path, { kv: [['general.alignment', kvU32(64)]], alignment: 32 }),
      named(/disagrees/),
    );
    await assert.rejects(
      createGgufSink(path, { kv: [], plan: [{ name: 'a', shape: [1], dtype: 'F32' }, { name: 'a', shape: [1], dtype: 'F32' }] }),
      named(/appears twice/),
    );

    const sink = await createGgufSink(path, { kv: [] });
    await assert.rejects(sink.add('x'.repeat(64), [1], new Float32Array(1)), named(/64 bytes/));
    await assert.rejects(sink.add('five', [1, 1, 1, 1, 1], new Float32Array(1)), named(/5 dimensions/));
    await assert.rejects(sink.add('len', [2, 2], new Float32Array(3)), named(/3 values but shape \[2, 2\] needs 4/));
    await sink.add('dup', [1], new Float32Array(1));
    await assert.rejects(sink.add('dup', [1], new Float32Array(1)), named(/already added/));
    await sink.abort();

    const planned = await createGgufSink(path, { kv: [], plan: [{ name: 'p', shape: [2, 3], dtype: 'F16' }] });
    await assert.rejects(planned.add('q', [1], new Float32Array(1)), named(/not in the plan/));
    await assert.rejects(planned.add('p', [3, 2], new Float32Array(6)), named(/plan says \[2, 3\]/));
    await assert.rejects(planned.add('p', [2, 3], new Float32Array(6), 'F32'), named(/plan says F16/));
    await planned.abort();
  });
});

describe('GGUF reader rejects corrupt files', () => {
  // Layout of the reference file (offsets asserted below so a layout change fails loudly):
  //   0 magic, 4 version, 8 n_tensors, 16 n_kv
  //   24 kv0 "general.architecture" = string "llama" (8+20 key, 4 type, 8+5 value) -> ends at 69
  //   69 kv1 "a" = array u8 [1,2,3] (8+1 key, 4 type=9, 4 elem type, 8 count, 3 bytes) -> ends at 97
  //   97 tensor "t": 8+1 name, 106 n_dims, 110 dims (2 x u64), 126 ggml type, 130 offset -> ends at 138
  //   data at 160 (padded to 32): 6 f32 = 24 bytes + 8 padding -> file size 192
  let ref: Buffer;
  before(async () => {
    const path = join(dir, 'ref.gguf');
    const sink = await createGgufSink(path, {
      kv: [
        ['general.architecture', kvString('llama')],
        ['a', kvArray(GgufValueType.UINT8, [1, 2, 3])],
      ],
    });
    await sink.add('t', [3, 2], new Float32Array([1, 2, 3, 4, 5, 6]));
    await sink.finish();
    ref = await readFile(path);
    assert.equal(ref.length, 192);
    assert.equal(ref.readUInt32LE(78), GgufValueType.ARRAY);
    assert.equal(ref.readUInt32LE(82), GgufValueType.UINT8);
    assert.equal(ref.readUInt32LE(106), 2);
    assert.equal(ref.readBigUInt64LE(110), 2n);
    assert.equal(ref.readUInt32LE(126), GgmlType.F32);
    assert.equal(ref.readBigUInt64LE(130), 0n);
    const ok = await openGguf(path);
    assert.deepEqual(await ok.read('t'), new Float32Array([1, 2, 3, 4, 5, 6]));
    await ok.close();
  });

  const cases: Array<[string, (b: Buffer) => Buffer, RegExp]> = [
    ['bad magic', (b) => (b.write('GGUX', 0, 'latin1'), b), /not a GGUF file \(starts with "GGUX"/],
    ['tiny file', (b) => b.subarray(0, 3), /not a GGUF file \(only 3 bytes/],
    ['version 1', (b) => (b.writeUInt32LE(1, 4), b), /version 1 is obsolete/],
    ['version 4', (b) => (b.writeUInt32LE(4, 4), b), /unsupported GGUF version 4/],
    ['big-endian', (b) => (b.writeUInt32BE(3, 4), b), /big-endian/],
    ['absurd tensor count', (b) => (b.writeBigUInt64LE(2n ** 40n, 8), b), /tensor count 1099511627776 is absurd/],
    ['absurd KV count', (b) => (b.writeBigUInt64LE(2n ** 33n, 16), b), /metadata count 8589934592 is absurd/],
    ['huge string length', (b) => (b.writeBigUInt64LE(2n ** 40n, 24), b), /string length 1099511627776 exceeds the limit/],
    ['string past end of file', (b) => (b.writeBigUInt64LE(1000n, 24), b), /truncated: metadata entry #0 needs 1000 bytes/],
    ['unknown value type', (b) => (b.writeUInt32LE(99, 52), b), /unknown value type 99 \(while reading metadata "general.architecture"\)/],
    ['nested array', (b) => (b.writeUInt32LE(GgufValueType.ARRAY, 82), b), /nested arrays are not supported/],
    ['absurd array length', (b) => (b.writeBigUInt64LE(2n ** 30n, 86), b), /array of 1073741824 elements cannot fit/],
    ['n_dims > 4', (b) => (b.writeUInt32LE(5, 106), b), /tensor has 5 dimensions; ggml allows at most 4/],
    ['unknown ggml type', (b) => (b.writeUInt32LE(200, 126), b), /unknown ggml tensor type 200/],
    ['block size mismatch', (b) => (b.writeUInt32LE(GgmlType.Q8_0, 126), b), /not a multiple of the Q8_0 block size 32/],
    ['misaligned offset', (b) => (b.writeBigUInt64LE(4n, 130), b), /offset 4 is not a multiple of the alignment 32/],
    ['offset beyond file', (b) => (b.writeBigUInt64LE(1n << 20n, 130), b), /tensor "t" occupies bytes 1048736\.\.1048760 but the file has 192/],
    ['truncated data', (b) => b.subarray(0, 170), /tensor "t" occupies bytes 160\.\.184 but the file has 170/],
    ['truncated in tensor infos', (b) => b.subarray(0, 120), /truncated: tensor info "t" needs 8 bytes at offset 118/],
  ];
  for (const [label, corrupt, re] of cases) {
    it(label, async () => {
      const path = join(dir, `corrupt-${label.replace(/\W+/g, '-')}.gguf`);
      await writeFile(path, corrupt(Buffer.from(ref)));
      await assert.rejects(openGguf(path), (e: Error) => {
        assert.match(e.message, re);
        assert.ok(e.message.includes(path), 'error names the file');
        return true;
      });
    });
  }

  it('refuses to decode quantized tensors as f32', async () => {
    // Turn "t" ([3, 2] F32 = 24 bytes) into a [1, 32] Q8_0 tensor (34 bytes; the file grows to hold them).
    const b = Buffer.concat([ref, Buffer.alloc(32)]);
    b.writeBigUInt64LE(32n, 110);
    b.writeBigUInt64LE(1n, 118);
    b.writeUInt32LE(GgmlType.Q8_0, 126);
    const path = join(dir, 'q8.gguf');
    await writeFile(path, b);
    const file = await openGguf(path);
    try {
      assert.deepEqual(file.info('t'), { name: 't', dtype: 'Q8_0', shape: [1, 32], bytes: 34 });
      await assert.rejects(file.read('t'), /tensor "t" is Q8_0; only F32, F16 and BF16/);
    } finally {
      await file.close();
    }
  });
});
