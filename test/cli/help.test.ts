// Every command's --help: required flags marked, one style for defaults, examples; the command list in the README's order.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
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
import { registerEval } from '../../src/cli/eval.js';
import { registerCompare } from '../../src/cli/compare.js';
import { registerTransplant } from '../../src/cli/transplant.js';
import { REPO_ROOT, runCli, runCommandInProcess } from '../helpers/cli.js';

/** Each command, and the flags it cannot run without (alone or as one of alternatives). */
const COMMANDS: Array<[string, (p: Command) => void, string[]]> = [
  ['demo', registerDemo, []],
  ['extract', registerExtract, ['--model-a', '--model-b', '--out']],
  ['merge-adapters', registerMergeAdapters, ['--adapter', '--method', '--out']],
  ['merge', registerMerge, ['--out']],
  ['spectrum', registerSpectrum, ['--adapter', '--model-a', '--model-b', '--out']],
  ['edit', registerEdit, ['--adapter', '--model-a', '--model-b', '--out']],
  ['apply', registerApply, ['--base', '--adapter', '--out']],
  ['convert', registerConvert, ['--adapter', '--base', '--out']],
  ['edora-init', registerEdoraInit, ['--base', '--rank', '--target-modules', '--out']],
  ['to-gguf', registerToGguf, ['--model', '--out']],
  ['inspect', registerInspect, []],
  ['eval', registerEval, ['--model', '--text', '--prompts']],
  ['compare', registerCompare, ['--model', '--against', '--prompts']],
  ['transplant', registerTransplant, ['--base', '--donor', '--out']],
];

describe('--help', () => {
  for (const [name, register, required] of COMMANDS) {
    it(`${name}: required flags marked, defaults as "(default: x)", examples`, async () => {
      const { code, stdout } = await runCommandInProcess(register, [name, '--help']);
      assert.equal(code, 0);
      assert.doesNotMatch(stdout, /\(default: \[\]\)/);
      const program = new Command();
      register(program);
      const command = program.commands.find((c) => c.name() === name)!;
      const help = command.createHelp();
      for (const option of command.options) {
        const text = help.optionDescription(option);
        if (option.mandatory || required.includes(option.long!)) assert.match(text, /\(required\b|[(;] required\b|\(required:/, `${name} ${option.long}: ${text}`);
        // a default is always "(default: x)" or "…; default: x)", never "(default x)" or "x; default: y"
        assert.equal(text.match(/default/g)?.length ?? 0, text.match(/(\(|; )default: /g)?.length ?? 0, `${name} ${option.long}: ${text}`);
        assert.doesNotMatch(text, /"/, `${name} ${option.long}: values unquoted`);
      }
      assert.match(stdout, new RegExp(`Examples:\\n(.*\\n)*  loraforge ${name} `), `${name} has examples`);
    });
  }

  it('loraforge --help lists the commands in the README order', async () => {
    const script = await readFile(join(REPO_ROOT, 'scripts', 'build-readme.mjs'), 'utf8');
    const order = JSON.parse(/const order = (\[.*?\]);/.exec(script)![1].replace(/'/g, '"')) as string[];
    assert.deepEqual(order, COMMANDS.map(([n]) => n));
    const r = await runCli(['--help']);
    assert.equal(r.code, 0);
    const listed = [...r.stdout.matchAll(/^ {2}([a-z-]+) (?:\[options\]|\[command\])/gm)].map((m) => m[1]).filter((n) => n !== 'help');
    assert.deepEqual(listed, order);
  });
});
