/**
 * The library's error classes as callers meet them: a bad input file is an InputError naming file
 * and tensor (message unchanged), and the CLI exits 1 for it; an output that is an input is a
 * UsageError, exit 2.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from './helpers/cli.js';
import { randomMat, writePeftFixture } from './helpers/dora.js';
import { makeTempDir } from './helpers/synthetic.js';
import { writeSafetensorsFile, openSafetensors } from '../src/io/safetensors.js';
import { openPeftAdapter } from '../src/lora/adapter.js';
import { InputError, UsageError } from '../src/errors.js';
import { OutputIsInputError } from '../src/io/atomic.js';

const Q = 'model.layers.0.self_attn.q_proj';

describe('library errors', () => {
  let root: string;
  before(async () => (root = await makeTempDir('lf-errors-')));
  after(() => rm(root, { recursive: true, force: true }));

  it('a NaN read from a safetensors file is an InputError naming the file and the tensor', async () => {
    for (const dtype of ['F32', 'BF16'] as const) {
      const path = join(root, `nan-${dtype}.safetensors`);
      const data = new Float32Array(8).fill(1);
      data[5] = NaN;
      await writeSafetensorsFile(path, [{ name: 'w', shape: [2, 4], data, dtype }]);
      const file = await openSafetensors(path);
      try {
        await assert.rejects(file.read('w'), (err: unknown) => {
          assert.ok(err instanceof InputError, `${dtype}: ${String(err)}`);
          assert.equal(err.message, `${path}: tensor "w" holds NaN at element 5: the file is corrupt or the training diverged; fix or re-export that tensor`);
          assert.deepEqual([err.file, err.tensor], [path, 'w']);
          return true;
        });
      } finally {
        await file.close();
      }
    }
  });

  it('an adapter whose tensors contradict its config is an InputError naming the weights file', async () => {
    const dir = join(root, 'r-mismatch');
    await writePeftFixture(dir, { config: { r: 4, lora_alpha: 8, target_modules: ['q_proj'] }, modules: [{ name: Q, kind: 'linear', A: randomMat(2, 8, 1), B: randomMat(8, 2, 2) }] });
    const weights = join(dir, 'adapter_model.safetensors');
    await assert.rejects(openPeftAdapter(dir), (err: unknown) => {
      assert.ok(err instanceof InputError, String(err));
      assert.match(err.message, /r-mismatch\/adapter_model\.safetensors: module "model\.layers\.0\.self_attn\.q_proj": adapter_config\.json gives it "r": 4/);
      assert.equal(err.file, weights);
      return true;
    });
    const lopsided = join(root, 'lopsided');
    await writePeftFixture(lopsided, { config: { r: 2, lora_alpha: 2, target_modules: ['q_proj'] }, modules: [{ name: Q, kind: 'linear', A: randomMat(2, 8, 1), B: randomMat(8, 3, 2) }] });
    await assert.rejects(openPeftAdapter(lopsided), (err: unknown) => err instanceof InputError && err.file === join(lopsided, 'adapter_model.safetensors') && /their ranks differ/.test(err.message));
  });

  it('an output that is an input is a UsageError', () => {
    assert.ok(new OutputIsInputError('x') instanceof UsageError);
  });

  it('the CLI exits 1 for an InputError and 2 for an output inside an input', async () => {
    const bad = await runCli(['spectrum', '--adapter', join(root, 'r-mismatch'), '--out', join(root, 'spec')]);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /^loraforge: .*r-mismatch\/adapter_model\.safetensors: module .* gives it "r": 4/);
    const inside = await runCli(['spectrum', '--adapter', join(root, 'r-mismatch'), '--out', join(root, 'r-mismatch', 'spec')]);
    assert.equal(inside.code, 2, inside.stderr);
    assert.match(inside.stderr, /is inside the input/);
  });
});
