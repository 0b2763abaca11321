/**
 * Merges with a tokenizer setting (tokenizer_source, the tokenizer: block, chat_template): two
 * tiny models whose tokenizers are tinyfam's llama-base tokenizer plus a few added tokens each,
 * checked row by row against mergekit's rules (tokenizer/build.py, tokenizer/embed.py).
 */
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UsageError } from '../../src/errors.js';
import { mergeModels } from '../../src/merge/index.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { readModel, writeTinyModel, type TensorMap } from '../helpers/merge.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { TINYFAM } from '../helpers/tinyfam.js';

// 32004 × 16 rows is past the size merged in a worker thread: the union case runs there, the block case inline (worker: false)
const H = 16;
let root: string;
let a: TensorMap;
let b: TensorMap;

/** llama-base's tokenizer files with `tokens` appended as added tokens (ids 32000…). */
async function writeTokenizer(dir: string, tokens: string[], chatTemplate?: string): Promise<void> {
  const json = JSON.parse(await readFile(join(TINYFAM, 'llama-base', 'tokenizer.json'), 'utf8'));
  const config = JSON.parse(await readFile(join(TINYFAM, 'llama-base', 'tokenizer_config.json'), 'utf8'));
  tokens.forEach((content, i) => {
    const entry = { id: 32000 + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
    json.added_tokens.push(entry);
    config.added_tokens_decoder[String(entry.id)] = { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  });
  if (chatTemplate) config.chat_template = chatTemplate;
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(json));
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
}

const row = (t: { data: Float32Array }, r: number) => Array.from(t.data.subarray(r * H, (r + 1) * H));
const mean = (x: number[], y: number[]) => x.map((v, i) => (v + y[i]) / 2);
const close = (actual: number[], expected: number[], what: string) => actual.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-6, `${what}[${i}]: ${v} vs ${expected[i]}`));

before(async () => {
  root = await makeTempDir('loraforge-merge-tok-');
  const dirA = join(root, 'a');
  const dirB = join(root, 'b');
  await Promise.all([mkdir(dirA), mkdir(dirB)]);
  // A adds <|a1|> <|a2|> <|both|>; B adds <|both|> <|b1|>: <|both|> sits at another id in each
  a = await writeTinyModel(dirA, { seed: 1, layers: 1, hidden: H, vocab: 32003 });
  await writeTokenizer(dirA, ['<|a1|>', '<|a2|>', '<|both|>'], 'template of a and b {{ messages }}');
  b = await writeTinyModel(dirB, { seed: 2, layers: 1, hidden: H, vocab: 32002 });
  await writeTokenizer(dirB, ['<|both|>', '<|b1|>'], 'template of a and b {{ messages }}');
});

after(() => rm(root, { recursive: true, force: true }));

describe('merge with tokenizer_source: union', () => {
  let out: string;
  let merged: Awaited<ReturnType<typeof readModel>>;
  before(async () => {
    out = join(root, 'union');
    await mergeModels({ config: { merge_method: 'linear', models: [{ model: './a', parameters: { weight: 1 } }, { model: './b', parameters: { weight: 1 } }], tokenizer_source: 'union' }, out, cwd: root });
    merged = await readModel(out);
  });

  it('averages shared tokens and takes each added token from the model that has it, row by row', () => {
    for (const name of ['model.embed_tokens.weight', 'lm_head.weight']) {
      const m = merged[name];
      assert.deepEqual(m.shape, [32004, H]);
      for (const r of [0, 1, 2, 500, 31999]) close(row(m, r), mean(row(a[name], r), row(b[name], r)), `${name} row ${r}`);
      close(row(m, 32000), row(a[name], 32000), `${name} <|a1|>`);
      close(row(m, 32001), row(a[name], 32001), `${name} <|a2|>`);
      close(row(m, 32002), mean(row(a[name], 32002), row(b[name], 32000)), `${name} <|both|>`);
      close(row(m, 32003), row(b[name], 32001), `${name} <|b1|>`);
    }
  });

  it('writes a tokenizer that encodes the added tokens to their new ids, and config.json says the rows', async () => {
    const tok = await loadTokenizer(out);
    assert.deepEqual(tok.encode('<|a1|><|both|><|b1|>'), [32000, 32002, 32003]);
    assert.equal(tok.vocabSize, 32004);
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    assert.equal(config.vocab_size, 32004);
    const tokConfig = JSON.parse(await readFile(join(out, 'tokenizer_config.json'), 'utf8'));
    assert.equal(tokConfig.added_tokens_decoder['32003'].content, '<|b1|>');
    assert.equal(tokConfig.added_tokens_decoder['32003'].special, true);
  });
});

