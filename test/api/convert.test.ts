import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { apiFixture, assertSameOutput, type ApiFixture } from '../helpers/api.js';
import { convertAdapter, edoraInit } from '../../src/index.js';

describe('convert: library and CLI', () => {
  let fx: ApiFixture;
  before(async () => (fx = await apiFixture('lf-api-convert-')));
  after(() => fx.remove());

  it('write the same LoRA adapter for the same EDoRA adapter', async () => {
    const edora = join(fx.root, 'edora');
    await edoraInit({ base: fx.a, rank: 2, targetModules: ['q_proj'], out: edora, sigma: 0.1 });
    const lib = join(fx.root, 'lib');
    const cli = join(fx.root, 'cli');
    await convertAdapter({ adapter: edora, base: fx.a, out: lib, policy: { mode: 'rank', rank: 3 }, seed: 5 });
    const r = await runCli(['convert', '--adapter', edora, '--base', fx.a, '--rank', '3', '--seed', '5', '--out', cli]);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });
});
