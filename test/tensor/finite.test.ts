import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { assertFinite, assertNoOverflow, F32_MAX_SQUARED, firstNonFinite } from '../../src/tensor/finite.js';

describe('finite-value checks', () => {
  it('firstNonFinite finds NaN, +Inf and −Inf at any position of any length, within [from, to)', () => {
    for (const n of [1, 3, 4, 5, 9, 1027]) {
      for (const bad of [NaN, Infinity, -Infinity]) {
        for (const at of [0, n - 1, n >> 1]) {
          const data = new Float32Array(n).fill(-0);
          data[at] = bad;
          assert.equal(firstNonFinite(data), at, `n ${n}, ${bad} at ${at}`);
        }
      }
    }
    const data = Float32Array.from([NaN, 1, 2, 3, Infinity, 5, 3.4e38, -3.4e38]);
    assert.equal(firstNonFinite(data, 1, 4), -1);
    assert.equal(firstNonFinite(data, 1), 4);
    assert.equal(firstNonFinite(data, 5), -1, 'the largest finite values are finite');
    assert.throws(() => assertFinite(data.subarray(1), 'f: tensor "t"'), /^Error: f: tensor "t" holds Infinity at element 3: /);
  });

  it('assertNoOverflow looks only when the sum of squares says a stored difference may be infinite', () => {
    const stored = Float32Array.from([1, Infinity, 2]);
    assert.doesNotThrow(() => assertNoOverflow(stored, F32_MAX_SQUARED / 2, 'w'), 'below the bound no term can have overflowed');
    assert.throws(() => assertNoOverflow(stored, 4e77, 'w'), /^Error: w: the difference of the two models overflows f32 at element 1 /);
    assert.throws(() => assertNoOverflow(stored, 4e77, 'w', 1, 3), /overflows f32 at element 0 /, 'the element counts from the block start');
    assert.doesNotThrow(() => assertNoOverflow(Float32Array.from([3.4e38, 1]), 4e77, 'w'), 'large but finite');
  });
});
