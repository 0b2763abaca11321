/**
 * Scored positions spanning several logit chunks (scoring.ts): at a 300,000-token vocabulary
 * chunkRows is 111, so a window of 225 scored positions takes three chunks, and with the KL on
 * its last 80 positions the first KL position falls inside the second chunk (the reference chunk
 * `skip`s 34 positions there, all 111 of the first, none of the third). NLL, KL both ways and top-1 agreement of
 * every model must equal a plain computation from each position's full logits, position by
 * position, with the KL and agreement counted only on the KL positions.
 *
 * Exact logits: each lm_head row has one nonzero weight, so every logit is one f32 product
 * whatever the GEMM's summation order, and the reference here reproduces the engine's logits bit
 * for bit from the final hidden states. What is left are f64 sums in another order (WebAssembly
 * SIMD against the plain loops here): 1e-9 relative.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { LinalgBackend } from '../../src/linalg/backend.js';
import { getBackend } from '../../src/linalg/index.js';
import { createRng } from '../../src/linalg/random.js';
import { Engine } from '../../src/model/engine.js';
import { chunkRows, hiddenStates, scoreWindows, type KlPositions, type WindowScore } from '../../src/scoring/scoring.js';
import type { Window } from '../../src/scoring/windows.js';
import { tinyLlamaConfig, tinyLlamaWeights, writeTinyLlama } from '../helpers/llamacpp.js';
import { tempFolders } from '../helpers/synthetic.js';

const folder = tempFolders('loraforge-chunks-');
const SHAPE = { vocab: 300_000, hidden: 8, layers: 1, heads: 2, kvHeads: 1, intermediate: 16 };
const TAIL = 80;

let backend: LinalgBackend;
before(async () => {
  backend = await getBackend();
});
after(() => backend.dispose?.());

/** lm_head with the single nonzero weight of row v in column v mod hidden. */
function sparseHead(rng: ReturnType<typeof createRng>): Float32Array {
  const { vocab, hidden } = SHAPE;
  const w = new Float32Array(vocab * hidden);
  for (let v = 0; v < vocab; v++) w[v * hidden + (v % hidden)] = (2 * rng.next() - 1) * 4;
  return w;
}

/** A window of `n` random input ids whose positions from `first` on are scored, with random targets. */
function window(rng: ReturnType<typeof createRng>, n: number, first: number): Window {
  const id = () => Math.floor(rng.next() * SHAPE.vocab);
  const input = Array.from({ length: n }, id);
  const targets = new Int32Array(n).fill(-1);
  for (let i = first; i < n; i++) targets[i] = id();
  return { input, targets };
}

/** One model's full logits at one position: log-sum-exp, NLL of the target, argmax, probabilities and log-probabilities. */
interface Row {
  lse: number;
  nll: number;
  top: number;
  p: Float64Array;
  logp: Float64Array;
}

/** One position of one model, straight from the definitions (plain f64 loops over the full row). */
function row(h: Float32Array, at: number, head: Float32Array, target: number): Row {
  const { vocab, hidden } = SHAPE;
  const logits = new Float32Array(vocab);
  for (let v = 0; v < vocab; v++) logits[v] = Math.fround(h[at * hidden + (v % hidden)]! * head[v * hidden + (v % hidden)]!);
  let max = -Infinity;
  let top = 0;
  for (let v = 0; v < vocab; v++) {
    if (logits[v]! > max) {
      max = logits[v]!;
      top = v;
    }
  }
  const p = new Float64Array(vocab);
  let sum = 0;
  for (let v = 0; v < vocab; v++) sum += p[v] = Math.exp(logits[v]! - max);
  const lse = max + Math.log(sum);
  const logp = new Float64Array(vocab);
  for (let v = 0; v < vocab; v++) {
    p[v]! /= sum;
    logp[v] = logits[v]! - lse;
  }
  return { lse, nll: lse - logits[target]!, top, p, logp };
}

function kl(p: Row, q: Row): number {
  let s = 0;
  for (let v = 0; v < p.p.length; v++) s += p.p[v]! * (p.logp[v]! - q.logp[v]!);
  return Math.max(0, s);
}

/** What scoring needs of one scored position: model and reference NLL, KL both ways, whether the top tokens agree. */
interface Position {
  nll: number;
  refNll: number;
  forward: number;
  reverse: number;
  agree: number;
}

