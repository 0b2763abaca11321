import { UsageError } from '../errors.js';

export { UsageError };

/** Exit codes scripts can rely on (0: success). The work failed: bad input file, numeric problem, I/O error. */
export const EXIT_FAILURE = 1;
/** The command line itself was wrong: unknown flag, bad value, missing argument. */
export const EXIT_USAGE = 2;

/**
 * A flag's value as an integer ≥ min, or a UsageError naming the flag. An optional flag left out
 * (undefined) stays undefined, so the library applies its own default.
 */
export function parseIntFlag(name: string, value: string, min?: number): number;
export function parseIntFlag(name: string, value: string | undefined, min?: number): number | undefined;
export function parseIntFlag(name: string, value: string | undefined, min = 0): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${name} must be an integer ≥ ${min}, got "${value}"`);
  return n;
}

/** A flag's value as a finite number in `range`; undefined stays undefined, as in parseIntFlag. */
export function parseFloatFlag(name: string, value: string, range?: [number, number]): number;
export function parseFloatFlag(name: string, value: string | undefined, range?: [number, number]): number | undefined;
export function parseFloatFlag(name: string, value: string | undefined, range: [number, number] = [-Infinity, Infinity]): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < range[0] || n > range[1]) {
    throw new UsageError(`${name} must be a number in [${range[0]}, ${range[1]}], got "${value}"`);
  }
  return n;
}
