/**
 * One writer per blob across processes: two runs fetching the same file into one `.incomplete`
 * would interleave their bytes and both fail the checksum. The lock is a file created exclusively
 * beside the partial download, holding the owner's pid; a lock whose process is gone (a run that
 * was killed) is taken over. Python's huggingface_hub locks with flock() on files under `.locks/`,
 * which Node cannot take, so this guards loraforge runs against each other only.
 */
import { open, readFile, stat, unlink } from 'node:fs/promises';
import { isAlive } from '../temporaries.js';

/** How often a waiting run looks again: downloads take seconds to minutes, so 200 ms costs nothing. */
const POLL_MS = 200;
/** A lock still without a pid after this long was left by a run that died while creating it. */
const EMPTY_LOCK_STALE_MS = 10_000;

async function holder(lock: string): Promise<number | undefined> {
  const text = await readFile(lock, 'utf8').catch(() => undefined);
  const pid = text === undefined ? NaN : Number.parseInt(text, 10);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * Takes `<path>.lock`, waiting while another live process holds it (`onWait` is told once, with
 * its pid); returns the release. A lock of this process is waited for too (another call in flight).
 */
export async function lockFile(path: string, onWait?: (pid: number) => void): Promise<() => Promise<void>> {
  const lock = `${path}.lock`;
  let told = false;
  for (;;) {
    try {
      const fh = await open(lock, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return () => unlink(lock).catch(() => {});
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = await holder(lock);
    const age = Date.now() - ((await stat(lock).catch(() => undefined))?.mtimeMs ?? Date.now());
    if ((pid !== undefined && !isAlive(pid)) || (pid === undefined && age > EMPTY_LOCK_STALE_MS)) {
      await unlink(lock).catch(() => {}); // its owner died: the partial file it left is resumed
      continue;
    }
    // a lock being written (no pid yet) or held by a live process: wait for it
    if (pid !== undefined && !told) {
      told = true;
      onWait?.(pid);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
