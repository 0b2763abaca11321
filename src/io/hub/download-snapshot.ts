/**
 * A repo revision's chosen files into the shared cache, as huggingface_hub's snapshot_download
 * lays them out. The commit is resolved first and every file fetched by commit, so one call never
 * mixes two revisions (@huggingface/hub 2.17's downloadFileToCacheDir with "main" can), and
 * refs/<revision> is written here because 2.17 never writes it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exists, cachedCommit, snapshotFiles } from './cached-revision.js';
import { isCommitSha, repoCacheDir, snapshotDir } from './cache-paths.js';
import { downloadBlob } from './download-blob.js';
import { HubError } from './hub-error.js';
import type { HubRef } from './parse-hub-ref.js';
import type { RepoRequest } from './hub-fetch.js';
import { isSafetensorsIndex, shardsFor } from './index-shards.js';
import { resolveHubOptions, type HubOptions, type ResolvedHubOptions } from './options.js';
import { remoteFiles, remoteRevision } from './remote-repo.js';
import { linkIntoSnapshot, writeRef } from './write-cache-entries.js';

export interface SnapshotRequest extends HubOptions {
  ref: HubRef;
  /** which repo files to bring (paths relative to the repo root), decided on the sibling list */
  files: (path: string) => boolean;
  /**
   * when the repo has model.safetensors.index.json (or another *.safetensors.index.json the
   * `files` predicate accepts): bring only the shards holding a tensor this accepts (default all)
   */
  tensors?: (name: string) => boolean;
}

export interface Snapshot {
  /** <cache>/models--org--name/snapshots/<commit> */
  dir: string;
  repo: string;
  revision: string;
  commit: string;
  /** the chosen files, repo paths, all present under `dir` */
  files: string[];
  downloadedBytes: number;
}

/** Files fetched at once: one stream rarely fills a fast link, many only add seeks on a slow disk. */
const DOWNLOAD_CONCURRENCY = 4;
/** Byte progress is reported at most this often per file: a terminal redraw per 64 KiB chunk would dominate. */
const PARTIAL_EVERY_MS = 100;

const folderOf = (path: string): string => path.slice(0, path.lastIndexOf('/') + 1);

/**
 * The chosen files, with safetensors narrowed to the shards the folder's index names (the
 * `tensors` predicate decides which): a folder with an index holds its weights only in those.
 */
async function narrowToShards(chosen: string[], all: Set<string>, readIndex: (path: string) => Promise<string>, req: SnapshotRequest, where: string): Promise<string[]> {
  const indexes = chosen.filter(isSafetensorsIndex);
  if (indexes.length === 0) return [...chosen].sort();
  const shards = new Set<string>();
  for (const index of indexes) for (const s of shardsFor(index, await readIndex(index), req.tensors)) shards.add(s);
  for (const s of shards) {
    if (!all.has(s)) throw new HubError('not-found', `${where}: ${[...indexes].join(', ')} names the shard ${s}, which the repo lacks: the repo is incomplete`);
  }
  const indexed = new Set(indexes.map(folderOf));
  const kept = chosen.filter((p) => !p.endsWith('.safetensors') || !indexed.has(folderOf(p)) || shards.has(p));
  return [...new Set([...kept, ...shards])].sort();
}

