/**
 * The one way the rest of loraforge gets a GEMM backend: onnxruntime-node when it loads, else the
 * pure-TypeScript reference (with one warning, since everything becomes ~25x slower).
 */
import type { LinalgBackend } from './backend.js';
import { createRefBackend } from './ref.js';

export type { GemmOptions, LinalgBackend } from './backend.js';

export interface BackendOptions {
  /** threads for the native GEMM (default: every core) */
  threads?: number;
  /** 'ref' forces the TypeScript backend (tests, debugging); default 'ort' */
  prefer?: 'ort' | 'ref';
}

const backends = new Map<string, Promise<LinalgBackend>>();
let warned = false;

/** `load()`, or the TypeScript backend with a one-time warning on stderr when it throws. */
export async function withFallback(load: () => Promise<LinalgBackend>): Promise<LinalgBackend> {
  try {
    return await load();
  } catch (err) {
    if (!warned) {
      warned = true;
      const reason = err instanceof Error ? err.message : String(err);
      process.stderr.write(`loraforge: falling back to the pure-TypeScript backend, ~25x slower: ${reason}\n`);
    }
    return createRefBackend();
  }
}

async function loadOrt(threads: number | undefined): Promise<LinalgBackend> {
  // imported here, not at the top, so a missing or broken native binding is caught
  const { createOrtBackend } = await import('./ort.js');
  return createOrtBackend({ threads });
}

/** A backend for these options, made once and shared by every caller that asks the same. */
export function getBackend(opts: BackendOptions = {}): Promise<LinalgBackend> {
  const prefer = opts.prefer ?? 'ort';
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1)) {
    return Promise.reject(new Error(`linalg/index.ts: threads must be a positive integer, got ${opts.threads}`));
  }
  const key = `${prefer}:${opts.threads ?? 'all'}`;
  let backend = backends.get(key);
  if (!backend) {
    backend = prefer === 'ref' ? Promise.resolve(createRefBackend()) : withFallback(() => loadOrt(opts.threads));
    backends.set(key, backend);
  }
  return backend;
}
