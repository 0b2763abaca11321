/**
 * Our temporaries: the files and folders written beside a user's target and renamed into place
 * when complete. They are named `.<target name>.<tag>-<pid>-<12 hex>`, so that:
 * - an interrupted run (SIGINT, SIGTERM, SIGHUP) removes its own before it dies;
 * - a run that could not (SIGKILL, power loss) has its leftovers removed by the next run that
 *   writes the same target, once their pid is no longer alive;
 * - nothing else is ever touched: only names of exactly this shape, beside that target.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, renameSync, rmSync } from 'node:fs';
import { readdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * The tag of the previous output moved aside while a replacement is renamed in: if a run dies
 * between the two renames, the previous output is put back rather than removed.
 */
export const REPLACED_TAG = 'old';

interface LiveTemporary {
  target: string;
  tag: string;
}

const live = new Map<string, LiveTemporary>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let handlersInstalled = false;

/**
 * A fresh temporary path beside `target`, tracked until `releaseTemporary` (after it was renamed
 * into place or removed), and removed if the process is interrupted meanwhile.
 */
export function newTemporary(target: string, tag = 'tmp'): string {
  const path = join(dirname(target), `.${basename(target)}.${tag}-${process.pid}-${randomBytes(6).toString('hex')}`);
  live.set(path, { target, tag });
  installHandlers();
  return path;
}

/** Tracks a temporary made elsewhere (e.g. with mkdtemp) so that an interruption removes it too. */
export function trackTemporary(path: string): void {
  live.set(path, { target: path, tag: 'tmp' });
  installHandlers();
}

/** Stops tracking `path`: it was renamed into place or removed. */
export function releaseTemporary(path: string): void {
  live.delete(path);
}

/** Removes (or, for a moved-aside previous output whose target is gone, restores) every live temporary. */
function cleanUpNow(): void {
  for (const [path, { target, tag }] of live) {
    try {
      if (tag === REPLACED_TAG && !existsSync(target)) renameSync(path, target);
      else rmSync(path, { recursive: true, force: true });
    } catch {
      // best effort while dying: a temporary we cannot remove is swept by the next run
    }
  }
  live.clear();
}

function onSignal(signal: NodeJS.Signals): void {
  // Another listener means the embedding program handles this signal and may keep running; our
  // writes may still be in flight, so leave them (the exit hook cleans up if it does exit).
  if (process.listenerCount(signal) > 1) return;
  cleanUpNow();
  for (const s of SIGNALS) process.removeListener(s, onSignal);
  // Die of the same signal, as the default disposition would have, so shells see 130/143.
  process.kill(process.pid, signal);
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', cleanUpNow);
  for (const s of SIGNALS) process.on(s, onSignal);
}

const TEMP_SUFFIX = /^(.+)-(\d+)-([0-9a-f]{8,12})$/;

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes temporaries of `target` left by runs that died without cleaning up (their pid is gone);
 * a previous output moved aside by such a run is put back if the target is missing. Returns the
 * paths it removed or restored.
 */
export async function sweepStaleTemporaries(target: string): Promise<string[]> {
  const dir = dirname(target);
  const prefix = `.${basename(target)}.`;
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return []; // no folder yet, nothing left behind
  }
  const swept: string[] = [];
  for (const name of entries) {
    if (!name.startsWith(prefix)) continue;
    const m = TEMP_SUFFIX.exec(name.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[2]);
    if (pid === process.pid || isAlive(pid)) continue;
    const path = join(dir, name);
    if (m[1] === REPLACED_TAG && !existsSync(target)) await rename(path, target);
    else await rm(path, { recursive: true, force: true });
    swept.push(path);
  }
  return swept;
}