async function offlineSnapshot(opts: ResolvedHubOptions, req: SnapshotRequest, r: RepoRequest): Promise<Snapshot> {
  const repoDir = repoCacheDir(opts.cacheDir, r.repo);
  const commit = await cachedCommit(opts.cacheDir, repoDir, r);
  const dir = snapshotDir(repoDir, commit);
  const present = new Set(await snapshotFiles(dir));
  const chosen = [...present].filter(req.files).sort();
  // an index names its shards whether they are cached or not: missing ones are named precisely below
  const shardNames = new Set(chosen);
  for (const index of chosen.filter(isSafetensorsIndex)) {
    for (const s of shardsFor(index, await readFile(join(dir, index), 'utf8'), req.tensors)) shardNames.add(s);
  }
  const files = await narrowToShards(chosen, shardNames, (p) => readFile(join(dir, p), 'utf8'), req, `${r.repo}@${r.revision}`);
  for (const f of files) {
    if (!(await exists(join(dir, f)))) {
      throw new HubError('offline-miss', `${r.repo}@${r.revision}: ${f} is not in the cache ${dir} and the Hub is off (--offline or HF_HUB_OFFLINE): run once online to download it`);
    }
  }
  return { dir, repo: r.repo, revision: r.revision, commit, files, downloadedBytes: 0 };
}

export async function downloadSnapshot(req: SnapshotRequest): Promise<Snapshot> {
  const opts = resolveHubOptions(req);
  const r: RepoRequest = { repo: req.ref.repo, revision: req.ref.revision ?? 'main' };
  if (opts.offline) return offlineSnapshot(opts, req, r);
  const repoDir = repoCacheDir(opts.cacheDir, r.repo);
  let remote: Awaited<ReturnType<typeof remoteRevision>>;
  try {
    remote = await remoteRevision(opts, r);
  } catch (err) {
    // as huggingface_hub does: the Hub unreachable, what the cache holds for the revision is used
    if (!(err instanceof HubError) || err.kind !== 'network') throw err;
    const cached = await offlineSnapshot(opts, req, r).catch(() => undefined);
    if (!cached) throw err;
    opts.onWarning?.(`${err.message.replace(/\.$/, '')}; using the cached ${r.repo}@${r.revision} (commit ${cached.commit.slice(0, 7)})`);
    return cached;
  }
  const commit = remote.commit;
  if (!isCommitSha(r.revision)) await writeRef(repoDir, r.revision, commit);
  const dir = snapshotDir(repoDir, commit);
  let downloadedBytes = 0;

  /** Brings the files not already in the snapshot (a file Python cached counts as there). */
  const bring = async (paths: string[]): Promise<void> => {
    const missing: string[] = [];
    for (const p of paths) if (!(await exists(join(dir, p)))) missing.push(p);
    const files = await remoteFiles(opts, r, commit, missing);
    const total = files.reduce((n, f) => n + f.size, 0);
    let done = 0;
    let finished = 0;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < files.length) {
        const file = files[next++]!;
        let item = 0;
        let lastEvent = 0;
        const fetched = await downloadBlob({
          opts, req: r, repoDir, commit, file,
          onBytes(n) {
            item += n;
            done += n;
            const now = Date.now();
            if (opts.onProgress !== undefined && now - lastEvent >= PARTIAL_EVERY_MS) {
              lastEvent = now;
              opts.onProgress({ phase: 'download', index: finished - 1, total: files.length, name: file.path, partial: true, bytes: { item, itemTotal: file.size, done, total } });
            }
          },
        });
        downloadedBytes += fetched; // after the await: `x += await` would drop the other workers' bytes
        // a blob already in the cache (shared with another revision, or Python's) counts as done
        done += file.size - item;
        await linkIntoSnapshot(repoDir, commit, file.path, file.etag);
        opts.onProgress?.({ phase: 'download', index: finished++, total: files.length, name: file.path, bytes: { item: file.size, itemTotal: file.size, done, total } });
      }
    };
    await Promise.all(Array.from({ length: Math.min(DOWNLOAD_CONCURRENCY, files.length) }, worker));
  };

  const all = new Set(remote.files);
  const chosen = remote.files.filter(req.files);
  await bring(chosen.filter(isSafetensorsIndex));
  const files = await narrowToShards(chosen, all, (p) => readFile(join(dir, p), 'utf8'), req, `${r.repo}@${r.revision}`);
  await bring(files.filter((p) => !isSafetensorsIndex(p)));
  return { dir, repo: r.repo, revision: r.revision, commit, files, downloadedBytes };
}
