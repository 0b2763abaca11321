/** Human-readable numbers for summaries. */
export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 2)} ${units[i]}`;
}

export function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/** A fraction as a percentage with the digits small values need (0.0123% rather than 0.01%). */
export function formatPercent(x: number): string {
  if (x === 0) return '0%';
  if (x < 1e-4) return `${(x * 100).toExponential(1)}%`;
  return `${(x * 100).toFixed(x < 0.01 ? 3 : 2)}%`;
}

/** Up to this many tensors get a row each in a summary; beyond it they are grouped by module type. */
const MAX_TENSOR_ROWS = 40;

export interface TensorTableSpec<T> {
  /** the module type a tensor belongs to (q_proj, …): the groups of a large model */
  typeOf: (t: T) => string;
  perTensor: { header: string[]; row: (t: T) => string[] };
  /** one row per module type, from its tensors in input order */
  grouped: { header: string[]; row: (type: string, ts: T[]) => string[] };
}

/**
 * A summary table of per-tensor results: a row per tensor for small models, a row per module
 * type for large ones, where hundreds of rows would bury the point.
 */
export function tensorTable<T>(items: readonly T[], spec: TensorTableSpec<T>): string {
  if (items.length <= MAX_TENSOR_ROWS) return table([spec.perTensor.header, ...items.map(spec.perTensor.row)]);
  const groups = new Map<string, T[]>();
  for (const t of items) {
    const type = spec.typeOf(t);
    groups.set(type, [...(groups.get(type) ?? []), t]);
  }
  return table([spec.grouped.header, ...[...groups].map(([type, ts]) => spec.grouped.row(type, ts))]);
}

/** "lo" or "lo–hi" of some values. */
export function formatRange(values: readonly number[], format: (x: number) => string = String): string {
  const [lo, hi] = [Math.min(...values), Math.max(...values)];
  return lo === hi ? format(lo) : `${format(lo)}–${format(hi)}`;
}

/** Left-aligned text columns. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c]?.length ?? 0)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd()).join('\n');
}
