/**
 * Seeded random numbers whose output is part of loraforge's results: a run with `--seed` must
 * give the same bits on every platform and in every later version. So the algorithms are fixed
 * here, in writing, and use only integer ops and IEEE-754 +, −, ×, ÷ and sqrt (all exactly
 * rounded in JavaScript, which never fuses multiply-adds). Math.log is avoided on purpose: its
 * last bit is up to the engine.
 *
 * Algorithm (do not change without a new name; results with a seed depend on every step):
 * 1. Seeding: the seed (a safe integer) is split into lo = seed mod 2^32 and hi = ⌊seed / 2^32⌋
 *    mod 2^32; a splitmix32 state starts at (lo XOR imul(hi, 0x85ebca6b)) — just `seed` for seeds
 *    below 2^32. splitmix32 step: state += 0x9e3779b9; z = state; z ^= z >>> 16;
 *    z = imul(z, 0x21f0aaad); z ^= z >>> 15; z = imul(z, 0x735a2d97); z ^= z >>> 15; output z.
 *    Its first four outputs are the xoshiro128** state s0..s3 (never all zero: distinct inputs).
 * 2. Generator: xoshiro128** (Blackman & Vigna, 2018): result = rotl(s1 · 5, 7) · 9;
 *    t = s1 << 9; s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t; s3 = rotl(s3, 11).
 * 3. next(): two outputs a, b → ((a >>> 5) · 2^26 + (b >>> 6)) / 2^53, uniform on [0, 1).
 *    fillUniform(out) is out[i] = next() in order (the same draws, one tight loop); fillKeepMask(out, p)
 *    is out[i] = −1 when that next() would be below p, else 0, decided on the integers alone.
 * 4. normal(): Marsaglia's polar method. u = 2·next() − 1, v = 2·next() − 1, s = u² + v²,
 *    retried while s ≥ 1 or s = 0; f = sqrt(−2·ln(s) / s); returns u·f and keeps v·f for the
 *    next call. ln is `deterministicLog` below. fillNormal(out) is out[i] = normal() in order.
 * 5. fillSigns(out): ⌈n/32⌉ outputs w_0, w_1, … in order; out[i] = −1 if bit (i mod 32) of
 *    w_⌊i/32⌋ is set, else +1.
 */

export interface Rng {
  /** uniform on [0, 1) with 53 random bits */
  next(): number;
  /**
   * out[i] = next() for i = 0, 1, … — the same values, several times faster than a next() call per
   * entry (della draws one per weight, so this loop is much of its cost).
   */
  fillUniform(out: Float64Array): void;
  /**
   * out[i] = −1 (every bit set) when the i-th next() is below p, else 0, for i = 0, 1, … — DARE's
   * keep mask from the same draws, with no floating point in the loop (`keepThreshold`).
   */
  fillKeepMask(out: Int32Array, p: number): void;
  /** standard normal (mean 0, variance 1) */
  normal(): number;
  /** out[i] = normal() for i = 0, 1, … */
  fillNormal(out: Float32Array): void;
  /**
   * out[i] = ±1 with equal odds (Rademacher), bit i mod 32 of 32-bit draw ⌊i/32⌋ (1 → −1): 32
   * entries per draw, for test matrices, where random signs sketch as well as any unit-variance entries.
   */
  fillSigns(out: Float32Array): void;
  /** uniform 32-bit unsigned integer */
  nextUint32(): number;
}

const LN2_HI = 6.93147180369123816490e-1; // ln 2 split in two so e·LN2_HI is exact for |e| < 2^11
const LN2_LO = 1.90821492927058770002e-10;
const SQRT_HALF = Math.SQRT1_2;
const TWO_POW_64 = 2 ** 64;

/**
 * ln(x) for x > 0 from basic arithmetic alone: x = m·2^e with m in [√½, √2), then
 * ln m = 2·atanh(f) with f = (m − 1)/(m + 1), |f| ≤ 0.172, summed to 12 odd terms (the next
 * term is below 1e-18 of the result). Accurate to a few ulps; what matters is that it is the
 * same everywhere.
 */
