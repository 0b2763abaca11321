/**
 * One file into `blobs/<etag>`, the way huggingface_hub does it: bytes go to `<etag>.incomplete`,
 * a broken transfer resumes with `Range: bytes=<have>-` (within this call, and in a later run),
 * and only bytes whose checksum matches the etag are renamed into place. @huggingface/hub 2.17
 * cannot resume, so the transfer is ours.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { isOsError } from '../os-error.js';
import { blobPath } from './cache-paths.js';
import { lockFile } from './blob-lock.js';
import { HubError } from './hub-error.js';
import { hubFetch, networkError, type RepoRequest } from './hub-fetch.js';
import type { ResolvedHubOptions } from './options.js';
import type { RemoteFile } from './remote-repo.js';

/** Transfers that break off are resumed this many times before the error reaches the user. */
const MAX_ATTEMPTS = 5;

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

/** sha256 of the content for LFS files; git's blob sha1 (`blob <len>\0` + content) otherwise. */
function newHash(file: RemoteFile): Hash {
  if (file.lfs) return createHash('sha256');
  return createHash('sha1').update(`blob ${file.size}\0`);
}

async function hashPrefix(hash: Hash, path: string): Promise<void> {
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
}

export function resolveUrl(endpoint: string, repo: string, commit: string, path: string): string {
  return `${endpoint}/${repo}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`;
}

function diskError(err: unknown, req: RepoRequest, path: string, dir: string): unknown {
  if (isOsError(err) && (err.code === 'ENOSPC' || err.code === 'EDQUOT')) {
    return new HubError('disk', `no space left in ${dir} while downloading ${req.repo}/${path}: free some space or set HF_HUB_CACHE to another disk (the partial download is kept and resumes)`);
  }
  return err;
}

export interface BlobDownload {
  opts: ResolvedHubOptions;
  req: RepoRequest;
  repoDir: string;
  commit: string;
  file: RemoteFile;
  /** called with each chunk's length as it is written */
  onBytes(n: number): void;
}

/** Brings the blob unless the cache has it; returns the bytes fetched. */
export async function downloadBlob(d: BlobDownload): Promise<number> {
  const { opts, req, file } = d;
  const blob = blobPath(d.repoDir, file.etag);
  if ((await sizeOf(blob)) !== undefined) return 0;
  const partial = `${blob}.incomplete`;
  await mkdir(dirname(partial), { recursive: true }).catch((err: unknown) => {
    throw diskError(err, req, file.path, opts.cacheDir);
  });
  const release = await lockFile(partial, (pid) => opts.onWarning?.(`waiting for another loraforge run (pid ${pid}) downloading ${req.repo}/${file.path}`));
  try {
    // the other run may have finished it while this one waited
    if ((await sizeOf(blob)) !== undefined) return 0;
    return await transfer(d, blob, partial);
  } finally {
    await release();
  }
}

/** The transfer itself, under the blob's lock: resumes `partial`, verifies, renames it to `blob`. */
async function transfer(d: BlobDownload, blob: string, partial: string): Promise<number> {
  const { opts, req, file } = d;
  const url = resolveUrl(opts.endpoint, req.repo, d.commit, file.path);
  const get = hubFetch(opts, req);
  let fetched = 0;
  for (let attempt = 1; ; attempt++) {
    let have = (await sizeOf(partial)) ?? 0;
    if (have > file.size) {
      await unlink(partial);
      have = 0;
    }
    let hash = newHash(file);
    if (have > 0) await hashPrefix(hash, partial);
    if (have < file.size) {
      const res = await get(url, { headers: have > 0 ? { range: `bytes=${have}-` } : {} });
      // a server that ignores Range sends everything again: start over rather than append
      const append = have > 0 && res.status === 206;
      if (!append && have > 0) {
        have = 0;
        hash = newHash(file);
      }
      await mkdir(dirname(partial), { recursive: true }).catch((err: unknown) => {
        throw diskError(err, req, file.path, opts.cacheDir);
      });
      const fh = await open(partial, append ? 'a' : 'w');
      let broke: unknown;
      try {
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          try {
            await fh.write(chunk);
          } catch (err) {
            throw diskError(err, req, file.path, opts.cacheDir);
          }
          hash.update(chunk);
          have += chunk.length;
          fetched += chunk.length;
          d.onBytes(chunk.length);
        }
      } catch (err) {
        if (err instanceof HubError || isOsError(err)) throw err;
        broke = err;
      } finally {
        await fh.close();
      }
      if (broke !== undefined) {
        if (attempt < MAX_ATTEMPTS) continue;
        throw networkError(broke, opts, req, url);
      }
    }
    const digest = hash.digest('hex');
    if (have !== file.size || digest !== file.etag) {
      await unlink(partial);
      throw new HubError('checksum', `${req.repo}/${file.path}: the downloaded bytes do not match the Hub's checksum (${file.lfs ? 'sha256' : 'git sha1'} ${file.etag}); the partial file was deleted, run again`, { url });
    }
    await rename(partial, blob);
    return fetched;
  }
}
