/**
 * compare: greedy answers with a KV cache against tinyfam's PyTorch references (which recompute
 * the whole sequence at every step), and the command's files and refusals.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compareModels } from '../../src/compare/compare.js';
import { runCli } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { TINYFAM, tinyfamReference, type TinyfamGreedy } from '../helpers/tinyfam.js';
import { rm } from 'node:fs/promises';

let dir: string;
let prompts: string;
before(async () => {
  dir = await makeTempDir('lf-compare-');
  prompts = join(dir, 'prompts.txt');
  const ref = await tinyfamReference();
  await writeFile(prompts, ref.greedy.prompts.slice(0, 3).join('\n') + '\n');
});
after(() => rm(dir, { recursive: true, force: true }));

/** Ids equal up to the reference's first near-tie (margin < 1e-3); margins within 1e-3 there. */
function assertGreedyMatches(ids: number[], want: TinyfamGreedy, label: string): void {
  const firstTie = want.margins.findIndex((m) => m < 1e-3);
  const upTo = firstTie < 0 ? want.new_ids.length : firstTie + 1;
  assert.deepEqual(ids.slice(0, upTo), want.new_ids.slice(0, upTo), `${label}: "${want.prompt}"`);
}

describe('compare', () => {
  it('greedy answers of base + DoRA (on the fly) and of qwen-base equal PyTorch\'s, token for token', async () => {
    const ref = await tinyfamReference();
    const r = await compareModels({
      model: { model: join(TINYFAM, 'llama-base'), adapters: [{ dir: join(TINYFAM, 'dora-a') }] },
      against: { model: join(TINYFAM, 'qwen-base') },
      prompts,
      maxNewTokens: 32,
      ignoreEos: true,
    });
    assert.equal(r.rows.length, 3);
    r.rows.forEach((row, i) => {
      assertGreedyMatches(row.model.ids, ref.greedy.models['llama-base+dora-a']![i]!, 'llama-base+dora-a');
      assertGreedyMatches(row.against.ids, ref.greedy.models['qwen-base']![i]!, 'qwen-base');
      assert.equal(row.model.ids.length, 32);
    });
    assert.equal(r.rows[0]!.model.text, ref.greedy.models['llama-base+dora-a']![0]!.text.replaceAll('</s>', ''));
  });

  it('CLI: stops at EOS, writes results.jsonl and results.md, and never writes over an input', async () => {
    const out = join(dir, 'cmp');
    const args = ['compare', '--model', join(TINYFAM, 'llama-base'), '--adapter', join(TINYFAM, 'lora-a'), '--against', join(TINYFAM, 'llama-ft-a'), '--prompts', prompts, '--max-new-tokens', '8'];
    const r = await runCli([...args, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\| The committee decided to \|/);
    const rows = (await readFile(join(out, 'results.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(rows.length, 3);
    // "I can't believe you" → "." then </s>: the answer ends at EOS
    assert.equal(rows[1].model.ids.at(-1), 2);
    assert.ok(rows[1].model.ids.length < 8);
    // base + lora-a and its BF16-merged copy answer alike
    for (const row of rows) assert.deepEqual(row.model.ids, row.against.ids);
    assert.match(await readFile(join(out, 'results.md'), 'utf8'), /3 of 3 answers identical/);
    const refused = await runCli([...args, '--out', join(TINYFAM, 'lora-a'), '--force']);
    assert.equal(refused.code, 2, refused.stderr);
  });
});