describe('merge with a tokenizer: block and tokenizer_source: <model>', () => {
  it('takes per-token sources (zero, another model, forced) and pads to pad_to_multiple_of with the mean row', async () => {
    const out = join(root, 'block');
    const config = {
      merge_method: 'linear',
      models: [{ model: './a', parameters: { weight: 1 } }, { model: './b', parameters: { weight: 1 } }],
      tokenizer: { source: 'union', pad_to_multiple_of: 64, tokens: { '<|a1|>': { source: { kind: 'zero' } }, '<|both|>': { source: './b', force: true }, '<|new|>': { source: { kind: 'model_token', model: './a', token: '<s>' } } } },
    };
    const report = await mergeModels({ config, out, cwd: root, worker: false });
    const name = 'model.embed_tokens.weight';
    const m = (await readModel(out))[name];
    assert.deepEqual(m.shape, [32064, H]);
    // a token in the tokens: block is the source's in every model that lacks it; A has <|a1|>, so its own row stays
    close(row(m, 32000), mean(row(a[name], 32000), new Array(H).fill(0)), '<|a1|>');
    close(row(m, 32002), row(b[name], 32000), '<|both|> forced from b');
    close(row(m, 32004), row(a[name], 1), '<|new|> from a\'s <s>');
    const avg = new Array(H).fill(0);
    for (let r = 0; r < 32005; r++) row(m, r).forEach((v, i) => (avg[i] += v / 32005));
    for (const r of [32005, 32063]) close(row(m, r), avg, `padding row ${r}`);
    assert.equal(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).vocab_size, 32064);
    assert.deepEqual((await loadTokenizer(out)).encode('<|new|>'), [32004]);
    assert.ok(report.files.includes('tokenizer.json'));
  });

  it('tokenizer_source: a model permutes every model into that vocabulary; chat_template: auto takes the common template', async () => {
    const out = join(root, 'from-b');
    await mergeModels({ config: { merge_method: 'linear', models: [{ model: './a', parameters: { weight: 1 } }, { model: './b', parameters: { weight: 1 } }], tokenizer_source: './b', chat_template: 'auto' }, out, cwd: root });
    const name = 'lm_head.weight';
    const m = (await readModel(out))[name];
    assert.deepEqual(m.shape, [32002, H]);
    close(row(m, 32000), mean(row(a[name], 32002), row(b[name], 32000)), '<|both|>');
    close(row(m, 32001), row(b[name], 32001), '<|b1|>');
    assert.deepEqual((await loadTokenizer(out)).encode('<|both|><|b1|>'), [32000, 32001]);
    const tokConfig = JSON.parse(await readFile(join(out, 'tokenizer_config.json'), 'utf8'));
    assert.equal(tokConfig.chat_template, 'template of a and b {{ messages }}');
  });
});

describe('tokenizer settings that cannot work', () => {
  it('names the config entry: a token row from a model that is not merged, or that lacks the token', async () => {
    const models = [{ model: './a', parameters: { weight: 1 } }, { model: './b', parameters: { weight: 1 } }];
    const merge = (tokens: Record<string, unknown>) => mergeModels({ config: { merge_method: 'linear', models, tokenizer: { tokens } }, out: join(root, 'never'), cwd: root, worker: false });
    await assert.rejects(merge({ '<|a1|>': { source: './c' } }), (err: Error) => err instanceof UsageError && /"\.\/c", which is not merged into model\.embed_tokens\.weight/.test(err.message));
    await assert.rejects(merge({ '<|a1|>': { source: './b', force: true } }), (err: Error) => err instanceof UsageError && /token "<\|a1\|>" is not in the vocabulary of "\.\/b"/.test(err.message));
  });
});
