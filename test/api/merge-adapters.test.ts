import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { apiFixture, adapterOf, assertSameOutput, type ApiFixture } from '../helpers/api.js';
import { mergeAdapters } from '../../src/index.js';

describe('merge-adapters: library and CLI', () => {
  let fx: ApiFixture;
  before(async () => (fx = await apiFixture('lf-api-merge-adapters-')));
  after(() => fx.remove());

  it('write the same adapter and report for the same inputs', async () => {
    const [x, y] = [await adapterOf(fx, 'x'), await adapterOf(fx, 'y', 1)];
    const lib = join(fx.root, 'lib');
    const cli = join(fx.root, 'cli');
    await mergeAdapters({ adapters: [{ path: x, weight: 0.7 }, { path: y, weight: 0.3 }], method: 'ties', density: 0.5, out: lib });
    const r = await runCli(['merge-adapters', '--adapter', `${x}:0.7`, '--adapter', `${y}:0.3`, '--method', 'ties', '--density', '0.5', '--out', cli]);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });
});
