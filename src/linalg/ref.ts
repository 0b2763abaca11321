/**
 * The pure-TypeScript GEMM: the reference the native backend is tested against and the fallback
 * when onnxruntime-node cannot load (~25x slower).
 *
 * Both operands are first packed into 4-wide panels (O(size) copies against O(m·n·k) arithmetic),
 * which absorbs the transpose flags, so one register-blocked kernel serves all four variants. Sums
 * are kept in f64, so the reference is more accurate than what it checks.
 */
import type { Matrix } from '../tensor/matrix.js';
import type { GemmOptions, LinalgBackend } from './backend.js';

/** Shape of op(A)·op(B) (m×k · k×n), or an Error naming both shapes. */
export function checkGemmShapes(
  a: Matrix,
  b: Matrix,
  transA: boolean,
  transB: boolean,
): { m: number; n: number; k: number } {
  const m = transA ? a.cols : a.rows;
  const k = transA ? a.rows : a.cols;
  const kb = transB ? b.cols : b.rows;
  const n = transB ? b.rows : b.cols;
  if (k !== kb) {
    throw new Error(
      `linalg gemm: inner dimensions differ: op(A) is ${m}×${k}${transA ? ' (A transposed)' : ''}, ` +
        `op(B) is ${kb}×${n}${transB ? ' (B transposed)' : ''}; check the operands and their trans flags`,
    );
  }
  if (a.data.length !== a.rows * a.cols || b.data.length !== b.rows * b.cols) {
    throw new Error('linalg gemm: an operand has data.length !== rows * cols; build matrices with matrix()');
  }
  return { m, n, k };
}

const TILE = 4;

/**
 * op(X) packed as panels of TILE rows (or columns) interleaved: panel t holds, for p = 0..depth-1,
 * the TILE values of rows t·TILE.. at depth p, contiguous. Ragged edges are padded with zeros.
 * `rowStride`/`depthStride` say how to step through X for "rows" of the panel and along depth,
 * which is how one packer serves both operands and both orientations.
 */
function packPanels(x: Float32Array, count: number, depth: number, rowStride: number, depthStride: number): Float32Array {
  const panels = Math.ceil(count / TILE);
  const out = new Float32Array(panels * depth * TILE);
  for (let t = 0; t < panels; t++) {
    const base = t * depth * TILE;
    for (let r = 0; r < TILE; r++) {
      const row = t * TILE + r;
      if (row >= count) break;
      const src = row * rowStride;
      for (let p = 0; p < depth; p++) out[base + p * TILE + r] = x[src + p * depthStride];
    }
  }
  return out;
}

/** The part of a 4×4 result block that lies inside C (ragged right / bottom edge). */
function writeEdgeTile(c: Float32Array, out: number, n: number, rows: number, cols: number, block: number[]): void {
  for (let r = 0; r < rows; r++) {
    for (let q = 0; q < cols; q++) c[out + r * n + q] = block[r * TILE + q];
  }
}

/**
 * C (m×n) = op(A)·op(B) from packed panels: each 4×4 block of C lives in 16 local doubles for the
 * whole depth (f64 sums, 8 loads per 32 flops), which is what lets scalar JS approach 1-2 flops a
 * cycle; an A panel is reused across every B panel while it sits in L2.
 */
function gemmPacked(ap: Float32Array, bp: Float32Array, m: number, n: number, k: number): Float32Array {
  const c = new Float32Array(m * n);
  const span = k * TILE;
  for (let it = 0; it * TILE < m; it++) {
    const aBase = it * span;
    for (let jt = 0; jt * TILE < n; jt++) {
      const bBase = jt * span;
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let p = 0; p < span; p += TILE) {
        const a0 = ap[aBase + p], a1 = ap[aBase + p + 1], a2 = ap[aBase + p + 2], a3 = ap[aBase + p + 3];
        const b0 = bp[bBase + p], b1 = bp[bBase + p + 1], b2 = bp[bBase + p + 2], b3 = bp[bBase + p + 3];
        c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
        c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
        c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
        c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
      }
      const rows = Math.min(TILE, m - it * TILE);
      const cols = Math.min(TILE, n - jt * TILE);
      const out = it * TILE * n + jt * TILE;
      if (rows === TILE && cols === TILE) {
        c[out] = c00; c[out + 1] = c01; c[out + 2] = c02; c[out + 3] = c03;
        c[out + n] = c10; c[out + n + 1] = c11; c[out + n + 2] = c12; c[out + n + 3] = c13;
        c[out + 2 * n] = c20; c[out + 2 * n + 1] = c21; c[out + 2 * n + 2] = c22; c[out + 2 * n + 3] = c23;
        c[out + 3 * n] = c30; c[out + 3 * n + 1] = c31; c[out + 3 * n + 2] = c32; c[out + 3 * n + 3] = c33;
      } else {
        writeEdgeTile(c, out, n, rows, cols, [c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33]);
      }
    }
  }
  return c;
}

export function createRefBackend(): LinalgBackend {
  return {
    name: 'ref',
    async gemm(a: Matrix, b: Matrix, opts: GemmOptions = {}): Promise<Matrix> {
      const transA = opts.transA ?? false;
      const transB = opts.transB ?? false;
      const { m, n, k } = checkGemmShapes(a, b, transA, transB);
      // op(A)[i][p] = a.data[i·rowStride + p·depthStride]; op(B) is packed by its columns
      const ap = transA ? packPanels(a.data, m, k, 1, a.cols) : packPanels(a.data, m, k, a.cols, 1);
      const bp = transB ? packPanels(b.data, n, k, b.cols, 1) : packPanels(b.data, n, k, 1, b.cols);
      return { rows: m, cols: n, data: gemmPacked(ap, bp, m, n, k) };
    },
  };
}
