/**
 * fetch for one repo's requests: adds the token, and turns every failure (no answer, an error
 * status) into a one-line HubError saying what to do. @huggingface/hub calls go through it too,
 * so its HubApiError (whose message carries URLs and request ids) never reaches the user.
 */
import { HubError } from './hub-error.js';
import { describeCache } from './describe-cache.js';
import type { ResolvedHubOptions } from './options.js';

export interface RepoRequest {
  repo: string;
  revision: string;
}

function causeOf(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message;
}

/** The error for a request the server answered with a non-2xx status. */
export function statusError(res: Response, opts: ResolvedHubOptions, req: RepoRequest, url: string): HubError {
  const code = res.headers.get('x-error-code');
  const at = { status: res.status, url: res.url || url };
  const page = `${opts.endpoint}/${req.repo}`;
  if (code === 'RevisionNotFound') {
    return new HubError('revision', `revision ${req.revision} not found in ${req.repo} on ${opts.endpoint}: check the branch, tag or commit`, at);
  }
  if (code === 'EntryNotFound') {
    const file = /\/resolve\/[^/]+\/(.*)$/.exec(new URL(at.url).pathname)?.[1];
    return new HubError('not-found', `${req.repo}@${req.revision} has no file ${file !== undefined ? decodeURIComponent(file) : at.url}: check the path`, at);
  }
  if (res.status === 401 || res.status === 403) {
    const why = opts.token === undefined ? 'no token was sent' : 'the token was refused';
    return new HubError('unauthorized', `${req.repo} on ${opts.endpoint} answered ${res.status} (${why}): the repository is gated or private; set HF_TOKEN to a token with access and accept the licence on ${page}`, at);
  }
  if (res.status === 404) {
    return new HubError('not-found', `repository ${req.repo} not found on ${opts.endpoint}; check the id, or set HF_TOKEN if it is private`, at);
  }
  return new HubError('network', `${opts.endpoint} answered ${res.status} for ${req.repo}: ${describeCache(opts.cacheDir, req.repo, req.revision)}; try again later or run with --offline`, at);
}

/** The error for a request that got no answer (or whose body broke off). */
export function networkError(err: unknown, opts: ResolvedHubOptions, req: RepoRequest, url?: string): HubError {
  return new HubError('network', `cannot reach ${opts.endpoint} for ${req.repo} (${causeOf(err)}): ${describeCache(opts.cacheDir, req.repo, req.revision)}; run with --offline to use it`, { url });
}

export function hubFetch(opts: ResolvedHubOptions, req: RepoRequest): typeof fetch {
  const origin = new URL(opts.endpoint).origin;
  return async (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    const headers = new Headers(init?.headers);
    // only the Hub itself sees the token; redirects to storage drop it (fetch strips it cross-origin)
    if (opts.token !== undefined && new URL(url).origin === origin) headers.set('authorization', `Bearer ${opts.token}`);
    let res: Response;
    try {
      res = await opts.fetch(url, { ...init, headers });
    } catch (err) {
      throw networkError(err, opts, req, url);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw statusError(res, opts, req, url);
    }
    return res;
  };
}
