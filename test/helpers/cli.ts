import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { readFile } from 'node:fs/promises';
import { Command, CommanderError } from 'commander';
import { UsageError } from '../../src/cli/errors.js';
import { dirname, join } from 'node:path';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunCliOptions {
  cwd?: string;
  /** the child's whole environment (default: this process's) */
  env?: NodeJS.ProcessEnv;
  /**
   * Run as if stderr were a terminal this many columns wide (0: what `script` and some CI ptys report),
   * recording every write of both streams, in order, to `log` (see fake-tty.mjs and readTtyLog).
   */
  tty?: { columns: number; log: string };
}

/** Runs the loraforge CLI as a user would, through bin/loraforge.js, which in a checkout always runs src/. */
export function runCli(args: string[], opts: RunCliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const preload = opts.tty ? ['--import', pathToFileURL(join(REPO_ROOT, 'test', 'helpers', 'fake-tty.mjs')).href] : [];
    const base = opts.env ?? process.env;
    const env = opts.tty ? { ...base, FAKE_TTY_COLUMNS: String(opts.tty.columns), FAKE_TTY_LOG: opts.tty.log } : base;
    const child = spawn(process.execPath, [...preload, join(REPO_ROOT, 'bin', 'loraforge.js'), ...args], { cwd: opts.cwd ?? REPO_ROOT, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/**
 * The writes a runCli({ tty }) run made, in order; and whether its stdout was ever written while a
 * progress bar was still on the terminal (a bar line is a `\r` + text write; done() writes `\r` + blanks + `\r`).
 */
export async function readTtyLog(log: string): Promise<{ writes: Array<[string, string]>; barDrawn: boolean; printedOverBar: boolean }> {
  const writes = (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as [string, string]);
  let visible = false;
  let barDrawn = false;
  let printedOverBar = false;
  for (const [stream, text] of writes) {
    if (stream === 'stderr' && text.startsWith('\r')) {
      visible = text.trim() !== '';
      barDrawn ||= visible;
    } else if (stream === 'stdout' && visible) printedOverBar = true;
  }
  return { writes, barDrawn, printedOverBar };
}

/**
 * Runs one command in this process, as main.ts would map its errors (UsageError and commander's own: 2,
 * others: 1), for command lines that stop before any work: a spawned CLI costs a second or two each.
 * `stderr` holds commander's messages and the error's; `stdout` what --help printed.
 */
export async function runCommandInProcess(register: (program: Command) => void, args: string[]): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const program = new Command('loraforge').exitOverride().configureOutput({ writeOut: (s) => (stdout += s), writeErr: (s) => (stderr += s) });
  register(program);
  try {
    await program.parseAsync(args, { from: 'user' });
    return { code: 0, stdout, stderr };
  } catch (err) {
    if (err instanceof CommanderError) return { code: err.exitCode === 0 ? 0 : 2, stdout, stderr };
    stderr += `loraforge: ${(err as Error).message}\n`;
    return { code: err instanceof UsageError ? 2 : 1, stdout, stderr };
  }
}
