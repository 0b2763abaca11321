/**
 * huggingface_hub's cache layout, exactly: `models--org--name/{blobs,snapshots,refs}`. Python and
 * loraforge read each other's files, so nothing here may differ from `file_download.py`.
 */
import { dirname, join, relative } from 'node:path';

/** A full commit id: the only revision that needs no refs/ file. */
export function isCommitSha(revision: string): boolean {
  return /^[0-9a-f]{40}$/.test(revision);
}

export function repoCacheDir(cacheDir: string, repo: string): string {
  return join(cacheDir, `models--${repo.split('/').join('--')}`);
}

export function blobPath(repoDir: string, etag: string): string {
  return join(repoDir, 'blobs', etag);
}

export function snapshotDir(repoDir: string, commit: string): string {
  return join(repoDir, 'snapshots', commit);
}

export function refPath(repoDir: string, revision: string): string {
  return join(repoDir, 'refs', ...revision.split('/'));
}

/** The relative link target from snapshots/<commit>/<path> to its blob (`../../blobs/<etag>`, one more `../` per folder). */
export function blobLinkTarget(repoDir: string, commit: string, path: string, etag: string): string {
  const link = join(snapshotDir(repoDir, commit), ...path.split('/'));
  return relative(dirname(link), blobPath(repoDir, etag));
}

/**
 * The Hub id a folder of the cache stands for: `org/name` for `…/models--org--name/snapshots/<commit>`
 * (or a folder inside it: `org/name/sub`), undefined for any other path. Repo names never hold
 * `--`, so the folder name splits one way only.
 */
export function hubIdOfCachePath(path: string): string | undefined {
  const m = /(?:^|[/\\])models--([^/\\]+)[/\\]snapshots[/\\][0-9a-f]{40}((?:[/\\][^/\\]+)*)[/\\]?$/.exec(path);
  if (!m) return undefined;
  const inside = m[2].split(/[/\\]/).filter(Boolean);
  return [...m[1].split('--'), ...inside].join('/');
}
