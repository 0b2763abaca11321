import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { apiFixture, adapterOf, assertSameOutput, type ApiFixture } from '../helpers/api.js';
import { adapterSpectrum, deltaSpectrum, writeSpectrumOutputs } from '../../src/index.js';

describe('spectrum: library and CLI', () => {
  let fx: ApiFixture;
  before(async () => (fx = await apiFixture('lf-api-spectrum-')));
  after(() => fx.remove());

  it('write the same report of an adapter', async () => {
    const adapter = await adapterOf(fx, 'adapter');
    const lib = join(fx.root, 'lib-adapter');
    const cli = join(fx.root, 'cli-adapter');
    await writeSpectrumOutputs({ result: await adapterSpectrum({ adapter, top: 4 }), out: lib, png: false });
    const r = await runCli(['spectrum', '--adapter', adapter, '--top', '4', '--no-png', '--out', cli]);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });

  it('write the same report of a model pair', async () => {
    const lib = join(fx.root, 'lib-pair');
    const cli = join(fx.root, 'cli-pair');
    await writeSpectrumOutputs({ result: await deltaSpectrum({ modelA: fx.a, modelB: fx.b, top: 4, seed: 1 }), out: lib, png: false });
    const r = await runCli(['spectrum', '--model-a', fx.a, '--model-b', fx.b, '--top', '4', '--seed', '1', '--no-png', '--out', cli]);
    assert.equal(r.code, 0, r.stderr);
    await assertSameOutput(lib, cli);
  });
});
