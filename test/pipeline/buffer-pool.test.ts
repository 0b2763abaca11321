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
});
