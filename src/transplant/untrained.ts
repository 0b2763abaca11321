/**
 * Rows a base model never trained: they still hold their initialisation, so cosine to them says
 * nothing, while a donor that knows the token can help most there. Real models keep such rows
 * for tokens absent from their training data (and padding rows beyond the tokenizer).
 *
 * A row counts as untrained when
 * - its id is beyond the tokenizer's vocabulary (padding rows the tokenizer never produces), or
 * - config.json gives `initializer_range` σ and the row's norm lies within 5 standard deviations
 *   of what N(0, σ²) gives a row of this width (mean σ·√width, spread σ/√2): a trained row has
 *   moved away from that narrow band. Without initializer_range only padding rows count;
 * - or the caller says so (`also`): an untied lm_head row of a token whose embedding row is untrained.
 */
import { rowNorm } from './blend.js';

export interface UntrainedRows {
  /** per row of the table: 1 when untrained */
  flags: Uint8Array;
  count: number;
  padding: number;
  /** the band of norms taken as initialisation, when there is one */
  band?: [number, number];
}

export function findUntrainedRows(
  table: Float32Array,
  rows: number,
  width: number,
  tokenizerSize: number,
  initializerRange: number | undefined,
  also?: Uint8Array,
): UntrainedRows {
  const flags = new Uint8Array(rows);
  let padding = 0;
  let band: [number, number] | undefined;
  if (initializerRange !== undefined && initializerRange > 0) {
    const mean = initializerRange * Math.sqrt(width);
    const spread = initializerRange / Math.SQRT2;
    band = [mean - 5 * spread, mean + 5 * spread];
  }
  let count = 0;
  for (let r = 0; r < rows; r++) {
    let untrained = r >= tokenizerSize;
    if (untrained) padding++;
    else if (also?.[r]) untrained = true;
    else if (band) {
      const n = rowNorm(table, r, width);
      untrained = n >= band[0] && n <= band[1];
    }
    if (untrained) {
      flags[r] = 1;
      count++;
    }
  }
  return { flags, count, padding, ...(band ? { band } : {}) };
}
