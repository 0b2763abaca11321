import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool } from '../../src/pipeline/buffer-pool.js';

describe('BufferPool', () => {
  it('reuses the smallest released buffer that fits, and allocates when none does', () => {
    const pool = new BufferPool();
    const big = pool.acquire(1 << 20);
    const small = pool.acquire(1 << 19);
    pool.release(big);
    pool.release(small);
    const got = pool.acquire((1 << 19) - 5);
    assert.ok(got.buffer === small.buffer, 'the smaller of two fitting buffers');
    assert.equal(got.length, (1 << 19) - 5);
    assert.ok(pool.acquire(1 << 19).buffer === big.buffer);
    assert.ok(pool.acquire(1 << 19).buffer !== big.buffer, 'a buffer is handed out once');
  });

  it('does not keep buffers too small to be worth recycling', () => {
    const pool = new BufferPool();
    const tiny = pool.acquire(16);
    pool.release(tiny);
    assert.ok(pool.acquire(16).buffer !== tiny.buffer);
  });

  it('hands out shared memory when asked to', () => {
    assert.ok(new BufferPool(true).acquire(1 << 20).buffer instanceof SharedArrayBuffer);
    assert.ok(new BufferPool().acquire(1 << 20).buffer instanceof ArrayBuffer);
  });

  it('with a limit, drops free buffers too small for a request rather than growing past it', () => {
    const MiB = 1 << 18; // f32 entries
    // up to three arrays live at once, of 1 or 4 MiB: small ones take large free buffers, so large
    // ones then find none free; without a limit the pool grows towards 3 large buffers and beyond
    const run = (pool: BufferPool) => {
      let s = 12345;
      const live: Float32Array[] = [];
      for (let step = 0; step < 400; step++) {
        s = (s * 1103515245 + 12345) >>> 0;
        if (live.length === 3 || (live.length > 0 && s & 1)) pool.release(live.splice((s >>> 1) % live.length, 1)[0]);
        else live.push(pool.acquire((s >>> 8) & 1 ? 4 * MiB : MiB));
        assert.ok(pool.heldBytes <= Math.max(pool.limit, pool.lentBytes), `step ${step}: ${pool.heldBytes} bytes held`);
      }
      return pool.heldBytes;
    };
    const limited = new BufferPool();
    limited.limit = 3 * (4 * MiB * 4); // bytes: three large buffers
    const unlimited = new BufferPool();
    assert.ok(run(limited) <= limited.limit);
    assert.ok(run(unlimited) > limited.limit, 'the sequence would grow an unlimited pool past the limit');
  });

  it('serves a request beyond the limit (the caller bounds what it asks for)', () => {
    const pool = new BufferPool();
    pool.limit = 1 << 20;
    const a = pool.acquire(1 << 20);
    assert.equal(a.length, 1 << 20);
    assert.equal(pool.heldBytes, 4 << 20);
  });
});
