import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli.js';
import { writeTinyModel } from '../helpers/merge.js';
import { makeTempDir } from '../helpers/synthetic.js';

let dir: string;

before(async () => {
  dir = await makeTempDir('loraforge-merge-cli-');
  await writeTinyModel(join(dir, 'base'), { seed: 1, tokenizer: 'base' });
  await writeTinyModel(join(dir, 'a'), { seed: 2 });
  await writeFile(
    join(dir, 'ties.yaml'),
    'merge_method: ties\nbase_model: ./base\nmodels:\n  - model: ./a\n    parameters: {weight: 1, density: 0.5}\ndtype: bfloat16\ntokenizer_source: base\n',
  );
  await mkdir(join(dir, 'busy'));
  await writeFile(join(dir, 'busy', 'x'), 'x');
  await writeFile(join(dir, 'della.yaml'), 'merge_method: della\nbase_model: ./base\nmodels:\n  - model: ./a\n    parameters: {weight: 1, density: 0.5, epsilon: 0.5}\n');
  await writeTinyModel(join(dir, 'wide'), { seed: 3, hidden: 16 });
  await writeFile(join(dir, 'slerp.yaml'), 'merge_method: slerp\nbase_model: ./base\nmodels:\n  - model: ./a\n');
  await writeFile(join(dir, 'count.yaml'), 'merge_method: slerp\nbase_model: ./base\nparameters: {t: 0.5}\nslices:\n  - sources:\n      - model: ./a\n        layer_range: [0, 3]\n      - model: ./base\n        layer_range: [0, 4]\n');
  await writeFile(join(dir, 'wide.yaml'), 'merge_method: linear\nmodels:\n  - model: ./a\n    parameters: {weight: 1}\n  - model: ./wide\n    parameters: {weight: 1}\n');
  await writeFile(join(dir, 'typo.yaml'), 'merge_method: ties\nbase_model: ./base\nmodels:\n  - model: ./a\n    parameters: {weigth: 1}\n');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('loraforge merge', () => {
  it('merges and prints a JSON summary', async () => {
    const r = await runCli(['merge', 'ties.yaml', '--out', 'merged', '--json', '--shard-size', '2KB'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.method, 'ties');
    assert.equal(report.tensors, 30);
    assert.equal(report.dtypes.BF16, 30);
    assert.ok(report.shards > 1);
    assert.deepEqual((await readdir(join(dir, 'merged'))).filter((f) => f.endsWith('.json')).sort(), [
      'config.json',
      'generation_config.json',
      'model.safetensors.index.json',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
  });

  it('fails on a config error located at its YAML line, a bad flag or a non-empty --out (exit 2), and documents itself in --help', async () => {
    // independent runs, started together: each CLI start costs a second or two
    const [typo, della, badSize, busy, help] = await Promise.all([
      runCli(['merge', 'typo.yaml', '--out', 'never'], { cwd: dir }),
      runCli(['merge', 'della.yaml', '--out', 'never'], { cwd: dir }),
      runCli(['merge', 'ties.yaml', '--out', 'y', '--shard-size', 'lots'], { cwd: dir }),
      runCli(['merge', 'ties.yaml', '--out', 'busy'], { cwd: dir }),
      runCli(['merge', '--help']),
    ]);
    assert.equal(busy.code, 2);
    assert.match(busy.stderr, /--out busy exists and is not empty: choose another folder or pass --force to replace it/);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /^loraforge: typo\.yaml:5:26: models\[0\]\.parameters\.weigth: unknown parameter "weigth"; valid per-model parameters for ties: weight, density\n$/);
    // mergekit's error_della_epsilon: refused before anything is read, at the model's line
    assert.equal(della.code, 2);
    assert.match(della.stderr, /^loraforge: della\.yaml:4:5: models\[0\]: density 0\.5 ± epsilon 0\.5 must stay inside \(0, 1\) .*: use an epsilon below 0\.5 \(tensor "model\.embed_tokens\.weight"\)\n$/);
    assert.equal(badSize.code, 2);
    assert.match(badSize.stderr, /--shard-size: invalid shard size "lots"/);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /dare_ties .*\n.*per model: weight \(required\), density=1; merge-wide: normalize=false, lambda=1, rescale=true/);
    assert.match(help.stdout, /Examples:\n/);
  });

  it('planner checks are config mistakes too (exit 2, YAML line); models that do not fit fail (exit 1)', async () => {
    const [slerp, count, wide] = await Promise.all(['slerp.yaml', 'count.yaml', 'wide.yaml'].map((f) => runCli(['merge', f, '--out', 'never'], { cwd: dir })));
    assert.equal(slerp.code, 2, slerp.stderr);
    assert.match(slerp.stderr, /^loraforge: slerp\.yaml:4:3: models: slerp needs the parameter "t", and none applies to tensor "model\.embed_tokens\.weight": set it under parameters\n$/);
    assert.equal(count.code, 2, count.stderr);
    assert.match(count.stderr, /^loraforge: count\.yaml:8:9: slices\[0\]\.sources\[1\]: layer_range \[0, 4\] is out of bounds: \.\/base has 3 layers/);
    assert.equal(wide.code, 1, wide.stderr);
    assert.match(wide.stderr, /^loraforge: tensor "model\.layers\.0\.input_layernorm\.weight" has shape \[8\] in .*a but \[16\] in .*wide: the models are not the same architecture and size \(only embeddings \(embed_tokens, lm_head\) are cut to a common shape\)\n$/);
  });

  it('replaces a non-empty --out with --force and prints a readable summary', async () => {
    const forced = await runCli(['merge', 'ties.yaml', '--out', 'busy', '--force', '--quiet'], { cwd: dir });
    assert.equal(forced.code, 0, forced.stderr);
    assert.ok(!(await readdir(join(dir, 'busy'))).includes('x'));
    assert.match(forced.stdout, /merged 2 model\(s\) with ties into busy/);
    assert.match(forced.stdout, /wrote 30 tensors \(3 layers; BF16×30\), .* in 1 shard\(s\)/);
  });

  it('--max-memory: any size merges the same bytes (one merge always runs); a size it cannot read is exit 2', async () => {
    const [small, bad] = await Promise.all([
      runCli(['merge', 'ties.yaml', '--out', 'tight', '--max-memory', '1KB', '--quiet'], { cwd: dir }),
      runCli(['merge', 'ties.yaml', '--out', 'never', '--max-memory', 'plenty'], { cwd: dir }),
    ]);
    assert.equal(small.code, 0, small.stderr);
    const wide = await runCli(['merge', 'ties.yaml', '--out', 'wide-budget', '--max-memory', '1GB', '--quiet'], { cwd: dir });
    assert.equal(wide.code, 0, wide.stderr);
    assert.deepEqual(await readFile(join(dir, 'tight', 'model.safetensors')), await readFile(join(dir, 'wide-budget', 'model.safetensors')));
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--max-memory: "plenty" is not a size/);
  });
});
