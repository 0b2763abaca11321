import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runCli } from '../helpers/cli.js';
import { apiFixture, adapterOf, type ApiFixture } from '../helpers/api.js';
import { inspectPath } from '../../src/index.js';

describe('inspect: library and CLI', () => {
  let fx: ApiFixture;
  before(async () => (fx = await apiFixture('lf-api-inspect-')));
  after(() => fx.remove());

  it('give the same result for a model and an adapter', async () => {
    for (const path of [fx.a, await adapterOf(fx, 'adapter')]) {
      const r = await runCli(['inspect', path, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), JSON.parse(JSON.stringify(await inspectPath({ path }))), path);
    }
  });
});
