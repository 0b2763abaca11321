/** The two things besides blobs that go into the cache: refs/<revision> and the snapshot's symlinks. */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readlink, rename, symlink, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { blobLinkTarget, refPath, snapshotDir } from './cache-paths.js';

/** refs/<revision> holds the commit with no trailing newline, as huggingface_hub writes it; replaced atomically. */
export async function writeRef(repoDir: string, revision: string, commit: string): Promise<void> {
  const path = refPath(repoDir, revision);
  const current = await readFile(path, 'utf8').catch(() => undefined);
  if (current === commit) return;
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, commit);
  await rename(tmp, path);
}

/**
 * snapshots/<commit>/<path> -> ../../blobs/<etag>, made only once the blob is complete, so a
 * snapshot never shows a half-written file. A link already there (a stale one from an
 * interrupted run, or another process) is replaced, as huggingface_hub does.
 */
export async function linkIntoSnapshot(repoDir: string, commit: string, path: string, etag: string): Promise<void> {
  const link = join(snapshotDir(repoDir, commit), ...path.split('/'));
  const target = blobLinkTarget(repoDir, commit, path, etag);
  await mkdir(dirname(link), { recursive: true });
  try {
    await symlink(target, link);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    if ((await readlink(link).catch(() => undefined)) === target) return;
    await unlink(link);
    await symlink(target, link);
  }
}