function position(hModel: Float32Array, hRef: Float32Array, at: number, head: Float32Array, target: number): Position {
  const m = row(hModel, at, head, target);
  const r = row(hRef, at, head, target);
  return { nll: m.nll, refNll: r.nll, forward: kl(r, m), reverse: kl(m, r), agree: Number(m.top === r.top) };
}

function close(actual: number, expected: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= 1e-9 * Math.abs(expected), `${what}: ${actual}, expected ${expected}`);
}

describe('scoring across logit chunks', () => {
  it('equals the per-position computation from full logits, KL from inside the second chunk and on all positions', async () => {
    assert.equal(chunkRows(SHAPE.vocab), 111);
    const rng = createRng(11);
    const weights = tinyLlamaWeights({ ...SHAPE, vocab: 8 }, 3);
    weights['model.embed_tokens.weight'] = { shape: [SHAPE.vocab, SHAPE.hidden], data: Float32Array.from({ length: SHAPE.vocab * SHAPE.hidden }, () => 2 * rng.next() - 1) };
    const head = sparseHead(rng);
    weights['lm_head.weight'] = { shape: [SHAPE.vocab, SHAPE.hidden], data: head };
    const dir = await folder('m');
    await writeTinyLlama(dir, weights, tinyLlamaConfig(SHAPE));
    // the model: other final norm weights; the second model is the reference itself (KL 0, full agreement)
    const norm = Float32Array.from({ length: SHAPE.hidden }, () => 0.5 + rng.next());
    const model = await Engine.open(dir, [], backend, undefined, new Map([['model.norm.weight', norm]]));
    const same = await Engine.open(dir, [], backend);
    const ref = await Engine.open(dir, [], backend);
    try {
      // 225 scored positions (chunks of 111, 111, 3) and a one-chunk window after it in the same group
      const wins = [window(rng, 235, 10), window(rng, 10, 0)];
      const [hModel, hRef] = [(await hiddenStates(model, wins)).x, (await hiddenStates(ref, wins)).x];
      // per window, per scored position
      const plain: Position[][] = [];
      let offset = 0;
      for (const w of wins) {
        const rows: Position[] = [];
        w.targets.forEach((t, i) => t >= 0 && rows.push(position(hModel, hRef, offset + i, head, t)));
        plain.push(rows);
        offset += w.input.length;
      }
      for (const klPositions of [{ tail: TAIL }, 'all'] as KlPositions[]) {
        const [scores, self] = (await scoreWindows([model, same], ref, wins, { klPositions })) as [WindowScore[], WindowScore[]];
        plain.forEach((rows, w) => {
          const klFrom = klPositions === 'all' ? 0 : Math.max(0, rows.length - TAIL);
          const at = `${JSON.stringify(klPositions)}, window ${w}`;
          const sum = (f: (p: Position) => number, from = 0) => rows.slice(from).reduce((a, p) => a + f(p), 0);
          const s = scores[w]!;
          assert.equal(s.scored, rows.length, at);
          assert.equal(s.klPositions, rows.length - klFrom, at);
          close(s.nll, sum((p) => p.nll), `${at}: NLL`);
          close(s.refNll, sum((p) => p.refNll), `${at}: reference NLL`);
          close(s.klForward, sum((p) => p.forward, klFrom), `${at}: KL(reference ‖ model)`);
          close(s.klReverse, sum((p) => p.reverse, klFrom), `${at}: KL(model ‖ reference)`);
          assert.equal(s.agree, sum((p) => p.agree, klFrom), `${at}: top-1 agreement`);
          // the reference scored against itself: every KL row is its own
          const t = self[w]!;
          close(t.nll, s.refNll, `${at}: the reference's NLL as a model`);
          assert.deepEqual([t.klForward, t.klReverse, t.agree], [0, 0, t.klPositions], `${at}: the reference against itself`);
        });
        if (klPositions !== 'all') {
          // the case this test is for: the first KL position inside the second chunk
          const klFrom = plain[0]!.length - TAIL;
          assert.ok(klFrom > 111 && klFrom < 222 && plain[0]!.length > 222);
        }
      }
    } finally {
      await Promise.all([model.close(), same.close(), ref.close()]);
    }
  });
});
