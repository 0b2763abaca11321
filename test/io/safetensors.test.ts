import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import {
  createSafetensorsSink,
  MAX_HEADER_BYTES,
  openSafetensors,
  parseShardSize,
  writeSafetensorsFile,
} from '../../src/io/safetensors.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { encodeFromF32, roundTo } from '../../src/tensor/dtype.js';
import type { FloatDType } from '../../src/io/types.js';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'loraforge-st-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let dirCount = 0;
async function freshDir(): Promise<string> {
  const d = join(root, `d${dirCount++}`);
  await mkdir(d);
  return d;
}

/** Tiny deterministic LCG giving floats in [-1, 1). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

function randomData(n: number, seed: number): Float32Array {
  const next = lcg(seed);
  return Float32Array.from({ length: n }, () => next() * 4);
}

function bits(f: Float32Array): Uint32Array {
  return new Uint32Array(f.buffer, f.byteOffset, f.length);
}

/** Writes a safetensors file from a raw header (object, string or bytes) and a data section. */
async function craft(header: unknown, data: Uint8Array | number = 0, declared?: bigint): Promise<string> {
  const json = header instanceof Uint8Array ? Buffer.from(header) : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(declared ?? BigInt(json.length));
  const path = join(root, `crafted-${dirCount++}.safetensors`);
  await writeFile(path, Buffer.concat([prefix, json, typeof data === 'number' ? new Uint8Array(data) : data]));
  return path;
}

/** open must fail with a message naming the file (and the tensor, when given) and matching `re`. */
async function rejectsOpen(path: string, re: RegExp, tensor?: string): Promise<void> {
  await assert.rejects(openSafetensors(path), (err: Error) => {
    assert.match(err.message, re);
    assert.ok(err.message.includes(path), `message names the file: ${err.message}`);
    if (tensor !== undefined) assert.ok(err.message.includes(`"${tensor}"`), `message names tensor ${tensor}: ${err.message}`);
    return true;
  });
}

const f32 = (shape: number[], begin: number) => ({ dtype: 'F32', shape, data_offsets: [begin, begin + 4 * shape.reduce((a, b) => a * b, 1)] });

