import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import * as loraforge from '../src/index.js';

/** The library entry point(s) of each CLI command: a command missing here fails the test below. */
const ENTRY_POINTS: Record<string, string[]> = {
  demo: ['runDemo'],
  extract: ['extractLora'],
  'merge-adapters': ['mergeAdapters'],
  merge: ['mergeModels', 'executeMerge'],
  spectrum: ['adapterSpectrum', 'deltaSpectrum', 'writeSpectrumOutputs'],
  edit: ['editAdapter', 'editDelta'],
  apply: ['applyAdapters'],
  convert: ['convertAdapter'],
  'edora-init': ['edoraInit'],
  'to-gguf': ['convertToGguf'],
  inspect: ['inspectPath'],
  eval: ['evaluate'],
  compare: ['compareModels'],
  transplant: ['transplantEmbeddings'],
};

/**
 * The commands the CLI registers, read from src/cli/main.ts: each `registerX(program)` call there
 * runs against a fresh program (importing main.ts itself would parse process.argv).
 */
async function cliCommands(): Promise<string[]> {
  const main = readFileSync(new URL('../src/cli/main.ts', import.meta.url), 'utf8');
  const modules = new Map([...main.matchAll(/import \{ (register\w+) \} from '\.\/([\w-]+)\.js';/g)].map((m) => [m[1], m[2]]));
  const calls = [...main.matchAll(/^(register\w+)\(program\);$/gm)].map((m) => m[1]);
  assert.ok(calls.length > 0, 'no registerX(program) calls found in src/cli/main.ts');
  const program = new Command('loraforge');
  for (const fn of calls) {
    const file = modules.get(fn);
    assert.ok(file, `${fn} is called in src/cli/main.ts but not imported from a ./<command>.js module`);
    const mod = (await import(`../src/cli/${file}.ts`)) as Record<string, (p: Command) => void>;
    mod[fn](program);
  }
  return program.commands.map((c) => c.name());
}

describe('the library API', () => {
  it('has an entry point for every CLI command', async () => {
    const commands = await cliCommands();
    assert.ok(commands.length >= 11, `found only ${commands.join(', ')}`);
    for (const command of commands) {
      const names = ENTRY_POINTS[command];
      assert.ok(names, `CLI command "${command}" has no library entry point: export one from src/index.ts and list it in ENTRY_POINTS`);
      for (const name of names) assert.equal(typeof (loraforge as Record<string, unknown>)[name], 'function', `${command}: ${name}`);
    }
    assert.deepEqual(Object.keys(ENTRY_POINTS).filter((c) => !commands.includes(c)), [], 'ENTRY_POINTS lists commands the CLI no longer has');
  });

  it('every entry point takes one params object', () => {
    for (const name of Object.values(ENTRY_POINTS).flat()) {
      const fn = (loraforge as Record<string, unknown>)[name] as (...args: unknown[]) => unknown;
      assert.ok(fn.length <= 1, `${name} declares ${fn.length} parameters`);
    }
  });

  it('exports the error classes, which carry what a caller needs', () => {
    const input = new loraforge.InputError('m.safetensors: tensor "w" holds NaN', { file: 'm.safetensors', tensor: 'w' });
    assert.ok(input instanceof Error);
    assert.deepEqual([input.message, input.file, input.tensor], ['m.safetensors: tensor "w" holds NaN', 'm.safetensors', 'w']);
    assert.ok(new loraforge.UsageError('x') instanceof Error);
    // an output that is an input is a mistake in the request: the CLI exits 2 for it, as for any UsageError
    assert.ok(new loraforge.OutputIsInputError('x') instanceof loraforge.UsageError);
  });

  it('still exposes the building blocks', () => {
    for (const name of ['openCheckpoint', 'openPeftAdapter', 'getBackend', 'describeOsError', 'openSafetensors', 'openGguf']) {
      assert.equal(typeof (loraforge as Record<string, unknown>)[name], 'function', name);
    }
  });
});
