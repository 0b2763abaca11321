/** An adapter named on a command line (`--adapter DIR[:WEIGHT]`), as `apply` and `merge-adapters` take it. */
export interface AdapterSpec {
  dir: string;
  /** scales what the adapter does (absent: the caller's default, 1 everywhere today) */
  weight?: number;
}

/**
 * `DIR` or `DIR:WEIGHT`. Only the last colon splits, and only when a number follows it, so paths
 * with colons (`C:/x`, `runs:3/adapter`) still work.
 */
export function parseAdapterSpec(text: string): AdapterSpec {
  const m = /^(.+):([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)$/i.exec(text);
  return m ? { dir: m[1], weight: Number(m[2]) } : { dir: text };
}