describe('openSafetensors: one crafted bad file per validation error', () => {
  it('file shorter than the 8-byte length prefix', async () => {
    const path = join(root, 'short.safetensors');
    await writeFile(path, Uint8Array.of(1, 2, 3));
    await rejectsOpen(path, /3 bytes is too short/);
  });
  it('header length beyond the end of the file', async () => {
    await rejectsOpen(await craft({}, 0, 1000n), /header length 1000 runs past the end of the 10-byte file/);
  });
  it('header length above the named limit', async () => {
    await rejectsOpen(await craft({}, 0, BigInt(MAX_HEADER_BYTES) + 1n), /exceeds the 100000000-byte limit/);
    await rejectsOpen(await craft({}, 0, 2n ** 64n - 1n), /exceeds/);
  });
  it('header that is not UTF-8', async () => {
    await rejectsOpen(await craft(Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d)), /not valid UTF-8/);
  });
  it('header that is not JSON', async () => {
    await rejectsOpen(await craft('{"a": '), /not valid JSON/);
  });
  it('header JSON that is not an object', async () => {
    await rejectsOpen(await craft('[1, 2]'), /not an object/);
    await rejectsOpen(await craft('null'), /not an object/);
  });
  it('entry that is not an object', async () => {
    await rejectsOpen(await craft({ w: 5 }), /header entry is not an object/, 'w');
  });
  it('missing dtype, and unknown dtype', async () => {
    await rejectsOpen(await craft({ w: { shape: [1], data_offsets: [0, 4] } }, 4), /no "dtype" string/, 'w');
    await rejectsOpen(await craft({ w: { dtype: 'Q4_K', shape: [1], data_offsets: [0, 4] } }, 4), /unknown dtype "Q4_K".*F32, F16 and BF16/, 'w');
  });
  it('bad shapes: negative, fractional, not an array', async () => {
    for (const shape of [[-1], [1.5], '4', [4, null]]) {
      await rejectsOpen(await craft({ w: { dtype: 'F32', shape, data_offsets: [0, 4] } }, 4), /"shape" must be an array of non-negative integers/, 'w');
    }
  });
  it('malformed data_offsets: missing, wrong arity, negative, reversed', async () => {
    await rejectsOpen(await craft({ w: { dtype: 'F32', shape: [1] } }, 4), /"data_offsets" must be \[begin, end\]/, 'w');
    await rejectsOpen(await craft({ w: { dtype: 'F32', shape: [1], data_offsets: [0] } }, 4), /"data_offsets" must be/, 'w');
    await rejectsOpen(await craft({ w: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, 4), /"data_offsets" must be/, 'w');
    await rejectsOpen(await craft({ w: { dtype: 'F32', shape: [0], data_offsets: [4, 0] } }, 4), /end before they begin/, 'w');
  });
  it('offsets beyond the data section', async () => {
    await rejectsOpen(await craft({ a: f32([1], 0), w: f32([2], 4) }, 8), /\[4, 12\] run past the end of the data section \(8 bytes\)/, 'w');
  });
  it('truncated data section (a good file cut short)', async () => {
    const path = join(root, 'cut.safetensors');
    await writeSafetensorsFile(path, [{ name: 'w', shape: [4, 4], data: randomData(16, 1), dtype: 'BF16' }]);
    const full = (await readFile(path)).byteLength;
    await truncate(path, full - 1);
    await rejectsOpen(path, /run past the end of the data section.*truncated/, 'w');
  });
  it('overlapping tensors', async () => {
    await rejectsOpen(await craft({ a: f32([2], 0), b: f32([2], 4) }, 12), /"a" \[0, 8\) and "b" \[4, 12\) overlap/);
  });
  it('byte size different from product(shape) × dtype size', async () => {
    await rejectsOpen(await craft({ w: { dtype: 'BF16', shape: [2, 4], data_offsets: [0, 8] } }, 8), /shape \[2, 4\] of BF16 needs 16 bytes but data_offsets \[0, 8\] hold 8/, 'w');
    await rejectsOpen(await craft({ w: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, 8), /needs too many bytes/, 'w');
  });
  it('bad __metadata__: not an object, or a non-string value', async () => {
    await rejectsOpen(await craft({ __metadata__: ['x'] }), /"__metadata__" must be an object of string values/);
    await rejectsOpen(await craft({ __metadata__: { format: 'pt', step: 5 } }), /"__metadata__" value for "step" is 5, not a string/);
  });
  it('accepts a valid crafted file with gaps, zero-size tensors and trailing space padding', async () => {
    const header = `${JSON.stringify({ __metadata__: { k: 'v' }, z: { dtype: 'F16', shape: [0, 3], data_offsets: [8, 8] }, w: f32([1], 8), a: f32([1], 0) })}   `;
    const data = new Uint8Array(12);
    new DataView(data.buffer).setFloat32(0, 1.5, true);
    new DataView(data.buffer).setFloat32(8, -2, true);
    const file = await openSafetensors(await craft(header, data));
    try {
      assert.deepEqual(file.metadata, { k: 'v' });
      assert.equal(file.headerSize, Buffer.byteLength(header));
      assert.deepEqual(file.list().map((t) => t.name), ['a', 'z', 'w'], 'listed in data order');
      assert.deepEqual([...(await file.read('a'))], [1.5]);
      assert.deepEqual([...(await file.read('w'))], [-2]);
      assert.equal((await file.read('z')).length, 0);
      await assert.rejects(file.read('nope'), /no tensor named "nope"/);
    } finally {
      await file.close();
    }
    await assert.rejects(file.read('a'), /already closed/);
  });
});

describe('unsupported dtypes', () => {
  it('open lists them, read() refuses naming tensor and dtype, readRaw() still works', async () => {
    const data = Uint8Array.of(1, 2, 0xff, 4, 0, 0, 0x80, 0x3f);
    const path = await craft({ q: { dtype: 'I8', shape: [4], data_offsets: [0, 4] }, w: f32([1], 4) }, data);
    const file = await openSafetensors(path);
    try {
      assert.deepEqual(file.info('q'), { name: 'q', dtype: 'I8', shape: [4], bytes: 4 });
      await assert.rejects(file.read('q'), (err: Error) => {
        assert.match(err.message, /tensor "q" has dtype I8; loraforge handles F32, F16 and BF16 tensors \(dequantize/);
        assert.ok(err.message.includes(path));
        return true;
      });
      assert.deepEqual([...(await file.readRaw('q'))], [1, 2, 0xff, 4]);
      assert.deepEqual([...(await file.read('w'))], [1]);
      await assert.rejects(file.readInto('q', new Float32Array(4)), /dtype I8; loraforge handles/);
    } finally {
      await file.close();
    }
  });
  it('F8 and U8 are refused the same way', async () => {
    const path = await craft({ a: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] }, b: { dtype: 'U8', shape: [2], data_offsets: [2, 4] } }, 4);
    const file = await openSafetensors(path);
    await assert.rejects(file.read('a'), /dtype F8_E4M3; loraforge handles/);
    await assert.rejects(file.read('b'), /dtype U8; loraforge handles/);
    await file.close();
  });
});

