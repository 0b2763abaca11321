/** eval on the command line: the report, and the errors a user meets (exit 2 usage, exit 1 inputs). */
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { evaluate } from '../../src/index.js';
import { runCli } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { TINYFAM } from '../helpers/tinyfam.js';

const LLAMA = join(TINYFAM, 'llama-base');
let dir: string;
let prompts: string;
before(async () => {
  dir = await makeTempDir('lf-eval-cli-');
  prompts = join(dir, 'prompts.txt');
  await writeFile(prompts, 'The General Assembly\n\nIt was a dark and stormy night\n');
});
after(() => rm(dir, { recursive: true, force: true }));

describe('eval CLI', () => {
  it('--prompts --json: each prompt scored on its own plus the pooled perplexity, the same as the library', async () => {
    const r = await runCli(['eval', '--model', LLAMA, '--prompts', prompts, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.prompts.length, 2);
    // BOS first, every later position scored: "The General Assembly" is 3 tokens → 3 scored
    assert.equal(report.prompts[0].tokens, 4);
    assert.equal(report.prompts[0].scoredPositions, 3);
    const pooled = (report.prompts[0].meanNll * 3 + report.prompts[1].meanNll * report.prompts[1].scoredPositions) / report.scoredPositions;
    assert.ok(Math.abs(pooled - report.meanNll) < 1e-12);
    const lib = await evaluate({ model: LLAMA, prompts });
    assert.equal(lib.perplexity, report.perplexity);
  });

  it('usage errors exit 2 before any work', async () => {
    for (const args of [
      ['eval', '--model', LLAMA],
      ['eval', '--model', LLAMA, '--text', prompts, '--prompts', prompts],
      ['eval', '--model', LLAMA, '--text', prompts, '--kl-positions', 'last:3'],
      ['eval', '--model', LLAMA, '--text', prompts, '--ctx', '64', '--stride', '65'],
    ]) {
      const r = await runCli(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    }
  });

  it('a text shorter than one window, a context beyond the model, an unknown architecture: exit 1 naming the file', async () => {
    const short = await runCli(['eval', '--model', LLAMA, '--text', prompts, '--ctx', '128']);
    assert.equal(short.code, 1);
    assert.match(short.stderr, /prompts\.txt: \d+ tokens, fewer than one window of 128; lower --ctx/);
    const long = await runCli(['eval', '--model', LLAMA, '--text', join(TINYFAM, 'eval-a.txt'), '--lines', '--ctx', '600']);
    assert.equal(long.code, 1);
    assert.match(long.stderr, /exceeds the model's max_position_embeddings \(512\); lower --ctx/);
    const other = join(dir, 'other');
    await mkdir(other);
    const config = JSON.parse(await readFile(join(LLAMA, 'config.json'), 'utf8'));
    await writeFile(join(other, 'config.json'), JSON.stringify({ ...config, model_type: 'gpt2', architectures: ['GPT2LMHeadModel'] }));
    await symlink(join(LLAMA, 'model.safetensors'), join(other, 'model.safetensors'));
    await copyFile(join(LLAMA, 'tokenizer.json'), join(other, 'tokenizer.json'));
    const unknown = await runCli(['eval', '--model', other, '--prompts', prompts]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /config\.json: model_type "gpt2" is not supported by eval\/compare; supported: llama/);
  });

  it('an adapter made for another model is refused naming the module', async () => {
    const r = await runCli(['eval', '--model', join(TINYFAM, 'qwen-base'), '--adapter', join(TINYFAM, 'lora-a'), '--prompts', prompts]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /lora-a: module "model\.layers\.0\.[\w.]+" .*the adapter was made for another base model/);
  });
});
