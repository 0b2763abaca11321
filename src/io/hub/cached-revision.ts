/** Reading the cache without the network: which commit a revision names, and what a snapshot holds. */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isCommitSha, refPath, snapshotDir } from './cache-paths.js';
import { HubError } from './hub-error.js';
import type { RepoRequest } from './hub-fetch.js';

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path); // follows the snapshot's symlink: a dangling one is no file
    return true;
  } catch {
    return false;
  }
}

/** The commit `req.revision` names in the cache (refs/<revision>, or the commit itself), as huggingface_hub resolves it offline. */
export async function cachedCommit(cacheDir: string, repoDir: string, req: RepoRequest): Promise<string> {
  let commit: string | undefined;
  if (isCommitSha(req.revision)) commit = req.revision;
  else {
    try {
      commit = (await readFile(refPath(repoDir, req.revision), 'utf8')).trim();
    } catch {
      commit = undefined;
    }
  }
  if (commit === undefined || !(await exists(snapshotDir(repoDir, commit)))) {
    throw new HubError('offline-miss', `${req.repo}@${req.revision} is not in the cache ${cacheDir} and the Hub is off (--offline or HF_HUB_OFFLINE): run once online to download it`);
  }
  return commit;
}

/** Every file under a snapshot folder, as repo paths. */
export async function snapshotFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(...(await snapshotFiles(join(dir, e.name), `${prefix}${e.name}/`)));
    else out.push(prefix + e.name);
  }
  return out;
}
