/**
 * Rotary position embeddings as transformers applies them: the "rotate half" layout (the first
 * half of each head's dimensions pairs with the second), inverse frequencies θ^(-2i/d), and the
 * rope_type scalings the supported families use ('default', 'linear', 'llama3').
 */
import { InputError } from '../errors.js';
import type { RawConfig } from '../arch/index.js';

function numberField(p: RawConfig, key: string, file: string): number {
  const v = p[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new InputError(`${file}: rope scaling needs a numeric "${key}"`, { file });
  return v;
}

/** inv_freq for one head of `headDim` dimensions under config.json's RoPE parameters. */
export function ropeInverseFrequencies(headDim: number, rope: RawConfig, file: string): Float64Array {
  const theta = typeof rope['rope_theta'] === 'number' ? (rope['rope_theta'] as number) : 10000;
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  const type = String(rope['rope_type'] ?? 'default');
  if (type === 'default') return inv;
  if (type === 'linear') {
    const factor = numberField(rope, 'factor', file);
    return inv.map((f) => f / factor);
  }
  if (type === 'llama3') {
    // Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth blend between
    const factor = numberField(rope, 'factor', file);
    const low = numberField(rope, 'low_freq_factor', file);
    const high = numberField(rope, 'high_freq_factor', file);
    const oldContext = numberField(rope, 'original_max_position_embeddings', file);
    const lowWavelen = oldContext / low;
    const highWavelen = oldContext / high;
    return inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) return f;
      if (wavelen > lowWavelen) return f / factor;
      const smooth = (oldContext / wavelen - low) / (high - low);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
  }
  throw new InputError(`${file}: rope_type "${type}" is not supported by eval yet (default, linear, llama3)`, { file });
}

/** cos and sin of position·inv_freq for positions [from, from + count), each row headDim/2 wide. */
export interface RopeTable {
  from: number;
  count: number;
  half: number;
  cos: Float32Array;
  sin: Float32Array;
}

export function ropeTable(invFreq: Float64Array, from: number, count: number): RopeTable {
  const half = invFreq.length;
  const cos = new Float32Array(count * half);
  const sin = new Float32Array(count * half);
  for (let p = 0; p < count; p++) {
    for (let i = 0; i < half; i++) {
      // transformers multiplies in f32: round the angle as it does before taking cos and sin
      const angle = Math.fround(Math.fround(from + p) * Math.fround(invFreq[i]!));
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { from, count, half, cos, sin };
}

/**
 * Rotates `heads` heads of `x` (rows × heads·2·half, row r at position table.from + r) in place:
 * x' = x·cos + rotate_half(x)·sin with rotate_half(x) = (−x₂, x₁).
 */
export function applyRope(x: Float32Array, rows: number, heads: number, table: RopeTable): void {
  const { half, cos, sin } = table;
  const hd = 2 * half;
  const width = heads * hd;
  for (let r = 0; r < rows; r++) {
    const c = r * half;
    for (let h = 0; h < heads; h++) {
      const o = r * width + h * hd;
      for (let i = 0; i < half; i++) {
        const a = x[o + i]!;
        const b = x[o + half + i]!;
        const co = cos[c + i]!;
        const si = sin[c + i]!;
        x[o + i] = a * co - b * si;
        x[o + half + i] = b * co + a * si;
      }
    }
  }
}
