/**
 * PEFT's layout for LoRA on a 3-D MoE expert parameter (target_parameters): the experts' factors
 * stacked into one lora_A ((r·E) × in, rows e·r + j) and one lora_B (out × (r·E), columns j·E + e).
 * Experts with fewer than r directions get zero rows/columns.
 */
import { matrix, type Matrix } from '../tensor/matrix.js';
import type { LowRank } from '../lowrank/low-rank.js';

/** How the base model stores the experts: [E, out, in] ('out-in') or [E, in, out] ('in-out'). */
export type ExpertLayout = 'out-in' | 'in-out';

/** The stacked factors of `experts` (each out × r_e and r_e × in, r_e ≤ rank). */
export function stackExpertFactors(experts: readonly LowRank[], rank: number): LowRank {
  const count = experts.length;
  const inF = experts[0].A.cols;
  const out = experts[0].B.rows;
  const A = matrix(rank * count, inF);
  const B = matrix(out, rank * count);
  experts.forEach((f, e) => {
    const r = f.A.rows;
    if (r > rank) throw new Error(`internal error: expert ${e} has rank ${r}, more than the stack's ${rank}; please report it`);
    A.data.set(f.A.data, e * rank * inF);
    for (let o = 0; o < out; o++) {
      for (let j = 0; j < r; j++) B.data[o * rank * count + j * count + e] = f.B.data[o * r + j];
    }
  });
  return { A, B };
}

/** The inverse: each expert's factors (rank r = A.rows / count) from the stacked ones. */
export function splitExpertFactors(A: Matrix, B: Matrix, count: number): LowRank[] {
  const r = A.rows / count;
  const out = B.rows;
  const inF = A.cols;
  return Array.from({ length: count }, (_, e) => {
    const Ae = matrix(r, inF, A.data.slice(e * r * inF, (e + 1) * r * inF));
    const Be = matrix(out, r);
    for (let o = 0; o < out; o++) {
      for (let j = 0; j < r; j++) Be.data[o * r + j] = B.data[o * B.cols + j * count + e];
    }
    return { A: Ae, B: Be };
  });
}
