/**
 * The loraforge command line: one small module per command, each registering itself here.
 * Commands only parse flags, call the library and print; all work lives in the library.
 */
import { Command, CommanderError } from 'commander';
import { EXIT_FAILURE, EXIT_USAGE, UsageError } from './errors.js';
import { withInputTracking } from '../io/inputs.js';
import { registerApply } from './apply.js';
import { registerConvert } from './convert.js';
import { registerEdoraInit } from './edora-init.js';
import { registerInspect } from './inspect.js';
import { registerSpectrum } from './spectrum.js';
import { registerEdit } from './edit.js';
import { registerMergeAdapters } from './merge-adapters.js';
import { registerMerge } from './merge.js';
import { registerToGguf } from './to-gguf.js';
import { registerExtract } from './extract.js';
import { registerEval } from './eval.js';
import { registerCompare } from './compare.js';
import { registerTransplant } from './transplant.js';
import { describeOsError } from '../io/os-error.js';
import { registerDemo } from './demo.js';

const program = new Command('loraforge')
  .description('Fast, exact, streaming LLM weight surgery: extract, merge and edit LoRA adapters.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)')
  .exitOverride();

/**
 * A reader that stops early (`loraforge extract --help | head -3`) closes the pipe. stdout carries
 * only help and the final summary, written after the work, so its reader leaving ends the process
 * quietly; stderr carries progress while the work runs, so its reader leaving must not stop the work.
 */
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(process.exitCode ?? 0);
});
process.stderr.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
});

/** The running command's --out, for OS errors that carry no path (a full disk during a write). */
let outFlag: string | undefined;
program.hook('preAction', (_program, action) => {
  const out: unknown = action.opts()['out'];
  if (typeof out === 'string') outFlag = out;
});

// the order of the README's Commands section (scripts/build-readme.mjs), which --help lists too
registerDemo(program);
registerExtract(program);
registerMergeAdapters(program);
registerMerge(program);
registerSpectrum(program);
registerEdit(program);
registerApply(program);
registerConvert(program);
registerEdoraInit(program);
registerToGguf(program);
registerInspect(program);
registerEval(program);
registerCompare(program);
registerTransplant(program);

try {
  // One run: every file any part of the command reads is an input --out may not touch (io/inputs.ts).
  await withInputTracking(() => program.parseAsync(process.argv));
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : EXIT_USAGE;
  } else if (err instanceof UsageError) {
    // the library's usage errors, an output that is an input (OutputIsInputError) among them
    process.stderr.write(`loraforge: ${err.message}\n`);
    process.exitCode = EXIT_USAGE;
  } else {
    // InputError (a bad input file) and every other failure
    process.stderr.write(`loraforge: ${describeOsError(err, { out: outFlag }) ?? (err as Error).message}\n`);
    if (process.env.LORAFORGE_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    process.exitCode = EXIT_FAILURE;
  }
}
