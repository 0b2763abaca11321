/** What the Hub says about one revision of a repo: its commit and files, and each file's blob id and size. */
import { modelInfo, pathsInfo } from '@huggingface/hub';
import { HubError } from './hub-error.js';
import { hubFetch, type RepoRequest } from './hub-fetch.js';
import type { ResolvedHubOptions } from './options.js';

export interface RemoteRevision {
  commit: string;
  /** every file in the repo at that commit (the siblings list), paths relative to its root */
  files: string[];
}

export async function remoteRevision(opts: ResolvedHubOptions, req: RepoRequest): Promise<RemoteRevision> {
  const info = await modelInfo({
    name: req.repo,
    revision: req.revision,
    hubUrl: opts.endpoint,
    additionalFields: ['sha', 'filePaths'],
    fetch: hubFetch(opts, req),
  });
  if (typeof info.sha !== 'string' || !/^[0-9a-f]{40}$/.test(info.sha)) {
    throw new HubError('network', `${opts.endpoint} gave no commit for ${req.repo}@${req.revision}: is HF_ENDPOINT a Hugging Face Hub?`);
  }
  return { commit: info.sha, files: info.filePaths };
}

export interface RemoteFile {
  path: string;
  /** the blob's name in the cache: sha256 for LFS files, git blob sha1 otherwise (what huggingface_hub's etag is) */
  etag: string;
  size: number;
  lfs: boolean;
}

/** Blob ids and sizes of `paths` at `commit`, in one request. */
export async function remoteFiles(opts: ResolvedHubOptions, req: RepoRequest, commit: string, paths: string[]): Promise<RemoteFile[]> {
  if (paths.length === 0) return [];
  const infos = await pathsInfo({ repo: req.repo, paths, revision: commit, hubUrl: opts.endpoint, fetch: hubFetch(opts, req) });
  const byPath = new Map(infos.map((i) => [i.path, i]));
  return paths.map((path) => {
    const info = byPath.get(path);
    const etag = info?.lfs?.oid ?? info?.oid;
    if (info === undefined || etag === undefined) {
      throw new HubError('not-found', `${req.repo}@${req.revision} has no file ${path}: check the path`);
    }
    return { path, etag, size: info.lfs?.size ?? info.size, lfs: info.lfs !== undefined };
  });
}
