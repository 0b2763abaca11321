import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../../src/cli/errors.js';
import { checkOutFlag } from '../../src/cli/output.js';
import { readPeftAdapter } from '../../src/lora/adapter.js';
import { runCli } from '../helpers/cli.js';
import { denseUpdate, plantedLora, plantedSum, relMaxDiff, writeAdapter } from '../helpers/spectrum.js';
import { makeTempDir } from '../helpers/synthetic.js';

describe('spectrum and edit commands', async () => {
  const dir = await makeTempDir('lf-spectrum-cli-');
  after(() => rm(dir, { recursive: true, force: true }));
  const q = plantedLora({ name: 'model.layers.0.self_attn.q_proj', out: 16, in: 12, sigma: [4, 2, 1, 0.5], alpha: 8, seed: 3 });
  const v = plantedLora({ name: 'model.layers.1.self_attn.v_proj', out: 8, in: 12, sigma: [3, 1, 0.1, 0.01], alpha: 8, seed: 9 });
  const adapter = join(dir, 'adapter');
  await writeAdapter(adapter, [q.module, v.module]);

  it('spectrum refuses a non-empty --out without --force, then replaces it and prints a JSON summary', async () => {
    const out = join(dir, 'spec');
    await mkdir(out);
    await writeFile(join(out, 'keep.txt'), 'x');
    const busy = await runCli(['spectrum', '--adapter', adapter, '--out', out]);
    assert.equal(busy.code, 2);
    assert.match(busy.stderr, /not empty.*--force/);
    // checked in-process (each CLI run costs a second or two)
    await assert.rejects(checkOutFlag(join(adapter, 'spec'), [adapter], true), (e: unknown) => e instanceof UsageError && /inside the input/.test(e.message));
    await assert.rejects(checkOutFlag(dir, [adapter], true), /contains the input/);

    const r = await runCli(['spectrum', '--adapter', adapter, '--out', out, '--top', '3', '--json', '--force', '--no-png']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.equal(summary.tensors, 2);
    assert.deepEqual(summary.moduleTypes.map((m: { type: string }) => m.type), ['q_proj', 'v_proj']);
    assert.deepEqual((await readdir(out)).sort(), ['charts', 'report.html', 'spectrum.json'], 'the old content is gone');
    const json = JSON.parse(await readFile(join(out, 'spectrum.json'), 'utf8'));
    assert.equal(json.tensors[0].sigma.length, 3);
    assert.ok(Math.abs(json.tensors[0].sigma[0] - 4) < 1e-5);
    const charts = await readdir(join(out, 'charts'));
    assert.ok(charts.includes('heatmap-q_proj.svg'));
    assert.deepEqual(charts.filter((f) => f.endsWith('.png')), [], '--no-png');
    assert.ok((await readFile(join(out, 'report.html'), 'utf8')).includes('<svg'));
  });

  it('edit --zero writes the edited adapter; usage mistakes exit 2', async () => {
    const out = join(dir, 'edited');
    const r = await runCli(['edit', '--adapter', adapter, '--out', out, '--zero', '0', '--modules', 'q_proj', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.deepEqual([summary.edited, summary.copied], [1, 1]);
    const { modules } = await readPeftAdapter(out);
    const m = modules.find((x) => x.name === q.module.name)!;
    assert.equal(m.A.rows, 3);
    assert.ok(relMaxDiff(denseUpdate(m, 8 / 3), plantedSum(q, [0, 1, 1, 1])) < 2e-6);

    const empty = await runCli(['edit', '--adapter', adapter, '--out', join(dir, 'bad'), '--layers', '0']);
    assert.equal(empty.code, 2, empty.stderr);
    assert.match(empty.stderr, /no edit given/);
  });

  it('--help shows examples', async () => {
    const r = await runCli(['edit', '--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Examples:\n\s+loraforge edit /);
  });
});
