import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRng, deterministicLog, fnv1a32, xoshiro128StarStar } from '../../src/linalg/random.js';

/** splitmix32 as documented in random.ts, redone with BigInt arithmetic mod 2^32. */
function splitmix32Reference(start: bigint, count: number): number[] {
  const mask = 0xffffffffn;
  let state = start & mask;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    state = (state + 0x9e3779b9n) & mask;
    let z = state;
    z ^= z >> 16n;
    z = (z * 0x21f0aaadn) & mask;
    z ^= z >> 15n;
    z = (z * 0x735a2d97n) & mask;
    z ^= z >> 15n;
    out.push(Number(z));
  }
  return out;
}

function referenceSeedState(seed: number): [number, number, number, number] {
  const big = BigInt(seed);
  const lo = ((big % 2n ** 32n) + 2n ** 32n) % 2n ** 32n;
  const hi = ((big >> 32n) % 2n ** 32n + 2n ** 32n) % 2n ** 32n;
  const start = lo ^ ((hi * 0x85ebca6bn) & 0xffffffffn);
  const [a, b, c, d] = splitmix32Reference(start, 4);
  return [a, b, c, d];
}

describe('random', () => {
  it('xoshiro128** reproduces the published test vector for state {1, 2, 3, 4}', () => {
    const next = xoshiro128StarStar([1, 2, 3, 4]);
    const got = Array.from({ length: 10 }, () => next());
    assert.deepEqual(got, [11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804]);
  });

  it('fill() draws the same stream as calling it, and the stream goes on from where fill() stopped', () => {
    const [a, b] = [xoshiro128StarStar([1, 2, 3, 4]), xoshiro128StarStar([1, 2, 3, 4])];
    const words = new Uint32Array(7);
    a.fill(words);
    assert.deepEqual([...words], Array.from({ length: 7 }, () => b()));
    assert.deepEqual([a(), a.fill(new Uint32Array(0)), a()], [b(), undefined, b()]);
  });

  it('fillUniform gives exactly the next() stream, across lengths and chunk sizes, and the stream goes on after it', () => {
    for (const seed of [0, 1, 42, -7, 2 ** 40 + 3]) {
      for (const length of [0, 1, 2, 3, 255, 4095, 4096, 4097, 10_001]) {
        const [batched, single] = [createRng(seed), createRng(seed)];
        const got = new Float64Array(length);
        // in odd pieces, so piece boundaries fall everywhere (as DRAW_CHUNK's do in a long tensor)
        for (let start = 0; start < length; start += 1000) batched.fillUniform(got.subarray(start, Math.min(length, start + 1000)));
        const want = Float64Array.from({ length }, () => single.next());
        assert.deepEqual(got, want, `seed ${seed}, length ${length}`);
        assert.equal(batched.next(), single.next(), `seed ${seed}, length ${length}: the draw after`);
        assert.equal(batched.nextUint32(), single.nextUint32());
      }
    }
  });

  it('fillKeepMask(p) is −1 exactly where next() < p, at the edges too (p equal to a draw, one ulp above, 0, 1, NaN)', () => {
    for (const seed of [3, 42, 2 ** 33 + 1]) {
      const draws = Float64Array.from({ length: 4099 }, createRng(seed).next);
      // p equal to a drawn value hits the a = ca branch (same high word, the low word decides)
      const ps = [0.5, 0.1, 0.9, 1e-300, 0, -1, 1, 2, 1 - 2 ** -53, NaN, draws[7], draws[7] + 2 ** -53, draws[4098], draws[4098] - 2 ** -53];
      for (const p of ps) {
        for (const length of [1, 8, 4096, 4099]) {
          const rng = createRng(seed);
          const got = new Int32Array(length);
          rng.fillKeepMask(got.subarray(0, Math.min(length, 5)), p);
          rng.fillKeepMask(got.subarray(Math.min(length, 5)), p);
          const want = Int32Array.from({ length }, (_, i) => (draws[i] < p ? -1 : 0));
          assert.deepEqual(got, want, `seed ${seed}, p ${p}, length ${length}`);
          if (length < draws.length) assert.equal(rng.next(), draws[length], 'the draw after');
        }
      }
    }
  });

  it('fillSigns spends one 32-bit draw on 32 signs, bit i mod 32 giving −1 when set', () => {
    const x = new Float32Array(200_003); // not a multiple of 32: the last draw is partly used
    createRng(5).fillSigns(x);
    const words = createRng(5);
    let word = 0;
    let sum = 0;
    for (let i = 0; i < x.length; i++) {
      if (i % 32 === 0) word = words.nextUint32();
      assert.equal(x[i], (word >>> (i % 32)) & 1 ? -1 : 1, `entry ${i}`);
      sum += x[i];
    }
    assert.ok(Math.abs(sum / x.length) < 0.01, `mean ${sum / x.length}`);
    // the stream goes on after the last (partly used) draw
    const after = createRng(5);
    for (let k = 0; k < Math.ceil(x.length / 32); k++) after.nextUint32();
    const rng = createRng(5);
    rng.fillSigns(x);
    assert.equal(rng.nextUint32(), after.nextUint32());
  });

  it('seeds the generator exactly as documented (checked against a BigInt re-implementation)', () => {
    for (const seed of [0, 1, 42, 2 ** 32 - 1, 2 ** 32 + 5, 2 ** 40 + 12345, -1, -(2 ** 35)]) {
      const rng = createRng(seed);
      const expected = xoshiro128StarStar(referenceSeedState(seed));
      for (let i = 0; i < 8; i++) assert.equal(rng.nextUint32(), expected(), `seed ${seed}, output ${i}`);
    }
  });

  it('keeps the pinned outputs of the documented algorithm (changing them breaks --seed reproducibility)', () => {
    const r0 = createRng(0);
    assert.deepEqual([r0.nextUint32(), r0.nextUint32(), r0.nextUint32(), r0.nextUint32()], [1789933344, 44971166, 2521387044, 3848737593]);
    const r42 = createRng(42);
    assert.deepEqual([r42.normal(), r42.normal(), r42.normal()], [0.26752683279886763, 1.7424408507579792, 0.5813902645846303]);
    assert.equal(r42.next(), 0.8504471602721714);
  });

  it('next() is uniform on [0, 1) built from two outputs', () => {
    const a = createRng(7);
    const b = xoshiro128StarStar(referenceSeedState(7));
    for (let i = 0; i < 5; i++) {
      const hi = b() >>> 5;
      const lo = b() >>> 6;
      assert.equal(a.next(), (hi * 2 ** 26 + lo) / 2 ** 53);
    }
    const rng = createRng(3);
    let sum = 0;
    let min = 1;
    let max = 0;
    const n = 100_000;
    for (let i = 0; i < n; i++) {
      const x = rng.next();
      sum += x;
      min = Math.min(min, x);
      max = Math.max(max, x);
    }
    assert.ok(min >= 0 && max < 1);
    assert.ok(Math.abs(sum / n - 0.5) < 0.005, `mean ${sum / n}`);
  });

  it('normal() has mean 0, variance 1 and Gaussian tails', () => {
    const rng = createRng(11);
    const n = 200_000;
    const x = new Float32Array(n);
    rng.fillNormal(x);
    let sum = 0;
    let sq = 0;
    let beyond2 = 0;
    for (const v of x) {
      sum += v;
      sq += v * v;
      if (Math.abs(v) > 2) beyond2++;
    }
    const mean = sum / n;
    assert.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
    assert.ok(Math.abs(sq / n - 1) < 0.015, `variance ${sq / n}`);
    // P(|Z| > 2) = 0.0455
    assert.ok(Math.abs(beyond2 / n - 0.0455) < 0.003, `tail ${beyond2 / n}`);
  });

  it('same seed gives bit-identical streams; different seeds differ', () => {
    const a = new Float32Array(1000);
    const b = new Float32Array(1000);
    const c = new Float32Array(1000);
    createRng(5).fillNormal(a);
    createRng(5).fillNormal(b);
    createRng(6).fillNormal(c);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  it('deterministicLog agrees with Math.log to a few ulps from tiny to huge inputs', () => {
    const rng = createRng(9);
    const xs = [1, 2, 0.5, Math.SQRT1_2, Math.SQRT2, 1 - 2 ** -53, 1 + 2 ** -52, 5e-324, 1e-300, 1e300, Number.MAX_VALUE];
    for (let i = 0; i < 2000; i++) xs.push(rng.next() * 2 ** (rng.nextUint32() % 200 - 100));
    for (const x of xs) {
      if (x === 0) continue;
      const expect = Math.log(x);
      const got = deterministicLog(x);
      const tol = 4 * Number.EPSILON * Math.max(Math.abs(expect), 1e-300) + (x === 1 ? 0 : 1e-300);
      assert.ok(Math.abs(got - expect) <= Math.max(tol, 4 * Number.EPSILON * Math.abs(x - 1)), `log(${x}): ${got} vs ${expect}`);
    }
    assert.equal(deterministicLog(1), 0);
    assert.throws(() => deterministicLog(0), /x > 0/);
  });

  it('rejects seeds that are not safe integers', () => {
    assert.throws(() => createRng(1.5), /seed must be an integer/);
    assert.throws(() => createRng(Number.NaN), /seed must be an integer/);
    assert.throws(() => xoshiro128StarStar([0, 0, 0, 0]), /not all zero/);
  });
});

describe('fnv1a32 (the one name hash: extract seeds, DARE streams, PEFT masks)', () => {
  it('matches the published FNV-1a 32-bit test vectors', () => {
    assert.equal(fnv1a32(''), 0x811c9dc5);
    assert.equal(fnv1a32('a'), 0xe40c292c);
    assert.equal(fnv1a32('foobar'), 0xbf9cf968);
  });
});
