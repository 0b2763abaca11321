/** One clause saying what the cache holds for a repo, for errors that suggest --offline. */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { refPath, repoCacheDir, snapshotDir } from './cache-paths.js';

function countFiles(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? countFiles(join(dir, e.name)) : 1;
  return n;
}

export function describeCache(cacheDir: string, repo: string, revision: string): string {
  const repoDir = repoCacheDir(cacheDir, repo);
  let snapshots: string[];
  try {
    snapshots = readdirSync(join(repoDir, 'snapshots'));
  } catch {
    return `the cache ${cacheDir} holds nothing for ${repo}`;
  }
  let commit: string | undefined;
  try {
    commit = readFileSync(refPath(repoDir, revision), 'utf8').trim();
  } catch {
    commit = snapshots.includes(revision) ? revision : undefined;
  }
  if (commit !== undefined && snapshots.includes(commit)) {
    return `the cache ${cacheDir} holds ${repo}@${revision} (commit ${commit.slice(0, 7)}, ${countFiles(snapshotDir(repoDir, commit))} files)`;
  }
  return `the cache ${cacheDir} holds ${snapshots.length} other revision(s) of ${repo} but not ${revision}`;
}
