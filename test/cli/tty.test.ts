// Runs on a terminal that reports 0 columns (script -qfc, some CI ptys): the bar draws, is cleared
// before the summary is printed, and the run ends with exit 0 (it ended "Invalid count value: -1", exit 1).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readTtyLog, runCli } from '../helpers/cli.js';
import { flat, randomMat, writePeftFixture } from '../helpers/dora.js';
import { writeTinyModel } from '../helpers/merge.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

const Q = 'model.layers.0.self_attn.q_proj';

describe('a terminal of 0 columns', { concurrency: 3 }, async () => {
  const tmp = await makeTempDir('lf-cli-tty-');
  const base = join(tmp, 'base');
  before(async () => {
    await writeModelFolder(base, { [`${Q}.weight`]: { shape: [12, 10], data: flat(randomMat(12, 10, 1)) } });
    await writePeftFixture(join(tmp, 'dora'), {
      config: { r: 2, lora_alpha: 4, use_dora: true },
      modules: [{ name: Q, kind: 'linear', A: randomMat(2, 10, 2, 0.3), B: randomMat(12, 2, 3, 0.3), magnitude: Array.from({ length: 12 }, (_, i) => 3 + i / 10) }],
    });
    await writeTinyModel(join(tmp, 'm1'), { seed: 1 });
    await writeTinyModel(join(tmp, 'm2'), { seed: 2 });
    await writeFile(join(tmp, 'merge.yml'), 'merge_method: linear\nmodels:\n  - model: ./m1\n    parameters: {weight: 0.5}\n  - model: ./m2\n    parameters: {weight: 0.5}\n');
  });
  after(() => rm(tmp, { recursive: true, force: true }));

  const cases: Array<[string, string[], RegExp]> = [
    ['edora-init', ['edora-init', '--base', 'base', '--rank', '2', '--target-modules', 'q_proj', '--out', 'edora'], /initialised 1 EDoRA module/],
    ['convert', ['convert', '--adapter', 'dora', '--base', 'base', '--rank', '2', '--out', 'lora'], /converted .* to plain LoRA/],
    // mergekit-yaml's habits too: the output folder as the second argument, and its own flags noted
    ['merge', ['merge', 'merge.yml', './merged', '--cuda', '--lazy-unpickle', '--allow-crimes', '--copy-tokenizer'], /merged 2 model\(s\) with linear into \.\/merged/],
  ];
  for (const [name, args, summary] of cases) {
    it(`${name}: exit 0, summary printed after the bar is cleared`, async () => {
      const log = join(tmp, `${name}.log`);
      const r = await runCli(args, { cwd: tmp, tty: { columns: 0, log } });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, summary);
      const { barDrawn, printedOverBar } = await readTtyLog(log);
      assert.ok(barDrawn, 'the bar was drawn');
      assert.ok(!printedOverBar, 'the summary was printed over the bar');
      if (name === 'merge') {
        for (const flag of ['--cuda', '--lazy-unpickle', '--allow-crimes', '--copy-tokenizer']) {
          assert.match(r.stderr, new RegExp(`loraforge: note: ${flag} is a mergekit-yaml flag: .*`), flag);
        }
      }
    });
  }
});