/** A small mixed set of tensors with edge values sprinkled in. */
function sampleTensors(): Array<{ name: string; shape: number[]; data: Float32Array; dtype: FloatDType }> {
  const edge = Float32Array.of(0, -0, 1 + 2 ** -8, 65520, 2 ** -25, 3 * 2 ** -25, Infinity, -Infinity, NaN, 3.4e38, 1e-40);
  const withEdges = (n: number, seed: number) => {
    const d = randomData(n, seed);
    d.set(edge.subarray(0, Math.min(edge.length, n)));
    return d;
  };
  return [
    { name: 'model.embed_tokens.weight', shape: [16, 8], data: withEdges(128, 1), dtype: 'BF16' },
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8], data: withEdges(64, 2), dtype: 'F16' },
    { name: 'model.norm.weight', shape: [8], data: withEdges(8, 3), dtype: 'F32' },
    { name: 'odd', shape: [3, 5], data: withEdges(15, 4), dtype: 'BF16' },
    { name: 'empty', shape: [0, 4], data: new Float32Array(0), dtype: 'F16' },
    { name: 'scalar', shape: [], data: Float32Array.of(0.1), dtype: 'F32' },
  ];
}

async function assertReadsBack(path: string, tensors: ReturnType<typeof sampleTensors>): Promise<void> {
  const file = (await openSafetensors(path)).allowNonFinite();
  try {
    assert.deepEqual(file.list().map((t) => t.name), tensors.map((t) => t.name), 'data in insertion order');
    for (const t of tensors) {
      assert.deepEqual(file.info(t.name), { name: t.name, dtype: t.dtype, shape: t.shape, bytes: encodeFromF32(t.data, t.dtype).byteLength });
      assert.deepEqual(await file.readRaw(t.name), encodeFromF32(t.data, t.dtype), `${t.name} stored bits`);
      assert.deepEqual(bits(await file.read(t.name)), bits(roundTo(t.data, t.dtype)), `${t.name} decoded bits`);
    }
  } finally {
    await file.close();
  }
}

