/**
 * Eigen-decomposition of a small symmetric matrix by cyclic Jacobi rotations, in f64.
 *
 * Jacobi is chosen for being short, unconditionally convergent and accurate (eigenvectors
 * orthonormal to working precision), at O(n³) per sweep with ~6–10 sweeps: right for the
 * d×d problems of Procrustes / DoRA work up to a few hundred, not for thousands.
 *
 * Sign convention, as in svd-small.ts: each eigenvector has its largest-magnitude entry
 * positive (the first such entry on exact ties).
 */
import type { Matrix } from '../tensor/matrix.js';

export interface SymEig {
  /** eigenvalues, descending (signed: the largest first, not the largest in magnitude) */
  values: Float64Array;
  /** n×n; column j is the unit eigenvector of values[j] */
  vectors: Matrix;
}

const EPS = 2 ** -52;
const MAX_SWEEPS = 60;

/**
 * m = vectors·diag(values)·vectorsᵀ. The input must be square; it is read as (m + mᵀ)/2, so an
 * f32 matrix that is symmetric up to rounding needs no cleaning first.
 */
export function symEig(m: Matrix): SymEig {
  const n = m.rows;
  if (m.cols !== n) {
    throw new Error(`linalg/eig.ts: symEig needs a square matrix, got ${m.rows}×${m.cols}`);
  }
  // a: row-major symmetric working copy; v: column-major, v[c·n + i] = entry i of vector c
  const a = new Float64Array(n * n);
  let normSq = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const x = 0.5 * (m.data[i * n + j] + m.data[j * n + i]);
      a[i * n + j] = x;
      normSq += x * x;
    }
  }
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  // Off-diagonals below this are rounding noise of the rotations themselves: stop chasing them.
  const floor = EPS * EPS * Math.sqrt(normSq);

  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    let rotations = 0;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        const app = a[p * n + p];
        const aqq = a[q * n + q];
        if (Math.abs(apq) <= Math.max(floor, EPS * Math.sqrt(Math.abs(app * aqq)))) continue;
        rotations++;
        // t = tan θ, the smaller root of t² + 2θt − 1 = 0, zeroes a_pq
        const theta = (aqq - app) / (2 * apq);
        const t =
          Math.abs(theta) > 1e150
            ? 0.5 / theta
            : (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let r = 0; r < n; r++) {
          if (r === p || r === q) continue;
          const arp = a[r * n + p];
          const arq = a[r * n + q];
          const nrp = c * arp - s * arq;
          const nrq = s * arp + c * arq;
          a[r * n + p] = nrp;
          a[p * n + r] = nrp;
          a[r * n + q] = nrq;
          a[q * n + r] = nrq;
        }
        a[p * n + p] = app - t * apq;
        a[q * n + q] = aqq + t * apq;
        a[p * n + q] = 0;
        a[q * n + p] = 0;
        const po = p * n;
        const qo = q * n;
        for (let i = 0; i < n; i++) {
          const x = v[po + i];
          const y = v[qo + i];
          v[po + i] = c * x - s * y;
          v[qo + i] = s * x + c * y;
        }
      }
    }
    if (rotations === 0) break;
  }

  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => a[y * n + y] - a[x * n + x] || x - y);
  const values = new Float64Array(n);
  const data = new Float32Array(n * n);
  order.forEach((src, col) => {
    values[col] = a[src * n + src];
    let best = 0;
    let at = 0;
    for (let i = 0; i < n; i++) {
      const x = Math.abs(v[src * n + i]);
      if (x > best) {
        best = x;
        at = i;
      }
    }
    const sign = v[src * n + at] < 0 ? -1 : 1;
    for (let i = 0; i < n; i++) data[i * n + col] = sign * v[src * n + i];
  });
  return { values, vectors: { rows: n, cols: n, data } };
}
