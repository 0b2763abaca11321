/**
 * The gated MLP's activation and attention's causal softmax in WebAssembly SIMD
 * (wasm/act-kernels.wat): f32x4 with a polynomial exp (~1 ulp) instead of one Math.exp or
 * Math.tanh call per element. Data passes through the module's memory a chunk at a time, small
 * enough to stay in a core's L2, so the copies in and out cost little next to the exps.
 */
import { ACT_KERNELS_WASM } from './wasm/act-kernels.js';
import { onFirstUse, wasmExports } from '../tensor/wasm-kernels.js';

/** f32 elements per chunk of each operand (256 KiB). */
const CHUNK = 1 << 16;
/** bytes after the data that a group of four may read past its end */
const SLACK = 16;
const PAGE = 65536;

interface KernelExports {
  memory: WebAssembly.Memory;
  gated(g: number, u: number, n: number, gelu: number): void;
  softmaxRows(at: number, rows: number, len: number, last: number, window: number, scale: number, cap: number): void;
}

export interface ActKernels {
  /** g = act(g)·u element-wise */
  gated(g: Float32Array, u: Float32Array, act: 'silu' | 'gelu_tanh'): void;
  /** causalSoftmax of kernels.ts, the same arguments */
  softmaxRows(s: Float32Array, rows: number, len: number, last: number, scale: number, softcap: number, window: number): void;
}

/**
 * This thread's kernels, made on first use; undefined where the runtime has no WebAssembly SIMD
 * (callers fall back to JS). Each call copies in, runs and copies out synchronously, so one
 * instance serves every caller.
 */
export const actKernels: () => ActKernels | undefined = onFirstUse(instantiate);

function instantiate(): ActKernels | undefined {
  const ex = wasmExports<KernelExports>(ACT_KERNELS_WASM);
  if (!ex) return undefined;
  let floats = new Float32Array(0);
  /** Grows the memory to hold `n` f32 and the slack; views are made again after a growth (it detaches the old ones). */
  const fit = (n: number): Float32Array => {
    const pages = Math.ceil((4 * n + SLACK) / PAGE) - ex.memory.buffer.byteLength / PAGE;
    if (pages > 0) ex.memory.grow(pages);
    if (floats.buffer !== ex.memory.buffer) floats = new Float32Array(ex.memory.buffer);
    return floats;
  };
  return {
    gated(g, u, act) {
      if (g.length !== u.length) throw new Error(`gated activation: ${g.length} and ${u.length} elements`);
      const f = fit(2 * CHUNK);
      const gelu = act === 'gelu_tanh' ? 1 : 0;
      for (let i = 0; i < g.length; i += CHUNK) {
        const count = Math.min(CHUNK, g.length - i);
        f.set(g.subarray(i, i + count), 0);
        f.set(u.subarray(i, i + count), CHUNK);
        ex.gated(0, 4 * CHUNK, count, gelu);
        g.set(f.subarray(0, count), i);
      }
    },
    softmaxRows(s, rows, len, last, scale, softcap, window) {
      // whole rows a chunk, at least one
      const per = Math.max(1, Math.floor(CHUNK / len));
      const f = fit(per * len);
      for (let r = 0; r < rows; r += per) {
        const count = Math.min(per, rows - r);
        const part = s.subarray(r * len, (r + count) * len);
        f.set(part, 0);
        ex.softmaxRows(0, count, len, last + r, window, scale, softcap);
        part.set(f.subarray(0, count * len));
      }
    },
  };
}
