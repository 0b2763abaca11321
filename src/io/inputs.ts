/**
 * The inputs of a run, collected where they are read. Every reader of a user's file (checkpoints,
 * adapters, configs, YAML, tokenizers, GGUF) notes its path here, and every output is checked
 * against what was noted (io/atomic.ts), so `--out` can never replace, or write inside, something
 * the command read — whichever flag, YAML field or side file it came from. Nothing depends on a
 * command remembering to list its flags.
 *
 * A run is an async context (AsyncLocalStorage): library entry points and the CLI open one with
 * `withInputTracking`, nested calls share the outer one, and concurrent runs in one process keep
 * separate sets. Outside any run, noting is a no-op.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { withPath } from './os-error.js';

const runInputs = new AsyncLocalStorage<Set<string>>();

/** Runs `fn` with a set of inputs of its own, or in the caller's set when one is already open. */
export function withInputTracking<T>(fn: () => Promise<T>): Promise<T> {
  return runInputs.getStore() ? fn() : runInputs.run(new Set(), fn);
}

/** Records that the current run reads `path` (a file or a folder). */
export function noteInput(path: string): void {
  runInputs.getStore()?.add(resolve(path));
}

/** Everything the current run has read so far (absolute paths). */
export function inputsSoFar(): string[] {
  return [...(runInputs.getStore() ?? [])];
}

/**
 * Reads a user's text file (a config, a YAML, a tokenizer) and notes it as an input. A failure is
 * the OS error with `path` attached (readFile on a folder reports none), for describeOsError.
 */
export async function readInputText(path: string): Promise<string> {
  noteInput(path);
  return readFile(path, 'utf8').catch((err: unknown) => {
    throw withPath(err, path);
  });
}

/** Reads a user's binary file and notes it as an input; failures as readInputText's. */
export async function readInputBytes(path: string): Promise<Buffer> {
  noteInput(path);
  return readFile(path).catch((err: unknown) => {
    throw withPath(err, path);
  });
}