describe('writers round-trip bit-exactly', () => {
  it('writeSafetensorsFile: F32/F16/BF16 with edge values; header padded and metadata kept', async () => {
    const dir = await freshDir();
    const path = join(dir, 'adapter_model.safetensors');
    const tensors = sampleTensors();
    await writeSafetensorsFile(path, tensors, { note: 'hi' });
    assert.deepEqual(await readdir(dir), ['adapter_model.safetensors'], 'no temporaries left');
    await assertReadsBack(path, tensors);
    const raw = await readFile(path);
    const n = Number(raw.readBigUInt64LE(0));
    assert.equal(n % 8, 0, 'header padded to a multiple of 8');
    const text = raw.subarray(8, 8 + n).toString('utf8');
    assert.match(text, /^\{.*\} *$/);
    assert.ok(text.indexOf('"model.embed_tokens.weight"') < text.indexOf('"odd"'));
    const file = await openSafetensors(path);
    assert.deepEqual(file.metadata, { format: 'pt', note: 'hi' });
    await file.close();
  });

  it('streaming sink (unplanned, one file) gives the same file as writeSafetensorsFile', async () => {
    const dir = await freshDir();
    const tensors = sampleTensors();
    const sink = await createSafetensorsSink(dir, { metadata: { note: 'hi' } });
    for (const t of tensors) await sink.add(t.name, t.shape, t.data, t.dtype);
    await sink.finish();
    assert.deepEqual(sink.writtenFiles(), ['model.safetensors']);
    assert.deepEqual(await readdir(dir), ['model.safetensors']);
    await assertReadsBack(join(dir, 'model.safetensors'), tensors);
    await writeSafetensorsFile(join(dir, 'other.safetensors'), tensors, { note: 'hi' });
    assert.deepEqual(await readFile(join(dir, 'model.safetensors')), await readFile(join(dir, 'other.safetensors')));
  });

  it('tensors larger than the I/O chunk (odd length, BF16 and F16) cross chunk boundaries correctly', async () => {
    const dir = await freshDir();
    const n = 5_000_001; // 10 MB as 16-bit: crosses the 8 MiB read chunk and the 4M-element encode chunk
    const data = randomData(n, 9);
    const sink = await createSafetensorsSink(dir, { dtype: 'BF16' });
    await sink.add('big', [n], data);
    await sink.add('big16', [n], data, 'F16');
    await sink.finish();
    const file = await openSafetensors(join(dir, 'model.safetensors'));
    assert.deepEqual(bits(await file.read('big')), bits(roundTo(data, 'BF16')));
    const reused = new Float32Array(n);
    assert.deepEqual(bits(await file.readInto('big16', reused)), bits(roundTo(data, 'F16')));
    await file.close();
  });

  it('refuses bad tensors with clear messages', async () => {
    const dir = await freshDir();
    const p = join(dir, 'x.safetensors');
    const d = new Float32Array(4);
    await assert.rejects(writeSafetensorsFile(p, [{ name: 'a', shape: [4], data: d, dtype: 'F32' }, { name: 'a', shape: [4], data: d, dtype: 'F32' }]), /"a" is given twice/);
    await assert.rejects(writeSafetensorsFile(p, [{ name: 'a', shape: [2, 3], data: d, dtype: 'F32' }]), /shape \[2, 3\] has 6 elements but 4 values/);
    await assert.rejects(writeSafetensorsFile(p, [{ name: '__metadata__', shape: [4], data: d, dtype: 'F32' }]), /reserved/);
    await assert.rejects(writeSafetensorsFile(p, [{ name: 'a', shape: [4], data: d, dtype: 'I8' as FloatDType }]), /dtype I8 cannot be written/);
    await assert.rejects(writeSafetensorsFile(p, [{ name: 'a', shape: [-4], data: d, dtype: 'F32' }]), /non-negative integers/);
    await assert.rejects(writeSafetensorsFile(p, [], { step: 3 as unknown as string }), /metadata "step" must be a string/);
    const sink = await createSafetensorsSink(dir);
    await sink.add('a', [4], d);
    await assert.rejects(sink.add('a', [4], d), /"a" was already added/);
    await assert.rejects(sink.add('b', [3], d), /shape \[3\] has 3 elements but 4 values/);
    await assert.rejects(sink.add('c', [4], d, 'F64' as FloatDType), /dtype F64 cannot be written/);
    await sink.add('b', [4], d, 'F16'); // refused tensors leave the sink usable
    await sink.abort();
    assert.deepEqual(await readdir(dir), []);
    await assert.rejects(sink.add('z', [4], d), /sink is aborted/);
  });
});

/** Tensors that split into 4 shards at maxShardBytes = 20000 (F32): [a] [b c] [d (over the limit alone)] [e]. */
function shardedSet(): Array<{ name: string; shape: number[]; data: Float32Array; dtype: FloatDType }> {
  return [
    { name: 'a', shape: [64, 64], data: randomData(4096, 11), dtype: 'F32' },
    { name: 'b', shape: [32, 64], data: randomData(2048, 12), dtype: 'F32' },
    { name: 'c', shape: [16], data: randomData(16, 13), dtype: 'F32' },
    { name: 'd', shape: [128, 64], data: randomData(8192, 14), dtype: 'F32' },
    { name: 'e', shape: [8, 8], data: randomData(64, 15), dtype: 'F32' },
  ];
}

