/**
 * A local stand-in for the Hugging Face Hub on 127.0.0.1, serving the routes @huggingface/hub 2.17
 * and loraforge use: model info (`/api/models/<repo>/revision/<rev>` with `expand`), paths-info,
 * `/<repo>/resolve/<rev>/<path>` (ETag / X-Repo-Commit for git files; a 302 to a storage URL with
 * X-Linked-Etag / X-Linked-Size for LFS files), and byte ranges. Faults are switched on per server.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface MockFile {
  path: string;
  content: Uint8Array;
  /** stored in LFS (the Hub does this for weights): blob id sha256, served by redirect */
  lfs?: boolean;
}

export interface MockRepo {
  repo: string;
  /** 40 hex digits */
  commit: string;
  files: MockFile[];
  /** other branch or tag names resolving to `commit` (main always does) */
  refs?: string[];
  /** answers 401 unless the request carries this token */
  token?: string;
}

export interface MockHubFaults {
  /** the first transfer of this file breaks off after this many bytes (once) */
  dieOnce?: { path: string; after: number };
  /** this file's bytes are served altered (its etag stays the true one) */
  corrupt?: string;
  /** every request answers this status */
  status?: number;
}

export interface Hit {
  method: string;
  url: string;
  range?: string;
  /** body bytes sent */
  bytes: number;
}

export interface MockHub {
  endpoint: string;
  hits: Hit[];
  close(): Promise<void>;
}

export const gitBlobSha1 = (b: Uint8Array): string => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A tiny safetensors file: F32 tensors filled with their index. */
export function safetensorsBytes(tensors: Record<string, number>): Uint8Array {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, n] of Object.entries(tensors)) {
    header[name] = { dtype: 'F32', shape: [n], data_offsets: [offset, offset + 4 * n] };
    offset += 4 * n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(new TextEncoder().encode(json), 8);
  const data = new Float32Array(out.buffer, 8 + json.length, offset / 4);
  data.forEach((_, i) => (data[i] = i));
  return out;
}

const lfsPointer = (f: MockFile): string => `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(f.content)}\nsize ${f.content.length}\n`;

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): number {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(text);
  return text.length;
}

/** Sends `content` honouring a `Range: bytes=a-b` request; breaks off after `dieAfter` bytes when given. */
function sendBytes(req: IncomingMessage, res: ServerResponse, content: Uint8Array, headers: Record<string, string>, dieAfter?: number): number {
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  const start = m ? Number(m[1]) : 0;
  const end = m && m[2] !== '' ? Math.min(Number(m[2]), content.length - 1) : content.length - 1;
  if (m && start >= content.length) {
    res.writeHead(416, { 'content-range': `bytes */${content.length}` });
    res.end();
    return 0;
  }
  const body = content.subarray(start, end + 1);
  res.writeHead(m ? 206 : 200, {
    ...headers,
    'accept-ranges': 'bytes',
    'content-length': String(body.length),
    ...(m ? { 'content-range': `bytes ${start}-${end}/${content.length}` } : {}),
  });
  if (req.method === 'HEAD') {
    res.end();
    return 0;
  }
  if (dieAfter !== undefined) {
    res.write(body.subarray(0, dieAfter));
    // long enough for a loaded client to read what was sent: a stream that errors drops what it had queued
    setTimeout(() => res.destroy(), 200);
    return Math.min(dieAfter, body.length);
  }
  res.end(body);
  return body.length;
}

