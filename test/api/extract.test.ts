import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { apiFixture, assertSameOutput, type ApiFixture } from '../helpers/api.js';
import { extractLora } from '../../src/index.js';

describe('extract: library and CLI', () => {
  let fx: ApiFixture;
  before(async () => (fx = await apiFixture('lf-api-extract-')));
  after(() => fx.remove());

  it('write the same adapter and report for the same inputs', async () => {
    const lib = join(fx.root, 'lib');
    const cli = join(fx.root, 'cli');
    await extractLora({ modelA: fx.a, modelB: fx.b, out: lib, policy: { mode: 'rank', rank: 2 }, seed: 3 });
    const r = await runCli(['extract', '--model-a', fx.a, '--model-b', fx.b, '--out', cli, '--rank', '2', '--seed', '3']);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });
});