describe('sharded writing', () => {
  it('writes HF-style shards + index and reopens through openCheckpoint', async () => {
    const dir = await freshDir();
    const tensors = shardedSet();
    const sink = await createSafetensorsSink(dir, { maxShardBytes: 20000 });
    for (const t of tensors) await sink.add(t.name, t.shape, t.data);
    await sink.finish();
    const shards = [1, 2, 3, 4].map((i) => `model-0000${i}-of-00004.safetensors`);
    assert.deepEqual(sink.writtenFiles(), [...shards, 'model.safetensors.index.json']);
    assert.deepEqual((await readdir(dir)).sort(), [...shards, 'model.safetensors.index.json'].sort());
    const index = JSON.parse(await readFile(join(dir, 'model.safetensors.index.json'), 'utf8'));
    assert.deepEqual(index, {
      metadata: { total_size: 4 * (4096 + 2048 + 16 + 8192 + 64) },
      weight_map: { a: shards[0], b: shards[1], c: shards[1], d: shards[2], e: shards[3] },
    });
    const ckpt = await openCheckpoint(dir);
    try {
      assert.deepEqual(ckpt.list().map((t) => t.name), ['a', 'b', 'c', 'd', 'e']);
      assert.deepEqual(ckpt.files, shards.map((s) => join(dir, s)));
      for (const t of tensors) assert.deepEqual(await ckpt.read(t.name), t.data);
    } finally {
      await ckpt.close();
    }
  });

  it('a single shard is written as <base>.safetensors without an index (like save_pretrained)', async () => {
    const dir = await freshDir();
    const sink = await createSafetensorsSink(dir, { maxShardBytes: 1e9, baseName: 'weights' });
    await sink.add('x', [2], Float32Array.of(1, 2));
    await sink.finish();
    assert.deepEqual(sink.writtenFiles(), ['weights.safetensors']);
    assert.deepEqual(await readdir(dir), ['weights.safetensors']);
  });

  it('writes a valid empty file when no tensor was added', async () => {
    const dir = await freshDir();
    const sink = await createSafetensorsSink(dir);
    await sink.finish();
    const file = await openSafetensors(join(dir, 'model.safetensors'));
    assert.deepEqual(file.list(), []);
    await file.close();
  });
});

describe('planned vs unplanned writers', () => {
  async function writeBoth(maxShardBytes: number | undefined, tensors: ReturnType<typeof sampleTensors>, planOrder: number[]) {
    const unplanned = await freshDir();
    const planned = await freshDir();
    const s1 = await createSafetensorsSink(unplanned, { maxShardBytes, metadata: { m: '1' } });
    for (const t of tensors) await s1.add(t.name, t.shape, t.data, t.dtype);
    await s1.finish();
    const plan = tensors.map(({ name, shape, dtype }) => ({ name, shape, dtype }));
    const s2 = await createSafetensorsSink(planned, { maxShardBytes, metadata: { m: '1' }, plan });
    for (const i of planOrder) await s2.add(tensors[i].name, tensors[i].shape, tensors[i].data); // dtype from the plan
    await s2.finish();
    assert.deepEqual(s2.writtenFiles(), s1.writtenFiles());
    for (const f of s1.writtenFiles()) assert.deepEqual(await readFile(join(planned, f)), await readFile(join(unplanned, f)), f);
    assert.deepEqual((await readdir(planned)).sort(), (await readdir(unplanned)).sort());
  }

  it('produce identical bytes for one file, tensors added in plan order', async () => {
    await writeBoth(undefined, sampleTensors(), [0, 1, 2, 3, 4, 5]);
  });
  it('produce identical bytes when sharded, even when planned tensors arrive out of order', async () => {
    await writeBoth(20000, shardedSet(), [4, 2, 0, 3, 1]);
  });
  it('planned sink refuses tensors that do not follow the plan, and unfinished plans', async () => {
    const dir = await freshDir();
    const plan = [{ name: 'w', shape: [2, 2], dtype: 'BF16' as const }, { name: 'v', shape: [2], dtype: 'F32' as const }];
    const mk = () => createSafetensorsSink(dir, { plan });
    let s = await mk();
    await assert.rejects(s.add('x', [2], new Float32Array(2)), /"x" is not in the plan/);
    await s.abort();
    s = await mk();
    await assert.rejects(s.add('w', [4], new Float32Array(4)), /shape \[4\] but the plan says \[2, 2\]/);
    await s.abort();
    s = await mk();
    await assert.rejects(s.add('w', [2, 2], new Float32Array(4), 'F16'), /added as F16 but the plan says BF16/);
    await s.abort();
    s = await mk();
    await s.add('w', [2, 2], new Float32Array(4));
    await assert.rejects(s.add('w', [2, 2], new Float32Array(4)), /already added/);
    await s.abort();
    s = await mk();
    await s.add('w', [2, 2], new Float32Array(4));
    await assert.rejects(s.finish(), /1 planned tensor\(s\) were never added, e.g. "v"/);
    await s.abort();
    assert.deepEqual(await readdir(dir), []);
    await assert.rejects(createSafetensorsSink(dir, { plan: [...plan, plan[0]] }), /"w" appears twice in the plan/);
  });
});

