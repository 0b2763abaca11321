/**
 * Flag parsing and module selection for `spectrum` and `edit`: which components (`--zero 0,1,2`,
 * `--keep 0-7`, `--scale 0:0.5,1:2`), which layers (`--layers 20-31`) and which module types
 * (`--modules q_proj,v_proj`). Component indices are 0-based positions in descending σ order.
 */
import { UsageError } from '../cli/errors.js';

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

/** The decoder layer a module belongs to, from the `layers.N.` part of its path; null outside the layer stack. */
export function layerIndexOf(path: string): number | null {
  const m = /(?:^|\.)layers\.(\d+)\./.exec(path);
  return m ? Number(m[1]) : null;
}

/**
 * `model.layers.3.self_attn.q_proj(.weight)` → `q_proj`: the name PEFT's target_modules use. An
 * expert of a MoE stack, `model.layers.3.mlp.experts.gate_up_proj[5]`, is of its parameter's type
 * (`gate_up_proj`).
 */
export function moduleTypeOf(path: string): string {
  const noExpert = path.replace(/\[\d+\]$/, '');
  const base = noExpert.endsWith('.weight') ? noExpert.slice(0, -'.weight'.length) : noExpert;
  return base.slice(base.lastIndexOf('.') + 1);
}

export interface ModuleSelector {
  /** layer indices to edit; undefined = every module (inside the layer stack or not) */
  layers?: ReadonlySet<number>;
  /** module types (last path component) to edit; undefined = every type */
  modules?: ReadonlySet<string>;
}

/** Whether `--layers` / `--modules` pick this module. With --layers, modules outside the layer stack (embeddings, lm_head) are not picked. */
export function isSelected(sel: ModuleSelector, path: string): boolean {
  if (sel.modules && !sel.modules.has(moduleTypeOf(path))) return false;
  if (sel.layers) {
    const layer = layerIndexOf(path);
    if (layer === null || !sel.layers.has(layer)) return false;
  }
  return true;
}

/**
 * Orders module paths the way people read them: digit runs compare as numbers, so layers.2 comes
 * before layers.10. This order, not the file's, fixes the random draws of `--perturb`.
 */
export function naturalCompare(a: string, b: string): number {
  const ta = a.split(/(\d+)/);
  const tb = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(ta.length, tb.length); i++) {
    if (ta[i] === tb[i]) continue;
    // odd positions of split() with a capture group are the digit runs
    if (i % 2 === 1) {
      const d = Number(ta[i]) - Number(tb[i]);
      if (d !== 0) return d;
    }
    return ta[i] < tb[i] ? -1 : 1;
  }
  return ta.length - tb.length;
}
