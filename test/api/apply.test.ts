import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { apiFixture, adapterOf, assertSameOutput, type ApiFixture } from '../helpers/api.js';
import { applyAdapters } from '../../src/index.js';

describe('apply: library and CLI', () => {
  let fx: ApiFixture;
  before(async () => (fx = await apiFixture('lf-api-apply-')));
  after(() => fx.remove());

  it('write the same model for the same inputs', async () => {
    const adapter = await adapterOf(fx, 'adapter');
    const lib = join(fx.root, 'lib');
    const cli = join(fx.root, 'cli');
    await applyAdapters({ base: fx.a, adapters: [{ dir: adapter, weight: 0.5 }], out: lib });
    const r = await runCli(['apply', '--base', fx.a, '--adapter', `${adapter}:0.5`, '--out', cli]);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });
});