describe('nothing partial is ever visible', () => {
  for (const planned of [false, true]) {
    it(`abort mid-way (${planned ? 'planned' : 'unplanned'}, after shards were closed) leaves an empty folder`, async () => {
      const dir = await freshDir();
      const tensors = shardedSet();
      const plan = planned ? tensors.map(({ name, shape, dtype }) => ({ name, shape, dtype })) : undefined;
      const sink = await createSafetensorsSink(dir, { maxShardBytes: 20000, plan });
      for (const t of tensors.slice(0, 4)) await sink.add(t.name, t.shape, t.data);
      const visible = (await readdir(dir)).filter((n) => !n.startsWith('.'));
      assert.deepEqual(visible, [], 'only hidden temporaries before finish');
      assert.ok((await readdir(dir)).length > 0, 'data is streamed to disk, not held in memory');
      await sink.abort();
      assert.deepEqual(await readdir(dir), []);
    });
  }
  it('finish refuses to replace a file already under a final name, and abort cleans up', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, 'model.safetensors'), 'precious');
    const sink = await createSafetensorsSink(dir);
    await sink.add('x', [1], Float32Array.of(1));
    await assert.rejects(sink.finish(), /model\.safetensors already exists/);
    await sink.abort();
    assert.deepEqual(await readdir(dir), ['model.safetensors']);
    assert.equal(await readFile(join(dir, 'model.safetensors'), 'utf8'), 'precious');
  });
  it('writtenFiles() before finish is an error; abort after finish keeps the files', async () => {
    const dir = await freshDir();
    const sink = await createSafetensorsSink(dir);
    assert.throws(() => sink.writtenFiles(), /only after finish/);
    await sink.finish();
    await sink.abort();
    assert.deepEqual(await readdir(dir), ['model.safetensors']);
  });
  it('concurrent add() calls are serialized', async () => {
    const dir = await freshDir();
    // values finite once stored: a checkpoint refuses NaN and ±Inf on read (65520 rounds to Inf in F16)
    const tensors = sampleTensors().map((t) => ({ ...t, data: t.data.map((v) => (Number.isFinite(roundTo(Float32Array.of(v), t.dtype)[0]) ? v : 0)) }));
    const sink = await createSafetensorsSink(dir, { maxShardBytes: 300 });
    await Promise.all(tensors.map((t) => sink.add(t.name, t.shape, t.data, t.dtype)));
    await sink.finish();
    const ckpt = await openCheckpoint(dir);
    for (const t of tensors) assert.deepEqual(bits(await ckpt.read(t.name)), bits(roundTo(t.data, t.dtype)));
    await ckpt.close();
  });
});

describe('reads never load the whole file', () => {
  it('reads a small tensor that sits behind a 4 GiB tensor in a sparse file', async () => {
    const huge = 4 * 2 ** 30; // readFile() refuses anything over 2 GiB, and a Buffer this big would not fit a test runner's budget
    const header = Buffer.from(JSON.stringify({ huge: f32([2 ** 30], 0), small: f32([4], huge) }));
    const path = join(root, 'sparse.safetensors');
    const fh = await open(path, 'w');
    try {
      const prefix = Buffer.alloc(8);
      prefix.writeBigUInt64LE(BigInt(header.length));
      await fh.write(prefix, 0, 8, 0);
      await fh.write(header, 0, header.length, 8);
      await fh.write(new Uint8Array(Float32Array.of(1, -2, 3.5, 0.25).buffer), 0, 16, 8 + header.length + huge);
    } finally {
      await fh.close();
    }
    const file = await openSafetensors(path);
    try {
      assert.equal(file.info('huge').bytes, huge);
      assert.deepEqual([...(await file.read('small'))], [1, -2, 3.5, 0.25]);
      assert.deepEqual([...(await file.readRaw('small'))].length, 16);
    } finally {
      await file.close();
      await rm(path);
    }
  });
});

