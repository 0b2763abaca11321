import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { apiFixture, assertSameOutput, type ApiFixture } from '../helpers/api.js';
import { writeFile } from 'node:fs/promises';
import { mergeModels } from '../../src/index.js';

describe('merge: library and CLI', () => {
  let fx: ApiFixture;
  before(async () => (fx = await apiFixture('lf-api-merge-')));
  after(() => fx.remove());

  it('write the same model for the same config', async () => {
    const config = join(fx.root, 'ties.yaml');
    await writeFile(config, `merge_method: ties\nbase_model: ${fx.a}\nmodels:\n  - model: ${fx.b}\n    parameters: { weight: 1, density: 0.5 }\n`);
    const lib = join(fx.root, 'lib');
    const cli = join(fx.root, 'cli');
    await mergeModels({ config, out: lib, seed: 2 });
    const r = await runCli(['merge', config, '--out', cli, '--seed', '2']);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });
});
