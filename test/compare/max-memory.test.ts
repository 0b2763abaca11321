/**
 * compare --max-memory: a model whose f32 weights exceed the budget is streamed (every layer read
 * again for every token) with one warning line per such model, and answers exactly as resident.
 */
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compareModels } from '../../src/compare/compare.js';
import { runCli } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { TINYFAM, tinyfamReference } from '../helpers/tinyfam.js';

let dir: string;
let prompts: string;
before(async () => {
  dir = await makeTempDir('lf-compare-memory-');
  prompts = join(dir, 'prompts.txt');
  await writeFile(prompts, (await tinyfamReference()).greedy.prompts.slice(0, 2).join('\n') + '\n');
});
after(() => rm(dir, { recursive: true, force: true }));

describe('compare --max-memory', () => {
  it('streams a model over the budget with one warning, answering as the resident model does', async () => {
    const base = join(TINYFAM, 'llama-base');
    const args = ['compare', '--model', base, '--adapter', join(TINYFAM, 'lora-a'), '--against', base, '--prompts', prompts, '--max-new-tokens', '6', '--ignore-eos', '--json'];
    const streamed = await runCli([...args, '--max-memory', '1MB']);
    assert.equal(streamed.code, 0, streamed.stderr);
    const warnings = streamed.stderr.split('\n').filter((l) => l.startsWith('warning:'));
    assert.equal(warnings.length, 2, streamed.stderr);
    assert.match(warnings[0]!, /llama-base: its weights take .* GB as f32, over the memory budget of 0\.001 GB \(--max-memory\); .*re-reads every layer for every token/);
    const report = JSON.parse(streamed.stdout);
    assert.deepEqual(report.memory, { budget: 1e6, streamed: [base, base] });

    const resident = await compareModels({ model: { model: base, adapters: [{ dir: join(TINYFAM, 'lora-a') }] }, against: { model: base }, prompts, maxNewTokens: 6, ignoreEos: true });
    assert.deepEqual(resident.memory.streamed, [], 'the default budget holds tinyfam whole');
    assert.deepEqual(resident.warnings, []);
    report.rows.forEach((row: { model: { ids: number[] }; against: { ids: number[] } }, i: number) => {
      assert.deepEqual(row.model.ids, resident.rows[i]!.model.ids);
      assert.deepEqual(row.against.ids, resident.rows[i]!.against.ids);
    });

    const bad = await runCli([...args, '--max-memory', 'lots']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--max-memory: "lots" is not a size/);
  });
});