describe('parseShardSize', () => {
  it('parses decimal and binary units like huggingface_hub', () => {
    assert.equal(parseShardSize('5GB'), 5e9);
    assert.equal(parseShardSize('500MB'), 5e8);
    assert.equal(parseShardSize('2GiB'), 2 * 2 ** 30);
    assert.equal(parseShardSize('1.5 gb'), 1.5e9);
    assert.equal(parseShardSize('10KiB'), 10240);
    assert.equal(parseShardSize('123456'), 123456);
    assert.equal(parseShardSize('64B'), 64);
  });
  it('refuses nonsense', () => {
    for (const s of ['', '0', '-5GB', 'GB', '5XB', '5 G B', 'abc']) assert.throws(() => parseShardSize(s), /invalid shard size/, s);
  });
});

/** The independent reader needs python3 with numpy: say so, rather than skip (CI installs it). */
function requireNumpy(): void {
  try {
    execFileSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' });
  } catch {
    throw new Error('this test needs python3 with numpy (Debian: apt-get install python3-numpy; .ci/run installs it)');
  }
}

const PY_READER = `
import hashlib, json, struct, sys
import numpy as np
raw = open(sys.argv[1], 'rb').read()
(n,) = struct.unpack('<Q', raw[:8])
assert (8 + n) % 8 == 0, 'data not 8-aligned'
header = json.loads(raw[8:8 + n].decode('utf-8'))
data = raw[8 + n:]
out = {'__metadata__': header.pop('__metadata__', None)}
for name, t in header.items():
    b, e = t['data_offsets']
    buf = data[b:e]
    if t['dtype'] == 'F32':
        arr = np.frombuffer(buf, dtype='<f4')
    elif t['dtype'] == 'F16':
        arr = np.frombuffer(buf, dtype='<f2').astype('<f4')
    elif t['dtype'] == 'BF16':
        arr = (np.frombuffer(buf, dtype='<u2').astype('<u4') << 16).view('<f4')
    arr = arr.reshape(t['shape'])
    out[name] = {'shape': list(arr.shape), 'sha256': hashlib.sha256(arr.astype('<f4').tobytes()).hexdigest()}
print(json.dumps(out))
`;

describe('an independent reader (python3 + numpy) reads our files', () => {
  it('decodes every tensor to the same f32 values', async () => {
    requireNumpy();
    const dir = await freshDir();
    const tensors = sampleTensors().map((t) => ({ ...t, data: t.data.map((v) => (Number.isNaN(v) ? 0 : v)) }));
    const sink = await createSafetensorsSink(dir, { metadata: { who: 'loraforge' } });
    for (const t of tensors) await sink.add(t.name, t.shape, t.data, t.dtype);
    await sink.finish();
    const parsed = JSON.parse(execFileSync('python3', ['-c', PY_READER, join(dir, 'model.safetensors')], { encoding: 'utf8' }));
    assert.deepEqual(parsed.__metadata__, { format: 'pt', who: 'loraforge' });
    for (const t of tensors) {
      const expected = createHash('sha256').update(new Uint8Array(roundTo(t.data, t.dtype).buffer)).digest('hex');
      assert.deepEqual(parsed[t.name], { shape: t.shape, sha256: expected }, t.name);
    }
  });
});

describe('reads refuse NaN and ±Inf', () => {
  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    it(`${dtype}: read and readInto name the file, tensor and element; allowNonFinite() reads the bits`, async () => {
      const dir = await freshDir();
      const path = join(dir, 'model.safetensors');
      await writeSafetensorsFile(path, [
        { name: 'ok', shape: [2], data: Float32Array.of(1, 2), dtype },
        { name: 'bad', shape: [4], data: Float32Array.of(1, 2, NaN, 3), dtype },
        { name: 'inf', shape: [2], data: Float32Array.of(-Infinity, 0), dtype },
      ]);
      const file = await openSafetensors(path);
      try {
        assert.deepEqual([...(await file.read('ok'))], [1, 2]);
        await assert.rejects(file.read('bad'), new RegExp(`${path.replace(/[.]/g, '\\.')}: tensor "bad" holds NaN at element 2`));
        await assert.rejects(file.readInto('inf', new Float32Array(2)), /tensor "inf" holds -Infinity at element 0/);
      } finally {
        await file.close();
      }
      const raw = (await openSafetensors(path)).allowNonFinite();
      assert.ok(Number.isNaN((await raw.read('bad'))[2]));
      await raw.close();
    });
  }
});
