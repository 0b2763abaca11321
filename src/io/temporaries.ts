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
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
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
  track(path, target, tag);
  return path;
}

/**
 * A new folder under the system's temporary folder (`<prefix><random>`), tracked before it is
 * created, so that no signal can arrive between its creation and its tracking.
 */
export async function newTemporaryFolder(prefix: string): Promise<string> {
  const path = join(tmpdir(), `${prefix}${randomBytes(6).toString('hex')}`);
  track(path, path, 'tmp');
  await mkdir(path);
  return path;
}

/** Tracks `path` (made by the caller) so that an interruption removes it too. */
export function trackTemporary(path: string): void {
  track(path, path, 'tmp');
}

function track(path: string, target: string, tag: string): void {
  live.set(path, { target, tag });
  installHandlers();
}

/** Stops tracking `path`: it was renamed into place or removed. */
export function releaseTemporary(path: string): void {
  live.delete(path);
}

/** Removes (or, for a moved-aside previous output whose target is gone, restores) one temporary. */
function cleanUpSync(path: string, { target, tag }: LiveTemporary): void {
  try {
    if (tag === REPLACED_TAG && !existsSync(target)) renameSync(path, target);
    // retries: a write still in flight on libuv's threads may add an entry while the folder empties
    else rmSync(path, { recursive: true, force: true, maxRetries: 5, retryDelay: 10 });
  } catch {
    // best effort while dying: a temporary we cannot remove is swept by the next run
  }
}

/** How long a dying run lets file operations already handed to libuv's threads land before it looks again. */
const SETTLE_MS = 20;
const SETTLE_ROUNDS = 3;

/**
 * Removes every live temporary. File operations the run had already started (a recursive mkdir,
 * a file created in a temporary folder) finish on libuv's threads even while this runs, and can
 * bring a removed path back; so it waits briefly and removes again whatever reappeared.
 */
function cleanUpNow(): void {
  const all = [...live];
  live.clear();
  for (let round = 0; ; round++) {
    for (const [path, t] of all) cleanUpSync(path, t);
    if (round === SETTLE_ROUNDS) return;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, SETTLE_MS);
    if (!all.some(([path, t]) => t.tag !== REPLACED_TAG && existsSync(path))) return;
  }
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

/** `.<target>.<tag>-<pid>-<hex>`, with the tags this code base uses (tmp, old, data, part-N[.data]). */
const TEMPORARY_NAME = /^\.(.+)\.(?:tmp|old|data|part-\d+(?:\.data)?)-\d+-[0-9a-f]+$/;

/** For a file or folder name of our temporaries' shape, the name of the target it stands for. */
export function targetNameOf(name: string): string | undefined {
  return TEMPORARY_NAME.exec(name)?.[1];
}

/** Whether process `pid` still runs (EPERM: it does, as another user's). */
export function isAlive(pid: number): boolean {
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
