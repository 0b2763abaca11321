import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { apiFixture, assertSameOutput, type ApiFixture } from '../helpers/api.js';
import { convertToGguf } from '../../src/index.js';

describe('to-gguf: library and CLI', () => {
  let fx: ApiFixture;
  before(async () => (fx = await apiFixture('lf-api-to-gguf-')));
  after(() => fx.remove());

  it('write the same GGUF file for the same model', async () => {
    const lib = join(fx.root, 'lib.gguf');
    const cli = join(fx.root, 'cli.gguf');
    await convertToGguf({ model: fx.b, out: lib, dtype: 'F32' });
    const r = await runCli(['to-gguf', fx.b, '--out', cli, '--dtype', 'f32']);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });
});
