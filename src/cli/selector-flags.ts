/**
 * Flags that pick components and modules for `spectrum` and `edit`: which components (`--zero 0,1,2`,
 * `--keep 0-7`, `--scale 0:0.5,1:2`), which layers (`--layers 20-31`) and which module types
 * (`--modules q_proj,v_proj`). Component indices are 0-based positions in descending σ order.
 */
import { UsageError } from './errors.js';

/** A list that would select more than this is a typo (e.g. `0-1000000000`), not a request. */
const MAX_LIST_SIZE = 1_000_000;

function parseIndex(flag: string, token: string, whole: string): number {
  if (!/^\d+$/.test(token)) {
    throw new UsageError(`${flag}: "${token}" in "${whole}" is not a non-negative integer (write e.g. 0,1,2 or 0-7)`);
  }
  const n = Number(token);
  if (!Number.isSafeInteger(n)) throw new UsageError(`${flag}: ${token} is too large`);
  return n;
}

/** "0,2,5-7" → [0, 2, 5, 6, 7]: comma-separated indices and inclusive ranges, sorted, duplicates removed. */
export function parseIndexList(flag: string, text: string): number[] {
  const out = new Set<number>();
  for (const raw of text.split(',')) {
    const part = raw.trim();
    if (part === '') throw new UsageError(`${flag}: empty entry in "${text}" (write e.g. 0,1,2 or 0-7)`);
    const range = /^(\d+)\s*-\s*(\d+)$/.exec(part);
    if (range) {
      const lo = parseIndex(flag, range[1], text);
      const hi = parseIndex(flag, range[2], text);
      if (hi < lo) throw new UsageError(`${flag}: range "${part}" runs backwards; write ${hi}-${lo}`);
      if (hi - lo + 1 + out.size > MAX_LIST_SIZE) throw new UsageError(`${flag}: "${part}" selects more than ${MAX_LIST_SIZE} entries`);
      for (let i = lo; i <= hi; i++) out.add(i);
    } else {
      out.add(parseIndex(flag, part, text));
    }
  }
  return [...out].sort((a, b) => a - b);
}

/**
 * "0:0.5,1:2,4-7:0" → Map {0 → 0.5, 1 → 2, 4..7 → 0}. Each entry is INDEX:FACTOR or RANGE:FACTOR;
 * naming an index twice is refused, since which factor wins would be a guess.
 */
export function parseScaleList(flag: string, text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const raw of text.split(',')) {
    const part = raw.trim();
    const colon = part.lastIndexOf(':');
    if (colon <= 0 || colon === part.length - 1) {
      throw new UsageError(`${flag}: "${part}" in "${text}" must be INDEX:FACTOR or FIRST-LAST:FACTOR (e.g. 0:0.5,1:2)`);
    }
    const factorText = part.slice(colon + 1).trim();
    const factor = Number(factorText);
    if (factorText === '' || !Number.isFinite(factor)) throw new UsageError(`${flag}: factor "${factorText}" in "${part}" is not a finite number`);
    for (const index of parseIndexList(flag, part.slice(0, colon))) {
      if (out.has(index)) throw new UsageError(`${flag}: component ${index} is given two factors in "${text}"`);
      out.set(index, factor);
    }
  }
  return out;
}

/** "q_proj, v_proj" → ['q_proj', 'v_proj']. */
export function parseNameList(flag: string, text: string): string[] {
  const names = text.split(',').map((s) => s.trim());
  if (names.some((n) => n === '')) throw new UsageError(`${flag}: empty name in "${text}" (write e.g. q_proj,v_proj)`);
  return [...new Set(names)];
}

/** A user-written regular expression, with a usage error (not a stack trace) when it does not compile. */
export function parseRegexFlag(flag: string, text: string): RegExp {
  try {
    return new RegExp(text);
  } catch (err) {
    throw new UsageError(`${flag}: "${text}" is not a valid regular expression (${(err as Error).message})`);
  }
}
