import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { apiFixture, adapterOf, assertSameOutput, type ApiFixture } from '../helpers/api.js';
import { editAdapter, editDelta } from '../../src/index.js';

describe('edit: library and CLI', () => {
  let fx: ApiFixture;
  before(async () => (fx = await apiFixture('lf-api-edit-')));
  after(() => fx.remove());

  it('write the same adapter when editing an adapter', async () => {
    const adapter = await adapterOf(fx, 'adapter');
    const lib = join(fx.root, 'lib-adapter');
    const cli = join(fx.root, 'cli-adapter');
    await editAdapter({ adapter, out: lib, edit: { zero: [1] } });
    const r = await runCli(['edit', '--adapter', adapter, '--zero', '1', '--out', cli]);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });

  it('write the same adapter when editing a model pair', async () => {
    const lib = join(fx.root, 'lib-pair');
    const cli = join(fx.root, 'cli-pair');
    await editDelta({ modelA: fx.a, modelB: fx.b, rank: 2, out: lib, edit: { scale: new Map([[0, 2]]) }, seed: 1 });
    const r = await runCli(['edit', '--model-a', fx.a, '--model-b', fx.b, '--rank', '2', '--scale', '0:2', '--seed', '1', '--out', cli]);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });
});
