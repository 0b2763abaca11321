/**
 * `extract --eval-text`: the extracted adapter, applied to A on the fly, against B on real trained
 * models (tinyfam: llama-ft-a is llama-base with the rank-8 lora-a merged in bf16), and the usage
 * errors, which stop before any extraction.
 */
import assert from 'node:assert/strict';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { extractLora } from '../../src/extract/index.js';
import { evaluateExtraction } from '../../src/extract/evaluate.js';
import { evaluate } from '../../src/eval/eval.js';
import type { ProgressEvent } from '../../src/progress.js';
import { extractOptionsFromFlags, formatExtractReport, registerExtract } from '../../src/cli/extract.js';
import { UsageError } from '../../src/errors.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { runCommandInProcess } from '../helpers/cli.js';
import { TINYFAM, tinyfamReference } from '../helpers/tinyfam.js';

const A = join(TINYFAM, 'llama-base');
const B = join(TINYFAM, 'llama-ft-a');
const TEXT = join(TINYFAM, 'eval-a.txt');

let root: string;
before(async () => {
  root = await makeTempDir('loraforge-extract-eval-');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('extract with evalText (tinyfam)', () => {
  let kl8 = 0;
  it('rank 8 recovers lora-a: PPL of A + adapter is the reference llama-base+lora-a one, KL(B ‖ A + adapter) tiny', async () => {
    const out = join(root, 'r8');
    const r = await extractLora({ modelA: A, modelB: B, out, policy: { mode: 'rank', rank: 8 }, evalText: { text: TEXT, lines: true, ctx: 128, maxTokens: 1024 } });
    const e = r.eval!;
    assert.equal(e.windows, 8);
    assert.equal(e.scoredPositions, 1024);
    const models = (await tinyfamReference()).perplexity['eval-a.txt']!.models;
    const ppl8 = (name: string) => Math.exp(models[name]!.window_mean_nll_first8.reduce((a, b) => a + b, 0) / 8);
    assert.ok(Math.abs(e.perplexity.aPlusAdapter / ppl8('llama-base+lora-a') - 1) < 1e-3, `A + adapter ${e.perplexity.aPlusAdapter} vs ${ppl8('llama-base+lora-a')}`);
    assert.ok(Math.abs(e.perplexity.a / ppl8('llama-base') - 1) < 1e-3, `A ${e.perplexity.a}`);
    assert.ok(Math.abs(e.perplexity.b / ppl8('llama-ft-a') - 1) < 1e-3, `B ${e.perplexity.b}`);
    assert.ok(e.kl < 1e-3, `KL ${e.kl}`);
    assert.ok(e.klWithoutAdapter > 0.05, `KL(B ‖ A) ${e.klWithoutAdapter}`);
    assert.ok(e.top1Agreement > 0.99 && e.top1AgreementWithoutAdapter < 0.9);
    kl8 = e.kl;
    // report.json in the adapter folder carries the evaluation too
    const saved = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    assert.deepEqual(saved.eval.perplexity, e.perplexity);
    const text = formatExtractReport(r);
    assert.match(text, /perplexity: B 187\.9\d, A 206\.6\d, A \+ adapter 187\.9\d/);
    assert.match(text, /KL\(B ‖ A \+ adapter\) \S+ nats \(KL\(B ‖ A\) 0\.09\d+, (99\.\d\d|100\.00)% of KL\(B ‖ A\) closed\)/);
  });

  it('B runs once for both comparisons, and every number is the one two separate evaluations give', async () => {
    const ev = { text: TEXT, lines: true, ctx: 128, maxTokens: 128 };
    const events: ProgressEvent[] = [];
    const e = await evaluateExtraction({ modelA: A, modelB: B, adapter: join(root, 'r8'), eval: ev, onProgress: (p) => events.push(p) });
    // the two evaluations it replaces: A + adapter against B, then A against B
    const common = { model: A, text: TEXT, lines: true, ctx: 128, maxTokens: 128, reference: { model: B } };
    const adapted = await evaluate({ ...common, adapters: [{ dir: join(root, 'r8') }] });
    const plain = await evaluate(common);
    assert.deepEqual({ ...e, seconds: 0 }, {
      text: TEXT,
      mode: 'lines',
      ctx: 128,
      windows: 1,
      scoredPositions: 128,
      perplexity: { b: adapted.reference!.perplexity, a: plain.perplexity, aPlusAdapter: adapted.perplexity },
      kl: adapted.reference!.kl.forward,
      klWithoutAdapter: plain.reference!.kl.forward,
      top1Agreement: adapted.reference!.top1Agreement,
      top1AgreementWithoutAdapter: plain.reference!.top1Agreement,
      seconds: 0,
    });
    assert.equal(plain.reference!.perplexity, adapted.reference!.perplexity);
    // B's layers once, A's twice (with and without the adapter)
    const layers = (who: RegExp) => events.filter((p) => p.phase === 'eval' && who.test(p.name)).length;
    const depth = layers(/^reference layer/);
    assert.ok(depth > 0);
    assert.equal(layers(/^model 1 layer/), depth);
    assert.equal(layers(/^model 2 layer/), depth);
    assert.equal(events.filter((p) => p.phase === 'eval').length, 3 * depth);
  });

  it('rank 2 leaves a clearly larger KL', async () => {
    const r = await extractLora({ modelA: A, modelB: B, out: join(root, 'r2'), policy: { mode: 'rank', rank: 2 }, evalText: { text: TEXT, lines: true, ctx: 128, maxTokens: 256 } });
    assert.ok(r.eval!.kl > 1e-3 && r.eval!.kl > 100 * kl8, `rank 2: ${r.eval!.kl}, rank 8: ${kl8}`);
    assert.ok(r.eval!.kl < r.eval!.klWithoutAdapter);
  });

  it('an evaluation that fails after extracting keeps the adapter and says so', async () => {
    const short = join(root, 'short.txt');
    await writeFile(short, 'Hello there.\n');
    const out = join(root, 'kept');
    await assert.rejects(
      extractLora({ modelA: A, modelB: B, out, policy: { mode: 'rank', rank: 1 }, include: /layers\.0\.self_attn\.q_proj/, evalText: { text: short, ctx: 128 } }),
      /the adapter was written to .*kept, but evaluating it failed: .*short\.txt: \d+ tokens, fewer than one window of 128/,
    );
    assert.ok((await readdir(out)).includes('adapter_model.safetensors'));
  });
});

describe('extract --eval-text usage errors (before any work)', () => {
  const flags = (extra: Record<string, string | boolean>) => ({ modelA: A, modelB: B, out: 'o', format: 'peft', embeddings: 'skip', seed: '0', ...extra });

  it('flags', () => {
    for (const [extra, message] of [
      [{ evalText: TEXT, format: 'gguf' }, /--eval-text .*not supported with --format gguf/],
      [{ evalLines: true }, /--eval-lines only apply with --eval-text/],
      [{ evalCtx: '64', evalMaxTokens: '10' }, /--eval-ctx, --eval-max-tokens only apply with --eval-text/],
      [{ evalText: TEXT, evalCtx: '1' }, /--eval-ctx must be an integer ≥ 2/],
      [{ evalText: TEXT, evalMaxTokens: '0' }, /--eval-max-tokens must be an integer ≥ 1/],
    ] as const) {
      assert.throws(() => extractOptionsFromFlags(flags(extra)), (err: Error) => err instanceof UsageError && message.test(err.message), JSON.stringify(extra));
    }
    assert.deepEqual(extractOptionsFromFlags(flags({ evalText: TEXT, evalLines: true, evalCtx: '128', evalMaxTokens: '1024', format: 'both' })).evalText, {
      text: TEXT,
      lines: true,
      ctx: 128,
      maxTokens: 1024,
    });
  });

  it('exit 2 for a GGUF output, exit 1 for a missing text: nothing extracted', async () => {
    const out = join(root, 'never');
    const gguf = await runCommandInProcess(registerExtract, ['extract', '--model-a', A, '--model-b', B, '--out', out, '--format', 'gguf', '--eval-text', TEXT]);
    assert.equal(gguf.code, 2, gguf.stderr);
    assert.match(gguf.stderr, /not supported with --format gguf/);
    await assert.rejects(extractLora({ modelA: A, modelB: B, out, format: 'gguf', evalText: { text: TEXT } }), (err: Error) => err instanceof UsageError);
    const missing = await runCommandInProcess(registerExtract, ['extract', '--model-a', A, '--model-b', B, '--out', out, '--eval-text', join(root, 'nope.txt')]);
    assert.equal(missing.code, 1, missing.stderr);
    assert.match(missing.stderr, /nope\.txt/);
    assert.ok(!(await readdir(root)).includes('never'));
  });
});
