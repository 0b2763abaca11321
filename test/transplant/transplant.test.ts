/**
 * `transplant` as a user runs it, on the real tinyfam pair (../shared/testdata/tinyfam): qwen-base
 * (byte-level BPE, width 96, tied) and llama-base (SentencePiece, width 128, untied). Each CLI run
 * takes several seconds, so runs are started once, two at a time, and shared between assertions.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { evaluate } from '../../src/eval/eval.js';
import { convertToGguf } from '../../src/to-gguf/to-gguf.js';
import { sharedVocabulary } from '../../src/vocab/shared.js';
import { registerTransplant } from '../../src/cli/transplant.js';
import type { TransplantReport } from '../../src/transplant/transplant.js';
import { runCli, runCommandInProcess } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { TINYFAM, tinyfamLines } from '../helpers/tinyfam.js';

const QWEN = join(TINYFAM, 'qwen-base');
const LLAMA = join(TINYFAM, 'llama-base');
const EMBED = 'model.embed_tokens.weight';
/** tinyfam's README: qwen-base keeps 109,752 embedding rows at their init, plus 267 padding rows beyond its 151,669-id tokenizer */
const QWEN_UNTRAINED = 109_752 + 267;
/** every blend weight 1 on every trained shared row: the donor's rows wholesale, which no base survives */
const BLEND_ALL_EMB = ['--min-tau-emb', '-1', '--target-emb-frac', '1', '--alpha-floor-emb', '1', '--alpha-cap-emb', '1'];
const BLEND_ALL_HEAD = ['--min-tau-head', '-1', '--target-head-rows', '32000', '--alpha-floor-head', '1', '--alpha-cap-head', '1'];

type Raw = Map<string, { dtype: string; shape: number[]; bytes: Buffer }>;

/** Every tensor of a safetensors file as its raw bytes, plus its dtype and shape. */
async function rawTensors(file: string): Promise<Raw> {
  const buf = await readFile(file);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const start = 8 + headerLength;
  const out: Raw = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    out.set(name, { dtype: t.dtype, shape: t.shape, bytes: buf.subarray(start + t.data_offsets[0], start + t.data_offsets[1]) });
  }
  return out;
}

/** Rows of a 2-D tensor whose bytes differ between two files' copies of it. */
function changedRows(a: Raw, b: Raw, name: string): number[] {
  const x = a.get(name)!;
  const y = b.get(name)!;
  assert.deepEqual(y.shape, x.shape, `${name} shape`);
  assert.equal(y.dtype, x.dtype, `${name} dtype`);
  const rowBytes = x.bytes.length / x.shape[0]!;
  const rows: number[] = [];
  for (let r = 0; r < x.shape[0]!; r++) if (!x.bytes.subarray(r * rowBytes, (r + 1) * rowBytes).equals(y.bytes.subarray(r * rowBytes, (r + 1) * rowBytes))) rows.push(r);
  return rows;
}

/** The names of the tensors whose bytes differ. */
function changedTensors(a: Raw, b: Raw): string[] {
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
  return [...a.keys()].filter((n) => !a.get(n)!.bytes.equals(b.get(n)!.bytes));
}

interface Run {
  out: string;
  report: TransplantReport;
}

