// Usage errors exit 2 in every command, before any work: checked in process (see runCommandInProcess).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { registerApply } from '../../src/cli/apply.js';
import { registerConvert } from '../../src/cli/convert.js';
import { registerDemo } from '../../src/cli/demo.js';
import { registerEdit } from '../../src/cli/edit.js';
import { registerEdoraInit } from '../../src/cli/edora-init.js';
import { registerExtract } from '../../src/cli/extract.js';
import { registerInspect } from '../../src/cli/inspect.js';
import { registerMergeAdapters } from '../../src/cli/merge-adapters.js';
import { registerMerge } from '../../src/cli/merge.js';
import { registerSpectrum } from '../../src/cli/spectrum.js';
import { registerToGguf } from '../../src/cli/to-gguf.js';
import { runCommandInProcess } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/synthetic.js';

const REGISTER: Record<string, (p: Command) => void> = {
  apply: registerApply,
  convert: registerConvert,
  demo: registerDemo,
  edit: registerEdit,
  'edora-init': registerEdoraInit,
  extract: registerExtract,
  inspect: registerInspect,
  'merge-adapters': registerMergeAdapters,
  merge: registerMerge,
  spectrum: registerSpectrum,
  'to-gguf': registerToGguf,
};

function run(args: string[]) {
  return runCommandInProcess(REGISTER[args[0]], args);
}

let tmp: string;
let base: string;
let lora: string;
let dora: string;
let mergeYaml: string;

before(async () => {
  tmp = await makeTempDir('lf-cli-usage-');
  // only what the checks before any work look at: folders, adapter_config.json, a merge config
  base = join(tmp, 'base');
  lora = join(tmp, 'lora');
  dora = join(tmp, 'dora');
  for (const d of [base, lora, dora]) await mkdir(d);
  await writeFile(join(lora, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 2 }));
  await writeFile(join(dora, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 2, use_dora: true }));
  mergeYaml = join(tmp, 'merge.yaml');
  await writeFile(mergeYaml, `merge_method: linear\nmodels:\n  - model: ${base}\n    parameters: {weight: 0.5}\n  - model: ${lora}\n    parameters: {weight: 0.5}\n`);
  await mkdir(join(tmp, 'busy'));
  await writeFile(join(tmp, 'busy', 'x'), 'x');
});

after(() => rm(tmp, { recursive: true, force: true }));

