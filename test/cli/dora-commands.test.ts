import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { flat, maxAbsDiff, naiveMerge, randomMat, unflat, writePeftFixture, type PeftModuleFixture } from '../helpers/dora.js';

const BIN = fileURLToPath(new URL('../../bin/loraforge.js', import.meta.url));

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, NO_COLOR: '1' } }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const Q = 'model.layers.0.self_attn.q_proj';
const W = randomMat(12, 10, 1);

// each test spawns its own processes on its own files: let them overlap
describe('CLI: apply, convert, edora-init', { concurrency: 3 }, async () => {
  const tmp = await makeTempDir('lf-dora-cli-');
  const base = join(tmp, 'base');
  const dora: PeftModuleFixture = { name: Q, kind: 'linear', A: randomMat(2, 10, 2, 0.3), B: randomMat(12, 2, 3, 0.3), magnitude: randomMat(1, 12, 4)[0].map((x) => Math.fround(3 + Math.abs(x))) };
  before(async () => {
    await writeModelFolder(base, { [`${Q}.weight`]: { shape: [12, 10], data: flat(W) }, 'model.norm.weight': { shape: [10], data: new Float32Array(10).fill(1) } });
    await writePeftFixture(join(tmp, 'dora'), { config: { r: 2, lora_alpha: 4, use_dora: true }, modules: [dora] });
  });
  after(() => rm(tmp, { recursive: true, force: true }));

  it('apply --json merges with a weight and writes a model folder', async () => {
    const out = join(tmp, 'merged');
    const r = await run(['apply', '--base', base, '--adapter', `${join(tmp, 'dora')}:0.5`, '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.adapters[0].weight, 0.5);
    assert.equal(report.changedTensors, 1);
    const ckpt = await openCheckpoint(out);
    const got = unflat(await ckpt.read(`${Q}.weight`), 12, 10);
    await ckpt.close();
    assert.ok(maxAbsDiff(got, naiveMerge(W, dora, 2, 0.5)) < 1e-5);
    assert.ok((await readdir(out)).includes('config.json'));
    // a second run into the same folder needs --force
    const again = await run(['apply', '--base', base, '--adapter', join(tmp, 'dora'), '--out', out]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /--force/);
  });

  it('edora-init then convert --json report per-module errors', async () => {
    const init = join(tmp, 'edora');
    const r1 = await run(['edora-init', '--base', base, '--rank', '3', '--target-modules', 'q_proj', '--out', init, '--seed', '5']);
    assert.equal(r1.code, 0, r1.stderr);
    assert.match(r1.stdout, /initialised 1 EDoRA module\(s\), rank 3/);
    assert.deepEqual((await readdir(init)).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'reconstr_config.json']);

    const r2 = await run(['convert', '--adapter', join(tmp, 'dora'), '--base', base, '--to', 'lora', '--out', join(tmp, 'lora'), '--rank', '10', '--json']);
    assert.equal(r2.code, 0, r2.stderr);
    const report = JSON.parse(r2.stdout);
    assert.equal(report.modules[0].rank, 10);
    assert.ok(report.modules[0].relError < 1e-5);
  });

  it('edora-init on a large model prints one row per module type, as extract does', async () => {
    // 11 layers × (q, k, v, o) = 44 modules, past the 40 rows listed one by one
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (let l = 0; l < 11; l++) {
      for (const [j, m] of ['q_proj', 'k_proj', 'v_proj', 'o_proj'].entries()) {
        const out = m === 'k_proj' || m === 'v_proj' ? 4 : 8;
        tensors[`model.layers.${l}.self_attn.${m}.weight`] = { shape: [out, 8], data: flat(randomMat(out, 8, 100 + 4 * l + j)) };
      }
    }
    const large = join(tmp, 'large');
    await writeModelFolder(large, tensors);
    const r = await run(['edora-init', '--base', large, '--rank', '2', '--target-modules', 'q_proj,k_proj,v_proj,o_proj', '--out', join(tmp, 'large-edora')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /initialised 44 EDoRA module\(s\)/);
    assert.match(r.stdout, /\nmodule\s+modules\s+shape\s+energy kept by B·A\n/);
    for (const [m, shape] of [['q_proj', '8×8'], ['k_proj', '4×8'], ['v_proj', '4×8'], ['o_proj', '8×8']]) {
      assert.match(r.stdout, new RegExp(`\\n${m}\\s+11\\s+${shape}\\s+0\\.\\d{4}–0\\.\\d{4}\\n`));
    }
    assert.doesNotMatch(r.stdout, /model\.layers\.3\.self_attn/);
  });

  it('rejects bad command lines with exit code 2 and shows examples in --help', async () => {
    const noAdapter = await run(['apply', '--base', base, '--out', join(tmp, 'x')]);
    assert.equal(noAdapter.code, 2);
    assert.match(noAdapter.stderr, /--adapter/);
    const both = await run(['convert', '--adapter', join(tmp, 'dora'), '--base', base, '--out', join(tmp, 'y'), '--rank', '2', '--energy', '0.9']);
    assert.equal(both.code, 2);
    const help = await run(['edora-init', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Examples:/);
  });
});