export function deterministicLog(x: number): number {
  if (!(x > 0) || x === Infinity) {
    throw new Error(`linalg/random.ts: deterministicLog needs a finite x > 0, got ${x}`);
  }
  let m = x;
  let e = 0;
  // scaling by powers of two is exact, so the split is exact
  while (m < 2 ** -64) {
    m *= TWO_POW_64;
    e -= 64;
  }
  while (m >= TWO_POW_64) {
    m /= TWO_POW_64;
    e += 64;
  }
  while (m < SQRT_HALF) {
    m *= 2;
    e -= 1;
  }
  while (m >= 2 * SQRT_HALF) {
    m /= 2;
    e += 1;
  }
  const f = (m - 1) / (m + 1);
  const f2 = f * f;
  // Horner over 1/1, 1/3, …, 1/23 (each literal quotient is correctly rounded, so exact everywhere)
  const series =
    1 + f2 * (1 / 3 + f2 * (1 / 5 + f2 * (1 / 7 + f2 * (1 / 9 + f2 * (1 / 11 + f2 * (1 / 13 + f2 * (1 / 15 + f2 * (1 / 17 + f2 * (1 / 19 + f2 * (1 / 21 + f2 * (1 / 23)))))))))));
  return e * LN2_HI + (2 * f * series + e * LN2_LO);
}

function splitmix32(start: number): () => number {
  let state = start >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z ^= z >>> 16;
    z = Math.imul(z, 0x21f0aaad);
    z ^= z >>> 15;
    z = Math.imul(z, 0x735a2d97);
    z ^= z >>> 15;
    return z >>> 0;
  };
}

/**
 * The raw xoshiro128** stream from a given state (four 32-bit words, not all zero), as unsigned
 * 32-bit integers. Exposed so the stream can be checked against the published test vector.
 */
/** A xoshiro128** stream: next() draws one word; fill() draws out.length in a row (the same stream). */
export interface Xoshiro128 {
  (): number;
  fill(out: Uint32Array): void;
  /** out[i] = step 3's uniform from the next two words, for i = 0, 1, … (2·out.length words) */
  fillUniform(out: Float64Array): void;
  /** out[i] = −1 when step 3's uniform from the next two words is below p, else 0 (2·out.length words) */
  fillKeepMask(out: Int32Array, p: number): void;
}

/** One xoshiro128** step on the state words `s`: advances them, returns the output (as int32 bits). */
function step(s: Int32Array): number {
  const x = Math.imul(s[1], 5);
  const result = Math.imul((x << 7) | (x >>> 25), 9);
  const t = s[1] << 9;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = (s[3] << 11) | (s[3] >>> 21);
  return result;
}

export function xoshiro128StarStar(state: readonly [number, number, number, number]): Xoshiro128 {
  const s = Int32Array.from(state, (w) => w | 0);
  if ((s[0] | s[1] | s[2] | s[3]) === 0) {
    throw new Error('linalg/random.ts: xoshiro128** needs a state that is not all zero');
  }
  const next = (): number => step(s) >>> 0;
  const fill = (out: Uint32Array): void => {
    for (let i = 0; i < out.length; i++) out[i] = step(s);
  };
  return Object.assign(next, {
    fill,
    fillUniform: (out: Float64Array) => fillUniform(s, out),
    fillKeepMask: (out: Int32Array, p: number) => fillKeepMask(s, out, p),
  });
}

/**
 * `step` twice per entry with the state in locals (V8 keeps them in registers; through the
 * Int32Array every step would load and store all four words), combined as next() combines them.
 */
function fillUniform(s: Int32Array, out: Float64Array): void {
  let s0 = s[0];
  let s1 = s[1];
  let s2 = s[2];
  let s3 = s[3];
  for (let i = 0; i < out.length; i++) {
    let x = Math.imul(s1, 5);
    const a = Math.imul((x << 7) | (x >>> 25), 9) >>> 5;
    let t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    x = Math.imul(s1, 5);
    const b = Math.imul((x << 7) | (x >>> 25), 9) >>> 6;
    t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    out[i] = (a * 67108864 + b) / 9007199254740992;
  }
  s[0] = s0;
  s[1] = s1;
  s[2] = s2;
  s[3] = s3;
}

