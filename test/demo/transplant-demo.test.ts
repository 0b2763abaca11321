/** `loraforge demo transplant`: a planted rotation + scale between a base and a wider donor with shuffled ids is found, and the guard sees no change. */
import assert from 'node:assert/strict';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runTransplantDemo, TRANSPLANT_DEMO } from '../../src/demo/transplant-demo.js';
import { registerDemo } from '../../src/cli/demo.js';
import { runCli, runCommandInProcess } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/synthetic.js';

describe('demo transplant', () => {
  let dir: string;
  before(async () => (dir = await makeTempDir('lf-demo-transplant-')));
  after(() => rm(dir, { recursive: true, force: true }));

  it('finds the planted map to bf16 rounding on both stages and keeps perplexity', async () => {
    const r = await runTransplantDemo({ seed: 3 });
    assert.equal(r.recovered, true);
    assert.equal(r.outDir, null);
    assert.equal(r.report.shared.pairs, TRANSPLANT_DEMO.vocab - 2); // every regular token, across the shuffled ids
    assert.deepEqual(r.report.stages.map((s) => [s.stage, s.outcome]), [['embeddings', 'kept'], ['lm_head', 'kept']]);
    for (const s of r.report.stages) {
      assert.ok(s.alignment!.residualBefore > 0.9 && s.alignment!.residualAfter < 0.005, JSON.stringify(s.alignment));
      assert.ok(Math.abs(s.alignment!.scale * TRANSPLANT_DEMO.scale - 1) < 1e-3, `scale ${s.alignment!.scale}`);
      assert.equal(s.alignment!.rank, TRANSPLANT_DEMO.baseWidth);
      assert.ok(s.blended! > 0);
    }
    assert.ok(Math.abs(r.report.final.pplRatio - 1) < 1e-3, `ratio ${r.report.final.pplRatio}`);
    // the temporary folder's paths are not handed out
    assert.equal(r.report.base, 'base');
    assert.deepEqual(r.report.files, []);
  });

  it('the CLI keeps the transplanted model with --out, and refuses --keep and an unknown demo with exit 2', async () => {
    const out = join(dir, 'out');
    const r = await runCli(['demo', 'transplant', '--out', out, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const json = JSON.parse(r.stdout) as { outDir: string; recovered: boolean };
    assert.equal(json.outDir, out);
    assert.equal(json.recovered, true);
    assert.ok((await readdir(out)).includes('model.safetensors'));
    for (const args of [['demo', 'transplant', '--keep'], ['demo', 'graft']]) {
      const bad = await runCommandInProcess(registerDemo, args);
      assert.equal(bad.code, 2, `${args.join(' ')}: ${bad.stderr}`);
    }
  });
});
