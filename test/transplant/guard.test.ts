/**
 * The guard keeps the base's reference (its logit rows at the KL positions, its NLL per scored
 * position) across candidates: computed once per run, and every number the same, to the last
 * digit, as recomputing it for each candidate (the uncached path) gives.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { getBackend } from '../../src/linalg/index.js';
import { EMBED, Guard, HEAD, type Candidate } from '../../src/transplant/guard.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { TINYFAM, tinyfamLines } from '../helpers/tinyfam.js';

const LLAMA = join(TINYFAM, 'llama-base');

/** `table` with every `step`-th row scaled by `factor`. */
function scaledRows(table: Float32Array, width: number, step: number, factor: number): Float32Array {
  const out = Float32Array.from(table);
  for (let r = 0; r * width < out.length; r += step) for (let j = 0; j < width; j++) out[r * width + j]! *= factor;
  return out;
}

describe('transplant guard reference cache (tinyfam llama-base, untied)', () => {
  it('computes the base reference once and scores every candidate as recomputing it does', async () => {
    const ckpt = await openCheckpoint(LLAMA);
    const width = ckpt.info(EMBED).shape[1]!;
    const embed = await ckpt.read(EMBED);
    const head = await ckpt.read(HEAD);
    await ckpt.close();
    const e1 = scaledRows(embed, width, 7, 1.5);
    const candidates: Candidate[] = [{ embed: e1 }, { embed: e1, head: scaledRows(head, width, 5, 1.3) }, {}];
    const tok = await loadTokenizer(LLAMA);
    const prompts = (await tinyfamLines('eval.txt')).slice(0, 2);
    const backend = await getBackend();
    const opened: Array<{ close(): Promise<void> }> = [];
    const keep = <C extends { close(): Promise<void> }>(r: C): C => (opened.push(r), r);
    try {
      // the guard's defaults: the reference rows kept are the last 8 scored positions of each prompt
      const opts = { klTopK: 512, klPositions: { tail: 8 } };
      const cached = await Guard.open(LLAMA, tok, prompts, backend, opts, keep);
      const plain = await Guard.open(LLAMA, tok, prompts, backend, { ...opts, cacheHidden: false }, keep);
      for (const c of candidates) {
        const a = await cached.check(c);
        assert.deepEqual(a, await plain.check(c));
        assert.equal(a.reference!.kl.positions, 16);
        // the base against itself: nothing to measure
        assert.ok(c.embed ? a.reference!.kl.forward > 0 : a.reference!.kl.forward === 0);
      }
      assert.equal(cached.stats.references, 1, 'the base reference is computed once');
      assert.equal(plain.stats.references, candidates.length);
      // the hidden-state cache is unchanged: the base's pass and one per distinct embedding table
      assert.equal(cached.stats.forwards, 2);
      assert.equal(plain.stats.forwards, 2 * candidates.length);
    } finally {
      for (const r of opened.reverse()) await r.close();
    }
  });
});
