import { readdir } from 'node:fs/promises';
import { assertNotInput } from '../io/atomic.js';
import { isOsError } from '../io/os-error.js';
import { UsageError } from './errors.js';

/**
 * Checks --out before any work starts: it must not be (inside) an input, and an existing non-empty
 * folder needs --force. atomicOutputDir refuses too, but only after the work and in the library's words.
 */
export async function checkOutFlag(out: string, inputs: string[], force: boolean): Promise<void> {
  try {
    assertNotInput(out, inputs);
  } catch (err) {
    // a path that cannot be resolved (ELOOP, ENOTDIR…) is a fault to explain, not a usage mistake
    if (isOsError(err)) throw err;
    throw new UsageError((err as Error).message);
  }
  if (force) return;
  const entries = await readdir(out).catch(() => [] as string[]);
  if (entries.length > 0) throw new UsageError(`--out ${out} exists and is not empty: choose another folder or pass --force to replace it`);
}

/** --json prints the report itself, for scripts; otherwise the command's human summary. */
export function printReport<R>(report: R, json: boolean | undefined, summaryLines: (report: R) => string[]): void {
  process.stdout.write((json ? JSON.stringify(report, null, 2) : summaryLines(report).join('\n')) + '\n');
}
