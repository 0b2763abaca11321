import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { apiFixture, assertSameOutput, type ApiFixture } from '../helpers/api.js';
import { edoraInit } from '../../src/index.js';

describe('edora-init: library and CLI', () => {
  let fx: ApiFixture;
  before(async () => (fx = await apiFixture('lf-api-edora-init-')));
  after(() => fx.remove());

  it('write the same adapter for the same inputs', async () => {
    const lib = join(fx.root, 'lib');
    const cli = join(fx.root, 'cli');
    await edoraInit({ base: fx.a, rank: 2, targetModules: ['q_proj', 'v_proj'], out: lib, seed: 4 });
    const r = await runCli(['edora-init', '--base', fx.a, '--rank', '2', '--target-modules', 'q_proj,v_proj', '--seed', '4', '--out', cli]);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });
});