describe('usage errors exit 2 before any work', () => {
  it('--out that is (inside) an input, in every command that writes one', async () => {
    const inside = (dir: string) => join(dir, 'out');
    const cases: string[][] = [
      ['apply', '--base', base, '--adapter', lora, '--out', inside(base)],
      ['apply', '--base', base, '--adapter', `${lora}:0.5`, '--out', inside(lora)],
      ['convert', '--adapter', lora, '--out', inside(lora)],
      ['edora-init', '--base', base, '--rank', '2', '--target-modules', 'q_proj', '--out', base],
      ['edit', '--adapter', lora, '--zero', '0', '--out', inside(lora)],
      ['extract', '--model-a', base, '--model-b', lora, '--out', inside(base)],
      ['merge-adapters', '--adapter', lora, '--method', 'linear', '--out', lora],
      ['merge', mergeYaml, inside(base)],
      ['spectrum', '--adapter', lora, '--out', inside(lora)],
      ['to-gguf', base, '--out', join(base, 'x.gguf')],
    ];
    for (const args of cases) {
      const r = await run(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /(is|inside|contains) the input/, args.join(' '));
    }
  });

  it('demo with an existing --out, convert of a DoRA adapter without --base, inspect --limit abc', async () => {
    const demo = await run(['demo', '--out', join(tmp, 'busy')]);
    assert.equal(demo.code, 2, demo.stderr);
    assert.match(demo.stderr, /--out .*busy exists and is not empty/);
    const convert = await run(['convert', '--adapter', dora, '--out', join(tmp, 'c')]);
    assert.equal(convert.code, 2, convert.stderr);
    assert.match(convert.stderr, /is a DoRA\/EDoRA adapter: pass --base/);
    // merge-adapters read its --base-config with a bare ENOENT and exit 1; edit's words, exit 2, in both
    for (const cmd of [['merge-adapters', '--adapter', lora, '--method', 'linear'], ['edit', '--adapter', lora, '--zero', '0']]) {
      const r = await run([...cmd, '--out', join(tmp, 'g'), '--format', 'gguf', '--base-config', join(tmp, 'nowhere')]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--base-config .*nowhere: cannot read .*; pass the base model's config\.json or its folder/);
    }
    for (const limit of ['abc', '-1', '1.5']) {
      const inspect = await run(['inspect', base, '--limit', limit]);
      assert.equal(inspect.code, 2, inspect.stderr);
      assert.match(inspect.stderr, /--limit must be an integer ≥ 0/);
    }
  });

  it('one --dtype in every command: common spellings accepted, a bad one names the flag and the accepted values', async () => {
    const withDtype: string[][] = [
      ['apply', '--base', base, '--adapter', lora, '--out', base],
      ['convert', '--adapter', lora, '--out', lora],
      ['edora-init', '--base', base, '--rank', '2', '--target-modules', 'q_proj', '--out', base],
      ['edit', '--adapter', lora, '--zero', '0', '--out', lora],
      ['extract', '--model-a', base, '--model-b', lora, '--out', base],
      ['merge-adapters', '--adapter', lora, '--method', 'linear', '--out', lora],
      ['to-gguf', base, '--out', join(base, 'x.gguf')],
    ];
    for (const args of withDtype) {
      const bad = await run([...args, '--dtype', 'garbage']);
      assert.equal(bad.code, 2, `${args[0]}: ${bad.stderr}`);
      assert.match(bad.stderr, /option '--dtype <dtype>' argument 'garbage' is invalid\. use f32, f16 or bf16 \(also fp32\/float32\/float, fp16\/float16\/half, bfloat16\)/, args[0]);
      // an accepted spelling gets past the flags to the next check (--out is an input)
      for (const spelling of ['fp16', 'float16', 'BF16', 'half']) {
        const ok = await run([...args, '--dtype', spelling]);
        assert.match(ok.stderr, /the input/, `${args[0]} --dtype ${spelling}: ${ok.stderr}`);
      }
    }
  });

  it('--adapter DIR:WEIGHT with a weight that is not a number', async () => {
    for (const args of [
      ['apply', '--base', base, '--adapter', `${lora}:abc`, '--out', join(tmp, 'a')],
      ['merge-adapters', '--adapter', `${lora}:abc`, '--method', 'linear', '--out', join(tmp, 'a')],
    ]) {
      const r = await run(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--adapter .*lora:abc: the weight "abc" after the last ":" is not a number; write DIR:WEIGHT/);
    }
  });

  it('merge: the output folder as mergekit-yaml takes it, once; mergekit-only flags explained', async () => {
    const both = await run(['merge', mergeYaml, join(tmp, 'm1'), '--out', join(tmp, 'm2')]);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /two output folders/);
    const none = await run(['merge', mergeYaml]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no output folder: loraforge merge CONFIG\.yml OUT_DIR \(or --out OUT_DIR\)/);
    const shards = await run(['merge', mergeYaml, join(tmp, 'm1'), '--out-shard-size', '1B']);
    assert.equal(shards.code, 2);
    assert.match(shards.stderr, /--out-shard-size is a mergekit-yaml flag: mergekit counts parameters per shard; loraforge's --shard-size takes bytes/);
    const noTok = await run(['merge', mergeYaml, join(tmp, 'm1'), '--no-copy-tokenizer']);
    assert.equal(noTok.code, 2);
    assert.match(noTok.stderr, /--no-copy-tokenizer is a mergekit-yaml flag/);
  });

  it("to-gguf: llama.cpp's positional model, --outfile and --outtype", async () => {
    const q8 = await run(['to-gguf', base, '--outfile', join(tmp, 'x.gguf'), '--outtype', 'q8_0']);
    assert.equal(q8.code, 2);
    assert.match(q8.stderr, /--outtype <type>' argument 'q8_0' is invalid\. loraforge writes f32, f16 or bf16 .*llama-quantize model-f16\.gguf model-q8_0\.gguf Q8_0/);
    const auto = await run(['to-gguf', base, '--outfile', join(tmp, 'x.gguf'), '--outtype', 'auto']);
    assert.equal(auto.code, 2);
    assert.match(auto.stderr, /name the type: f16 \(the default\) or bf16/);
    const twoModels = await run(['to-gguf', base, '--model', lora, '--out', join(tmp, 'x.gguf')]);
    assert.equal(twoModels.code, 2);
    assert.match(twoModels.stderr, /the model argument and --model give two different model folders/);
    const twoTypes = await run(['to-gguf', base, '--out', join(tmp, 'x.gguf'), '--dtype', 'bf16', '--outtype', 'f16']);
    assert.equal(twoTypes.code, 2);
    assert.match(twoTypes.stderr, /--dtype and --outtype give two different dtypes/);
    const noOut = await run(['to-gguf', base]);
    assert.equal(noOut.code, 2);
    assert.match(noOut.stderr, /no output file: pass --out FILE\.gguf/);
    const noModel = await run(['to-gguf', '--out', join(tmp, 'x.gguf')]);
    assert.equal(noModel.code, 2);
    assert.match(noModel.stderr, /no model folder/);
    // --outfile and --outtype reach the same checks as --out and --dtype
    const aliases = await run(['to-gguf', base, '--outfile', join(base, 'x.gguf'), '--outtype', 'F16']);
    assert.equal(aliases.code, 2);
    assert.match(aliases.stderr, /inside the input/);
  });
});
