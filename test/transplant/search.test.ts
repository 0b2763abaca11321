/** transplant --trials: a seeded search, its files, the cache of hidden states, and the same bytes for the same seed. */
import assert from 'node:assert/strict';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildTransplantPair } from '../../src/demo/transplant-demo.js';
import { transplantEmbeddings, type TransplantReport } from '../../src/transplant/transplant.js';
import { makeTempDir } from '../helpers/synthetic.js';

describe('transplant search', () => {
  let dir: string;
  let base: string;
  let donor: string;
  const run = (out: string, extra: Partial<Parameters<typeof transplantEmbeddings>[0]> = {}): Promise<TransplantReport> =>
    transplantEmbeddings({ base, donor, out: join(dir, out), trials: 4, seed: 7, saveTopK: 1, ...extra });

  before(async () => {
    dir = await makeTempDir('lf-transplant-search-');
    base = join(dir, 'base');
    donor = join(dir, 'donor');
    await buildTransplantPair(base, donor, 5);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('writes stats/, pareto.json, best.json and topk/, and the same seed gives the same search and bytes', async () => {
    const a = await run('a');
    await run('b');
    const s = a.search!;
    assert.equal(s.trials, 4);
    assert.ok(s.pareto.length >= 1 && s.pareto.every((t) => t >= 0 && t < 4));
    assert.ok(s.pareto.includes(s.bestTrial) || a.final.pplRatio > 1, 'the best trial is on the front unless it trades perplexity');
    assert.ok(s.cachedHidden > 0, 'lm_head-only candidates reuse hidden states');
    assert.ok(s.trialsPerMinute > 0);
    assert.deepEqual((await readdir(join(dir, 'a', 'stats'))).sort(), ['trial-000.json', 'trial-001.json', 'trial-002.json', 'trial-003.json']);
    for (const f of ['model.safetensors', 'best.json', 'pareto.json', 'stats/trial-002.json']) {
      assert.ok((await readFile(join(dir, 'a', f))).equals(await readFile(join(dir, 'b', f))), `${f} differs between two runs with the same seed`);
    }
    const best = JSON.parse(await readFile(join(dir, 'a', 'best.json'), 'utf8'));
    assert.equal(best.trial, s.bestTrial);
    const topk = await readdir(join(dir, 'a', 'topk'));
    assert.deepEqual(topk, [`1-trial-${s.bestTrial}`]);
    // the best trial's model is the one written at the top
    assert.ok((await readFile(join(dir, 'a', 'topk', topk[0]!, 'model.safetensors'))).equals(await readFile(join(dir, 'a', 'model.safetensors'))));
    // another seed draws other parameters (trial 0 is always the parameters given)
    await run('c', { seed: 8 });
    const params = async (out: string, trial: string) => JSON.parse(await readFile(join(dir, out, 'stats', `trial-${trial}.json`), 'utf8')).params;
    assert.deepEqual(await params('c', '000'), await params('a', '000'));
    assert.notDeepEqual(await params('c', '001'), await params('a', '001'));
  });

  it('without the caches it does more forward passes and finds the same, to the last digit', async () => {
    const cached = await run('d');
    const plain = await run('e', { cacheHidden: false });
    assert.ok(plain.search!.forwards > cached.search!.forwards, `${plain.search!.forwards} vs ${cached.search!.forwards}`);
    assert.equal(plain.search!.cachedHidden, 0);
    assert.ok((await readFile(join(dir, 'd', 'model.safetensors'))).equals(await readFile(join(dir, 'e', 'model.safetensors'))));
    // every reported number, to the last digit (the uncached guard recomputes the base's reference for each candidate)
    assert.deepEqual(plain.final, cached.final);
    assert.deepEqual(plain.stages, cached.stages);
    for (const f of ['best.json', 'pareto.json', 'stats/trial-001.json']) assert.equal(await readFile(join(dir, 'e', f), 'utf8'), await readFile(join(dir, 'd', f), 'utf8'), f);
  });
});
