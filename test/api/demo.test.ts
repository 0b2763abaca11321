import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { assertSameOutput, reportOf } from '../helpers/api.js';
import { makeTempDir } from '../helpers/synthetic.js';
import { runDemo } from '../../src/index.js';

describe('demo: library and CLI', () => {
  let root: string;
  before(async () => (root = await makeTempDir('lf-api-demo-')));
  after(() => rm(root, { recursive: true, force: true }));

  it('write the same adapter and report the same result', async () => {
    const lib = join(root, 'lib');
    const cli = join(root, 'cli');
    const result = await runDemo({ out: lib, seed: 1 });
    const r = await runCli(['demo', '--out', cli, '--seed', '1', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(reportOf(r.stdout, cli), reportOf(JSON.stringify(result), lib));
    await assertSameOutput(lib, cli);
  });
});