/**
 * next() = m / 2^53 exactly, for the integer m = a·2^26 + b (a = first word >>> 5, b = second >>> 6),
 * so next() < p exactly when m < c = ⌈p·2^53⌉ (p·2^53 is exact: scaling by a power of two), clamped
 * to [0, 2^53] (NaN keeps nothing, as `NaN < x` is false). Split as c = ca·2^26 + cb with cb < 2^26,
 * m < c exactly when a < ca, or a = ca and b < cb.
 */
function keepThreshold(p: number): { ca: number; cb: number } {
  const c = p > 0 ? Math.ceil(Math.min(p, 1) * 9007199254740992) : 0;
  const ca = Math.floor(c / 67108864);
  return { ca, cb: c - ca * 67108864 };
}

/** `fillUniform`'s loop, with the comparison of `keepThreshold` instead of the division (branch-free: a, b, ca, cb < 2^28). */
function fillKeepMask(s: Int32Array, out: Int32Array, p: number): void {
  const { ca, cb } = keepThreshold(p);
  let s0 = s[0];
  let s1 = s[1];
  let s2 = s[2];
  let s3 = s[3];
  for (let i = 0; i < out.length; i++) {
    let x = Math.imul(s1, 5);
    const a = Math.imul((x << 7) | (x >>> 25), 9) >>> 5;
    let t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    x = Math.imul(s1, 5);
    const b = Math.imul((x << 7) | (x >>> 25), 9) >>> 6;
    t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    // sign bits: a − ca < 0 when a < ca; (a ^ ca) − 1 < 0 when a = ca; b − cb < 0 when b < cb
    out[i] = ((a - ca) | (((a ^ ca) - 1) & (b - cb))) >> 31;
  }
  s[0] = s0;
  s[1] = s1;
  s[2] = s2;
  s[3] = s3;
}

export function createRng(seed: number): Rng {
  if (!Number.isSafeInteger(seed)) {
    throw new Error(`linalg/random.ts: the seed must be an integer (a safe one), got ${seed}`);
  }
  const lo = seed >>> 0; // ToUint32 is seed mod 2^32 for any integer, negative ones included
  const hi = Math.floor(seed / 2 ** 32) >>> 0;
  const seeder = splitmix32((lo ^ Math.imul(hi, 0x85ebca6b)) >>> 0);
  const nextUint32 = xoshiro128StarStar([seeder(), seeder(), seeder(), seeder()]);

  const next = (): number => {
    const a = nextUint32() >>> 5;
    const b = nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  };

  let spare: number | undefined;
  const normal = (): number => {
    if (spare !== undefined) {
      const v = spare;
      spare = undefined;
      return v;
    }
    for (;;) {
      const u = 2 * next() - 1;
      const v = 2 * next() - 1;
      const s = u * u + v * v;
      if (s >= 1 || s === 0) continue;
      const f = Math.sqrt((-2 * deterministicLog(s)) / s);
      spare = v * f;
      return u * f;
    }
  };

  return {
    next,
    fillUniform: nextUint32.fillUniform,
    fillKeepMask: nextUint32.fillKeepMask,
    normal,
    nextUint32,
    fillNormal(out: Float32Array): void {
      for (let i = 0; i < out.length; i++) out[i] = normal();
    },
    fillSigns(out: Float32Array): void {
      const words = new Uint32Array(Math.ceil(out.length / 32));
      nextUint32.fill(words);
      for (let i = 0; i < out.length; i++) out[i] = 1 - 2 * ((words[i >>> 5] >>> (i & 31)) & 1);
    },
  };
}

/**
 * FNV-1a, 32 bits: a fixed, documented way to turn a name (e.g. "seed/tensor/input") into a seed,
 * so each seeded stream depends only on what it is for, never on processing order.
 */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