export async function startMockHub(repos: MockRepo[], faults: MockHubFaults = {}): Promise<MockHub> {
  const hits: Hit[] = [];
  const byName = new Map(repos.map((r) => [r.repo, r]));
  const blobs = new Map<string, MockFile>();
  for (const r of repos) for (const f of r.files) if (f.lfs) blobs.set(sha256(f.content), f);
  let died = false;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<number> => {
    const url = new URL(req.url!, 'http://x');
    if (faults.status !== undefined) return json(res, faults.status, { error: 'forced' });
    const served = (f: MockFile): Uint8Array => {
      if (faults.corrupt !== f.path) return f.content;
      const c = new Uint8Array(f.content);
      c[c.length - 1] ^= 0xff;
      return c;
    };
    const dieAfter = (f: MockFile): number | undefined => {
      if (died || faults.dieOnce?.path !== f.path) return undefined;
      died = true;
      return faults.dieOnce.after;
    };
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname);
    if (cdn) {
      const f = blobs.get(cdn[1]!);
      if (!f) return json(res, 404, { error: 'no such object' });
      return sendBytes(req, res, served(f), { etag: `"${cdn[1]}"` }, dieAfter(f));
    }
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|paths-info)\/([^/]+)$/.exec(url.pathname);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const m = api ?? resolve;
    if (!m) return json(res, 404, { error: 'no route' });
    const repo = byName.get(m[1]!);
    if (!repo) return json(res, 404, { error: 'Repository not found' }, { 'x-error-code': 'RepoNotFound' });
    if (repo.token !== undefined && req.headers.authorization !== `Bearer ${repo.token}`) {
      return json(res, 401, { error: 'Invalid credentials in Authorization header' });
    }
    const rev = decodeURIComponent(api ? m[3]! : m[2]!);
    if (rev !== repo.commit && rev !== 'main' && rev !== 'HEAD' && !(repo.refs ?? []).includes(rev)) {
      return json(res, 404, { error: `Invalid rev id: ${rev}` }, { 'x-error-code': 'RevisionNotFound' });
    }
    if (api?.[2] === 'revision') {
      const expand = url.searchParams.getAll('expand');
      const full: Record<string, unknown> = {
        sha: repo.commit,
        siblings: repo.files.map((f) => ({ rfilename: f.path })),
        private: repo.token !== undefined,
        gated: false,
        downloads: 0,
        likes: 0,
        lastModified: '2024-01-01T00:00:00.000Z',
        pipeline_tag: 'text-generation',
      };
      // like the Hub: with expand[], only the fields asked for
      const body: Record<string, unknown> = { _id: `id-${repo.repo}`, id: repo.repo };
      for (const k of expand.length > 0 ? expand : Object.keys(full)) if (k in full) body[k] = full[k];
      return json(res, 200, body);
    }
    if (api?.[2] === 'paths-info') {
      let body = '';
      for await (const chunk of req) body += chunk;
      const paths = (JSON.parse(body) as { paths: string[] }).paths;
      const infos = repo.files
        .filter((f) => paths.includes(f.path))
        .map((f) => ({
          type: 'file',
          path: f.path,
          oid: gitBlobSha1(f.lfs ? new TextEncoder().encode(lfsPointer(f)) : f.content),
          size: f.content.length,
          ...(f.lfs ? { lfs: { oid: sha256(f.content), size: f.content.length, pointerSize: lfsPointer(f).length } } : {}),
        }));
      return json(res, 200, infos);
    }
    const path = decodeURIComponent(m[3]!);
    const f = repo.files.find((x) => x.path === path);
    if (!f) return json(res, 404, { error: 'Entry not found' }, { 'x-error-code': 'EntryNotFound', 'x-repo-commit': repo.commit });
    if (f.lfs) {
      const oid = sha256(f.content);
      res.writeHead(302, {
        location: `/cdn/${oid}`,
        'x-repo-commit': repo.commit,
        'x-linked-etag': `"${oid}"`,
        'x-linked-size': String(f.content.length),
        etag: `"${gitBlobSha1(new TextEncoder().encode(lfsPointer(f)))}"`,
      });
      res.end();
      return 0;
    }
    return sendBytes(req, res, served(f), { etag: `"${gitBlobSha1(f.content)}"`, 'x-repo-commit': repo.commit }, dieAfter(f));
  };

  const server = createServer((req, res) => {
    const hit: Hit = { method: req.method!, url: req.url!, range: req.headers.range, bytes: 0 };
    hits.push(hit);
    handle(req, res).then(
      (n) => (hit.bytes = n),
      (err: unknown) => {
        res.writeHead(500);
        res.end(String(err));
      },
    );
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    hits,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}
