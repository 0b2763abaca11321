/**
 * A safetensors file's header without its tensors, for `inspect`: from the cache when the file
 * is there, else two HTTP range requests (the 8-byte length, then the JSON), so a 10 GB shard
 * costs a few kilobytes.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError } from '../../errors.js';
import { MAX_HEADER_BYTES } from '../safetensors.js';
import { cachedCommit, exists } from './cached-revision.js';
import { isCommitSha, repoCacheDir, snapshotDir } from './cache-paths.js';
import { resolveUrl } from './download-blob.js';
import { HubError } from './hub-error.js';
import { hubFetch, networkError, type RepoRequest } from './hub-fetch.js';
import { resolveHubOptions, type HubOptions } from './options.js';
import type { HubRef } from './parse-hub-ref.js';
import { remoteRevision } from './remote-repo.js';
import { writeRef } from './write-cache-entries.js';

type ReadRange = (start: number, length: number) => Promise<Uint8Array>;

async function parseHeader(where: string, read: ReadRange): Promise<Record<string, unknown>> {
  const declared = new DataView((await read(0, 8)).buffer).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    throw new InputError(`${where}: header length ${declared} exceeds the ${MAX_HEADER_BYTES}-byte limit: corrupt or not a safetensors file`, { file: where });
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(await read(8, Number(declared))));
  } catch (err) {
    if (err instanceof HubError) throw err;
    throw new InputError(`${where}: header is not valid UTF-8 JSON: corrupt or not a safetensors file`, { file: where });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new InputError(`${where}: header JSON is not an object: corrupt or not a safetensors file`, { file: where });
  }
  return json as Record<string, unknown>;
}

function localRange(path: string): ReadRange {
  return async (start, length) => {
    const fh = await open(path, 'r');
    try {
      const buf = new Uint8Array(length);
      const { bytesRead } = await fh.read(buf, 0, length, start);
      if (bytesRead < length) throw new InputError(`${path}: ends inside its safetensors header: truncated`, { file: path });
      return buf;
    } finally {
      await fh.close();
    }
  };
}

function remoteRange(get: typeof fetch, url: string, where: string, onError: (err: unknown) => HubError): ReadRange {
  return async (start, length) => {
    const res = await get(url, { headers: { range: `bytes=${start}-${start + length - 1}` } });
    const buf = new Uint8Array(length);
    let have = 0;
    // a server that ignores Range sends the whole file: take the bytes wanted and hang up
    const skip = res.status === 206 ? 0 : start;
    let seen = 0;
    const reader = res.body!.getReader();
    try {
      while (have < length) {
        const { done, value } = await reader.read();
        if (done) break;
        const from = Math.max(0, skip - seen);
        seen += value.length;
        const part = value.subarray(from, from + length - have);
        buf.set(part, have);
        have += part.length;
      }
    } catch (err) {
      throw onError(err);
    } finally {
      await reader.cancel().catch(() => undefined);
    }
    if (have < length) throw new InputError(`${where}: ends inside its safetensors header: truncated or not a safetensors file`, { file: where });
    return buf;
  };
}

export async function readRemoteSafetensorsHeader(req: HubOptions & { ref: HubRef; path: string }): Promise<Record<string, unknown>> {
  const opts = resolveHubOptions(req);
  const r: RepoRequest = { repo: req.ref.repo, revision: req.ref.revision ?? 'main' };
  const repoDir = repoCacheDir(opts.cacheDir, r.repo);
  let commit: string;
  if (opts.offline) commit = await cachedCommit(opts.cacheDir, repoDir, r);
  else if (isCommitSha(r.revision)) commit = r.revision;
  else {
    commit = (await remoteRevision(opts, r)).commit;
    await writeRef(repoDir, r.revision, commit);
  }
  const local = join(snapshotDir(repoDir, commit), ...req.path.split('/'));
  if (await exists(local)) return parseHeader(local, localRange(local));
  if (opts.offline) {
    throw new HubError('offline-miss', `${r.repo}@${r.revision}: ${req.path} is not in the cache ${snapshotDir(repoDir, commit)} and the Hub is off (--offline or HF_HUB_OFFLINE): run once online to download it`);
  }
  const url = resolveUrl(opts.endpoint, r.repo, commit, req.path);
  return parseHeader(`${r.repo}/${req.path}`, remoteRange(hubFetch(opts, r), url, `${r.repo}/${req.path}`, (err) => networkError(err, opts, r, url)));
}