describe('transplant on tinyfam', () => {
  let dir: string;
  let prompts: string;
  let promptLines: string[];
  let runs: Record<'qwen' | 'qwenAgain' | 'embBlowUp' | 'headBlowUp', Promise<Run>>;

  async function transplant(name: string, base: string, donor: string, extra: string[]): Promise<Run> {
    const out = join(dir, name);
    const r = await runCli(['transplant', '--base', base, '--donor', donor, '--out', out, '--prompts', prompts, '--json', ...extra]);
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    return { out, report: JSON.parse(r.stdout) as TransplantReport };
  }

  before(async () => {
    dir = await makeTempDir('lf-transplant-');
    prompts = join(dir, 'prompts.txt');
    // a few real sentences keep the guard's forward passes short
    promptLines = (await tinyfamLines('eval.txt')).slice(0, 6);
    await writeFile(prompts, promptLines.join('\n') + '\n');
    // two runs at a time (the machine has two cores); later pairs start when the first pair is done
    const qwen = transplant('qwen', QWEN, LLAMA, []);
    const qwenAgain = transplant('qwen-again', QWEN, LLAMA, []);
    const firstPair = Promise.allSettled([qwen, qwenAgain]);
    const embBlowUp = firstPair.then(() => transplant('emb-blow-up', LLAMA, QWEN, ['--ppl-cap', '1.0001', ...BLEND_ALL_EMB]));
    // embeddings left alone (no cosine reaches 1), so the lm_head stage runs and is the one that trips
    const headBlowUp = firstPair.then(() => transplant('head-blow-up', LLAMA, QWEN, ['--ppl-cap', '1.0001', '--min-tau-emb', '1', ...BLEND_ALL_HEAD]));
    runs = { qwen, qwenAgain, embBlowUp, headBlowUp };
    // no unhandled rejection before a test awaits a run
    for (const p of Object.values(runs)) p.catch(() => {});
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('shared vocabulary qwen-base ← llama-base: 29,234 pairs by kind, and the kinds are right on hand-picked tokens', async () => {
    const { report } = await runs.qwen;
    assert.deepEqual(report.shared.counts, { identical: 10429, 'space-marker': 14187, byte: 131, 'byte-encoding': 4487 });
    assert.equal(report.shared.pairs, 29234);
    assert.equal(report.shared.capped, 0);
    assert.equal(report.shared.baseKind, 'byte-level');
    assert.equal(report.shared.donorKind, 'sentencepiece');

    const v = await sharedVocabulary(QWEN, LLAMA);
    assert.deepEqual(v.counts, report.shared.counts);
    const qwenVocab = (JSON.parse(await readFile(join(QWEN, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } }).model.vocab;
    const llamaVocab = (JSON.parse(await readFile(join(LLAMA, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } }).model.vocab;
    const pairOf = (qwenToken: string) => v.pairs.find((p) => p.baseId === qwenVocab[qwenToken]);
    for (const [q, l, kind] of [
      ['the', 'the', 'identical'],
      ['!', '!', 'identical'],
      ['Ġthe', '▁the', 'space-marker'],
      ['ĠThe', '▁The', 'space-marker'],
      ['Ġ', '▁', 'space-marker'],
      ['Ċ', '<0x0A>', 'byte'], // newline: a byte-level character vs SentencePiece's byte fallback
      ['é', '<0xE9>', 'byte'], // byte 0xE9 alone (not the letter é, which is two bytes in UTF-8)
      ['Ã©', 'é', 'byte-encoding'], // the letter é: UTF-8 C3 A9 in byte-level characters vs the letter itself
    ] as const) {
      const p = pairOf(q);
      assert.ok(p, `${q} has a pair`);
      assert.equal(p.donorId, llamaVocab[l], `${q} pairs with ${l}`);
      assert.equal(p.kind, kind, `${q} ↔ ${l}`);
    }
    // special and added tokens are left out on both sides
    assert.equal(pairOf('<|endoftext|>'), undefined);
  });

  it('qwen-base ← llama-base: residual on the shared rows falls, untrained rows match the README, tied lm_head skipped with the note', async () => {
    const { report } = await runs.qwen;
    const [emb, head] = report.stages;
    assert.equal(emb!.stage, 'embeddings');
    assert.equal(emb!.outcome, 'kept');
    const a = emb!.alignment!;
    assert.equal(a.rank, 96); // the base width: the donor (128) is the wider side
    assert.ok(a.scale > 0);
    // independently trained tiny models share little geometry: the fit explains ~1 % of the base's
    // variance on the shared rows, far above the ~0.005 % two unrelated 96/128-wide tables would give
    assert.ok(a.residualBefore > 0.9999, `before ${a.residualBefore}`);
    assert.ok(a.residualAfter < 0.998 && a.residualAfter < a.residualBefore, `after ${a.residualAfter}`);
    assert.ok(emb!.blended! > 0 && emb!.blended! <= emb!.candidates!, `blended ${emb!.blended} of ${emb!.candidates}`);

    const u = emb!.untrained!;
    assert.equal(u.padding, 267);
    assert.equal(u.rule, 'skip');
    assert.equal(u.replaced, 0);
    assert.ok(Math.abs(u.rows / QWEN_UNTRAINED - 1) < 0.01, `${u.rows} untrained rows vs the README's ${QWEN_UNTRAINED}`);

    assert.deepEqual(head, { stage: 'lm_head', outcome: 'skipped', reason: 'tied embeddings' });
    assert.ok(report.notes.some((n) => n.includes('ties lm_head')), report.notes.join('; '));
  });

  it('the guard on real text: the kept stage is within the cap and its ratio is the final one', async () => {
    const { report } = await runs.qwen;
    const emb = report.stages[0]!;
    assert.ok(emb.pplRatio! > 0.9 && emb.pplRatio! < 3, `ratio ${emb.pplRatio}`);
    assert.equal(report.final.pplRatio, emb.pplRatio);
    assert.ok(Math.abs(report.final.perplexity / report.final.basePerplexity / report.final.pplRatio - 1) < 1e-12);
    assert.ok(report.final.kl.symmetric > 0 && report.final.kl.topK === 512);
  });

  it('the output loads in eval (the report’s perplexities), converts with to-gguf, and rows not blended are the base’s bytes', async () => {
    const { out, report } = await runs.qwen;
    const e = await evaluate({ model: out, promptTexts: promptLines, reference: { model: QWEN }, klTopK: 512, klPositions: { tail: 8 } });
    assert.equal(e.reference!.perplexity, report.final.basePerplexity);
    // the guard measured the float32 candidate; the file holds it rounded to the base's BF16
    assert.ok(Math.abs(e.perplexity / report.final.perplexity - 1) < 1e-3, `eval ${e.perplexity} vs report ${report.final.perplexity}`);

    const gguf = await convertToGguf({ model: out, out: join(dir, 'qwen.gguf'), dtype: 'F16' });
    assert.equal(gguf.arch, 'qwen2');
    assert.ok(gguf.tensors > 0 && gguf.vocabSize > 150_000, `${gguf.tensors} tensors, ${gguf.vocabSize} tokens`);

    const base = await rawTensors(join(QWEN, 'model.safetensors'));
    const got = await rawTensors(join(out, 'model.safetensors'));
    assert.deepEqual(changedTensors(base, got), [EMBED]);
    const rows = changedRows(base, got, EMBED);
    assert.equal(rows.length, report.stages[0]!.blended);
    const shared = new Set((await sharedVocabulary(QWEN, LLAMA)).pairs.map((p) => p.baseId));
    assert.ok(rows.every((r) => shared.has(r)), 'only shared tokens’ rows change');
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
      assert.ok((await readFile(join(out, f))).equals(await readFile(join(QWEN, f))), `${f} copied from the base`);
    }
  });

  it('the same inputs twice give the same bytes', async () => {
    const [a, b] = await Promise.all([runs.qwen, runs.qwenAgain]);
    const files = (await readdir(a.out)).sort();
    assert.deepEqual((await readdir(b.out)).sort(), files);
    for (const f of files) assert.ok((await readFile(join(a.out, f))).equals(await readFile(join(b.out, f))), `${f} differs`);
  });

  it('a forced blow-up of the embedding stage (llama-base, untied) is rolled back, lm_head skipped, the output is the base', async () => {
    const { out, report } = await runs.embBlowUp;
    const [emb, head] = report.stages;
    assert.equal(emb!.outcome, 'rolled back');
    assert.ok(emb!.pplRatio! > 1.0001 && emb!.reason!.includes('above the cap 1.0001'), `${emb!.pplRatio} ${emb!.reason}`);
    // every trained shared row was blended (untrained ones follow --untrained-rows skip)
    assert.equal(emb!.blended, emb!.candidates);
    assert.ok(emb!.blended! > 1000);
    assert.deepEqual(head, { stage: 'lm_head', outcome: 'skipped', reason: 'the embedding stage tripped the guard' });
    assert.equal(report.final.pplRatio, 1);
    const base = await rawTensors(join(LLAMA, 'model.safetensors'));
    assert.deepEqual(changedTensors(base, await rawTensors(join(out, 'model.safetensors'))), []);
  });

  it('a forced blow-up of the lm_head stage is rolled back; the kept (empty) embedding stage stays', async () => {
    const { out, report } = await runs.headBlowUp;
    const [emb, head] = report.stages;
    assert.equal(emb!.outcome, 'kept');
    assert.equal(emb!.blended, 0);
    assert.equal(emb!.pplRatio, 1);
    assert.equal(head!.stage, 'lm_head');
    assert.equal(head!.outcome, 'rolled back');
    assert.ok(head!.alignment!.residualAfter < head!.alignment!.residualBefore);
    assert.ok(head!.blended! > 1000 && head!.pplRatio! > 1.0001, `${head!.blended} rows, ratio ${head!.pplRatio}`);
    assert.equal(report.final.pplRatio, 1);
    const base = await rawTensors(join(LLAMA, 'model.safetensors'));
    assert.deepEqual(changedTensors(base, await rawTensors(join(out, 'model.safetensors'))), []);
  });

  it('too few shared tokens to fit the map: exit 1 with a one-line message', async () => {
    await runs.headBlowUp.catch(() => {}); // after the shared runs: two cores
    const r = await runCli(['transplant', '--base', QWEN, '--donor', LLAMA, '--out', join(dir, 'few'), '--prompts', prompts, '--max-shared', '10']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /only \d+ shared tokens with trained embeddings rows; aligning widths 128 → 96 needs at least 97: the two tokenizers share too little/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });
});

describe('transplant usage errors', () => {
  let dir: string;
  before(async () => (dir = await makeTempDir('lf-transplant-usage-')));
  after(() => rm(dir, { recursive: true, force: true }));

  it('--out equal to --base: exit 2, even with --force', async () => {
    // a folder of its own: the check must refuse before any write, and if it did not, nothing shared is at risk
    const base = join(dir, 'base');
    await mkdir(base);
    await copyFile(join(LLAMA, 'config.json'), join(base, 'config.json'));
    const r = await runCommandInProcess(registerTransplant, ['transplant', '--base', base, '--donor', QWEN, '--out', base, '--force']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /base/);
    assert.deepEqual(await readdir(base), ['config.json']);
  });

  it('a bad --untrained-rows: exit 2 naming the choices', async () => {
    const r = await runCommandInProcess(registerTransplant, ['transplant', '--base', QWEN, '--donor', LLAMA, '--out', join(dir, 'x'), '--untrained-rows', 'keep']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--untrained-rows must be one of skip, donor, blend, got "keep"/);
  });
});
