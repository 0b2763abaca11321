import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PairReader } from '../../src/delta/load-pair.js';
import { startPairLoader } from '../../src/delta/pair-loader.js';
import { openCheckpoint, type Checkpoint } from '../../src/io/checkpoint.js';
import { BufferPool } from '../../src/pipeline/buffer-pool.js';
import { roundTo } from '../../src/tensor/dtype.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

// two SIMD chunks and a ragged end
const N = (1 << 16) * 2 + 11;

describe('PairReader', () => {
  let dir: string;
  let a: Checkpoint;
  let b: Checkpoint;
  const base = Float32Array.from({ length: N }, (_, i) => Math.sin(i * 0.37));
  const tuned = Float32Array.from(base, (x, i) => x + (i % 5 === 0 ? 0 : 0.01 * Math.cos(i)));
  const bad = tuned.slice();
  bad[N - 3] = NaN;

  before(async () => {
    dir = await makeTempDir('loraforge-load-pair-');
    await writeModelFolder(join(dir, 'a'), { t: { shape: [N], data: base }, u: { shape: [N], data: base } }, { dtype: 'BF16' });
    await writeModelFolder(join(dir, 'b'), { t: { shape: [N], data: tuned }, u: { shape: [N], data: bad } }, { dtype: 'BF16' });
    [a, b] = [await openCheckpoint(join(dir, 'a')), await openCheckpoint(join(dir, 'b'))];
  });
  after(async () => {
    await Promise.all([a.close(), b.close()]);
    await rm(dir, { recursive: true, force: true });
  });

  it('forms the same Δ and norms through the SIMD pass as by decoding both and subtracting', () => {
    const reader = new PairReader(new BufferPool());
    try {
      const fast = reader.load({ a: a.locate('t'), b: b.locate('t'), keepB: false });
      const plain = reader.load({ a: a.locate('t'), b: b.locate('t'), keepB: true }); // keeping B takes the plain path
      const [ra, rb] = [roundTo(base, 'BF16'), roundTo(tuned, 'BF16')];
      assert.deepEqual(fast.delta, Float32Array.from(rb, (x, i) => x - ra[i]));
      assert.deepEqual(fast.delta, plain.delta);
      assert.deepEqual(plain.b, rb);
      assert.equal(fast.b, undefined, 'B is not kept unless asked for');
      for (const key of ['frobSq', 'baseFrobSq'] as const) {
        assert.ok(Math.abs(fast.stats![key] - plain.stats![key]) <= 1e-9 * plain.stats![key], `${key}: ${fast.stats![key]} vs ${plain.stats![key]}`);
      }
      assert.equal(fast.stats!.identical, false);
      const same = reader.load({ a: a.locate('t'), b: a.locate('t'), keepB: false });
      assert.equal(same.stats!.identical, true);
    } finally {
      reader.close();
    }
  });

  it('the reader thread and the inline loader hand out the same pairs, and errors cross the thread with their names', async () => {
    // 'full' keeps B beside Δ, as extract asks for --embeddings full
    const job = (name: string, action: 'lora' | 'full') => ({ name, keepB: action === 'full' });
    const threaded = await startPairLoader().open(a, b);
    const inline = await startPairLoader({ worker: false }).open(a, b);
    try {
      for (const j of [job('t', 'lora'), job('t', 'full')]) {
        const [x, y] = [await threaded.load(j), await inline.load(j)];
        assert.deepEqual(x.delta, y.delta);
        assert.deepEqual(x.b, y.b);
        assert.deepEqual(x.stats, y.stats);
        threaded.release(x);
        inline.release(y);
      }
      await assert.rejects(threaded.load(job('u', 'lora')), /tensor "u" holds NaN/);
      const again = await threaded.load(job('t', 'lora')); // the thread lives on after an error
      assert.equal(again.delta!.length, N);
    } finally {
      await Promise.all([threaded.close(), inline.close()]);
    }
  });

  it('a NaN in B found by the SIMD pass is reported by the plain one, naming the file and tensor', () => {
    const reader = new PairReader(new BufferPool());
    try {
      assert.throws(() => reader.load({ a: a.locate('u'), b: b.locate('u'), keepB: false }), new RegExp(`b/model\\.safetensors: tensor "u" holds NaN at element ${N - 3}`));
    } finally {
      reader.close();
    }
  });
});
