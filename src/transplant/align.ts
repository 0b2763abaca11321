/**
 * Mapping a donor's embedding space onto a base's from the rows of their shared tokens:
 * mean-centre both, rotate with the orthogonal polar factor of the cross-covariance, scale by
 * Umeyama's least-squares factor, then shift by the base mean:
 *
 *   map(d) = μ_base + s · R · (d − μ_donor),   R = polar(B₀ᵀ D₀),   s = Σσ(B₀ᵀ D₀) / ‖D₀‖²
 *
 * Different widths: R is the rectangular polar factor (base width × donor width). For a narrower
 * donor its columns are orthonormal (an isometric embedding into the base space); for a wider
 * donor its rows are (a projection onto the donor subspace the base correlates with). In both
 * cases a donor that is an exact rotation + scale + shift of the base (or the base of the donor)
 * is recovered to round-off.
 */
import type { LinalgBackend } from '../linalg/backend.js';
import { polarFactor } from '../linalg/polar.js';
import { matrix, type Matrix } from '../tensor/matrix.js';

export interface Alignment {
  muBase: Float64Array;
  muDonor: Float64Array;
  /** base width × donor width */
  R: Matrix;
  scale: number;
  /** rank of the cross-covariance: directions the shared rows determine */
  rank: number;
  /** ‖B₀ − map(D)₀‖ / ‖B₀‖ on the shared rows: with the best scale alone on the common coordinates, and after alignment */
  residualBefore: number;
  residualAfter: number;
}

function columnMeans(m: Matrix): Float64Array {
  const mu = new Float64Array(m.cols);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) mu[j]! += m.data[i * m.cols + j]!;
  for (let j = 0; j < m.cols; j++) mu[j]! /= Math.max(1, m.rows);
  return mu;
}

function centred(m: Matrix, mu: Float64Array): Matrix {
  const out = new Float32Array(m.data.length);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) out[i * m.cols + j] = m.data[i * m.cols + j]! - mu[j]!;
  return matrix(m.rows, m.cols, out);
}

function sumSq(a: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return s;
}

/** Fits the map on paired rows: base (n × base width) and donor (n × donor width), row i of each the same token. */
export async function fitAlignment(backend: LinalgBackend, base: Matrix, donor: Matrix): Promise<Alignment> {
  if (base.rows !== donor.rows) throw new Error(`alignment needs paired rows, got ${base.rows} and ${donor.rows}`);
  const muBase = columnMeans(base);
  const muDonor = columnMeans(donor);
  const B0 = centred(base, muBase);
  const D0 = centred(donor, muDonor);
  const cross = await backend.gemm(B0, D0, { transA: true });
  const { Q, traceSigma, rank } = await polarFactor(backend, cross);
  const donorSq = sumSq(D0.data);
  const scale = donorSq > 0 ? traceSigma / donorSq : 0;
  const baseSq = sumSq(B0.data);
  // after: B₀ − s·D₀·Rᵀ
  const mapped = await backend.gemm(D0, Q, { transB: true });
  let after = 0;
  for (let i = 0; i < mapped.data.length; i++) after += (B0.data[i]! - scale * mapped.data[i]!) ** 2;
  // before: the common coordinates taken as they are, with the best single scale
  const common = Math.min(base.cols, donor.cols);
  let dot = 0;
  let dd = 0;
  for (let i = 0; i < base.rows; i++) {
    for (let j = 0; j < common; j++) {
      const b = B0.data[i * base.cols + j]!;
      const d = D0.data[i * donor.cols + j]!;
      dot += b * d;
      dd += d * d;
    }
  }
  const before = baseSq - (dd > 0 ? (dot * dot) / dd : 0);
  return {
    muBase,
    muDonor,
    R: Q,
    scale,
    rank,
    residualBefore: Math.sqrt(Math.max(0, before) / baseSq),
    residualAfter: Math.sqrt(after / baseSq),
  };
}

/** Donor rows (n × donor width) mapped into the base space (n × base width). */
export async function mapRows(backend: LinalgBackend, a: Alignment, donor: Matrix): Promise<Matrix> {
  const D0 = centred(donor, a.muDonor);
  const out = await backend.gemm(D0, a.R, { transB: true });
  const w = a.R.rows;
  for (let i = 0; i < donor.rows; i++) for (let j = 0; j < w; j++) out.data[i * w + j] = a.muBase[j]! + a.scale * out.data[i * w + j]!;
  return out;
}
