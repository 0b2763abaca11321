/**
 * The engine against PyTorch on real trained models (../shared/testdata/tinyfam, README there):
 * logits, perplexity under the references' convention, KL, with LoRA and DoRA applied on the fly.
 * Tolerances are the README's: PPL within 0.1 %, logits within 1e-3, KL within max(1e-4, 1 %).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { evaluate } from '../../src/eval/eval.js';
import { getBackend } from '../../src/linalg/index.js';
import type { LinalgBackend } from '../../src/linalg/backend.js';
import { Engine } from '../../src/model/engine.js';
import { batchSequence } from '../../src/model/layer.js';
import { TINYFAM, tinyfamReference, type TinyfamReference } from '../helpers/tinyfam.js';

let ref: TinyfamReference;
let backend: LinalgBackend;
before(async () => {
  ref = await tinyfamReference();
  backend = await getBackend();
});
after(() => backend.dispose?.());

const model = (name: string) => join(TINYFAM, name);

describe('eval engine on tinyfam', () => {
  for (const name of ['llama-base', 'qwen-base']) {
    it(`${name}: logits of the debug window match PyTorch's top-5 within 1e-3`, async () => {
      const engine = await Engine.open(model(name), [], backend);
      try {
        const d = ref.debug_top5[name]!;
        const ids = d.input_ids;
        const b = { x: await engine.embed(ids), rows: ids.length, seqs: [batchSequence(engine.spec, 0, ids.length)] };
        await engine.forward(b);
        const logits = await engine.logits(await engine.head(), b.x, ids.length);
        const V = engine.spec.vocab;
        let worst = 0;
        for (const p of d.positions) {
          p.top5_ids.forEach((id, k) => (worst = Math.max(worst, Math.abs(logits[p.pos * V + id]! - p.top5_logits[k]!))));
        }
        assert.ok(worst < 1e-3, `max |Δlogit| ${worst}`);
      } finally {
        await engine.close();
      }
    });
  }

  it('llama-base: eval-a.txt perplexity (sentences + EOS, 128-token windows, BOS) within 0.1%', async () => {
    const r = await evaluate({ model: model('llama-base'), text: model('eval-a.txt'), lines: true, ctx: 128, backend });
    const want = ref.perplexity['eval-a.txt']!.models['llama-base']!;
    assert.equal(r.scoredPositions, ref.perplexity['eval-a.txt']!.llama.scored_positions);
    assert.equal(r.windows, ref.perplexity['eval-a.txt']!.llama.windows);
    assert.equal(r.streamTokens, ref.perplexity['eval-a.txt']!.llama.stream_tokens);
    assert.ok(Math.abs(r.perplexity / want.ppl - 1) < 1e-3, `ppl ${r.perplexity} vs ${want.ppl}`);
    assert.ok(Math.abs(r.meanNll - want.mean_nll) < 1e-3);
  });

  // the reference gives each of the first 8 windows' mean NLL: 8 windows are enough to tell models apart
  const cases: Array<[string, string, string[]]> = [
    ['llama-ft-b', 'llama-ft-b', []],
    ['llama-base+lora-a', 'llama-base', ['lora-a']],
    ['llama-base+dora-a', 'llama-base', ['dora-a']],
  ];
  for (const [refName, base, adapters] of cases) {
    it(`${refName}: the first 8 windows of eval-a.txt within 1e-4 in mean NLL`, async () => {
      const r = await evaluate({ model: model(base), adapters: adapters.map((a) => ({ dir: model(a) })), text: model('eval-a.txt'), lines: true, ctx: 128, maxTokens: 8 * 128, backend });
      const want = ref.perplexity['eval-a.txt']!.models[refName]!.window_mean_nll_first8;
      assert.equal(r.windows, 8);
      const expected = want.reduce((a, b) => a + b, 0) / 8;
      assert.ok(Math.abs(r.meanNll - expected) < 1e-4, `${r.meanNll} vs ${expected}`);
    });
  }

  it('qwen-base (tied head, q/k/v biases, no BOS): the first 8 windows of eval-a.txt, window by window', async () => {
    // 8 windows keep the 151936-way softmax cheap; the reference gives each window's mean NLL
    const want = ref.perplexity['eval-a.txt']!.models['qwen-base']!.window_mean_nll_first8;
    const r = await evaluate({ model: model('qwen-base'), text: model('eval-a.txt'), lines: true, ctx: 128, maxTokens: 8 * 128, backend });
    assert.equal(r.windows, 8);
    assert.equal(r.scoredPositions, 127 * 8);
    assert.equal(r.tokenizer.eosId, 151643);
    assert.equal(r.tokenizer.bosId, undefined);
    // every window scores 127 positions, so the pooled mean is the mean of the window means
    const expected = want.reduce((a, b) => a + b, 0) / 8;
    assert.ok(Math.abs(r.meanNll - expected) < 1e-4, `${r.meanNll} vs ${expected}`);
  });

  it('KL(llama-ft-a ‖ llama-base) both ways on the first 8 windows of eval.txt, within 1%', async () => {
    const r = await evaluate({
      model: model('llama-base'),
      text: model('eval.txt'),
      lines: true,
      ctx: 128,
      maxTokens: 8 * 128,
      reference: { model: model('llama-ft-a') },
      backend,
    });
    const kl = r.reference!.kl;
    assert.equal(kl.positions, 1024);
    const fwd = ref.kl['llama-ft-a||llama-base']!.mean;
    const rev = ref.kl['llama-base||llama-ft-a']!.mean;
    assert.ok(Math.abs(kl.forward - fwd) <= Math.max(1e-4, 0.01 * fwd), `forward ${kl.forward} vs ${fwd}`);
    assert.ok(Math.abs(kl.reverse - rev) <= Math.max(1e-4, 0.01 * rev), `reverse ${kl.reverse} vs ${rev}`);
    assert.equal(kl.symmetric, (kl.forward + kl.reverse) / 2);
    assert.ok(r.reference!.top1Agreement > 0.5 && r.reference!.top1Agreement < 1);
    // the top-K approximation is a lower bound that is close with K = 512
    const approx = await evaluate({
      model: model('llama-base'),
      text: model('eval.txt'),
      lines: true,
      ctx: 128,
      maxTokens: 128,
      klTopK: 512,
      reference: { model: model('llama-ft-a') },
      backend,
    });
    const exact = await evaluate({ model: model('llama-base'), text: model('eval.txt'), lines: true, ctx: 128, maxTokens: 128, reference: { model: model('llama-ft-a') }, backend });
    assert.ok(approx.reference!.kl.forward <= exact.reference!.kl.forward + 1e-9);
    assert.ok(approx.reference!.kl.forward > 0.8 * exact.reference!.kl.forward);
  });
});
