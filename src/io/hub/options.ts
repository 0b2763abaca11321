/**
 * The Hub settings a call runs with: its options first, then the environment variables
 * huggingface_hub reads (HF_HUB_CACHE, HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE), so loraforge
 * and Python share one cache and one login.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { OnProgress } from '../../progress.js';

export interface HubOptions {
  /** cache only, no network; also on when HF_HUB_OFFLINE is 1/true/yes/on */
  offline?: boolean;
  /** phase 'download': one event per finished file, `partial` ones while bytes arrive */
  onProgress?: OnProgress;
  /** told when the Hub cannot be reached and the cached revision is used instead */
  onWarning?: (message: string) => void;
  /** default: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub */
  cacheDir?: string;
  /** default: HF_ENDPOINT, else https://huggingface.co */
  endpoint?: string;
  /** default: HF_TOKEN, else the token file `huggingface-cli login` writes (HF_TOKEN_PATH or $HF_HOME/token) */
  token?: string;
  fetch?: typeof fetch;
}

export interface ResolvedHubOptions {
  offline: boolean;
  onProgress?: OnProgress;
  onWarning?: (message: string) => void;
  cacheDir: string;
  endpoint: string;
  token?: string;
  fetch: typeof fetch;
}

const TRUE_VALUES = new Set(['1', 'true', 'yes', 'on']);

function hfHome(env: NodeJS.ProcessEnv): string {
  return env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
}

function tokenFromFile(env: NodeJS.ProcessEnv): string | undefined {
  try {
    const token = readFileSync(env.HF_TOKEN_PATH ?? join(hfHome(env), 'token'), 'utf8').trim();
    return token === '' ? undefined : token;
  } catch {
    return undefined; // not logged in
  }
}

export function resolveHubOptions(opts: HubOptions, env: NodeJS.ProcessEnv = process.env): ResolvedHubOptions {
  const envToken = env.HF_TOKEN?.trim();
  return {
    offline: opts.offline === true || TRUE_VALUES.has((env.HF_HUB_OFFLINE ?? '').toLowerCase()),
    onProgress: opts.onProgress,
    onWarning: opts.onWarning,
    cacheDir: opts.cacheDir ?? env.HF_HUB_CACHE ?? join(hfHome(env), 'hub'),
    endpoint: (opts.endpoint ?? env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, ''),
    token: opts.token ?? (envToken ? envToken : tokenFromFile(env)),
    fetch: opts.fetch ?? fetch,
  };
}
