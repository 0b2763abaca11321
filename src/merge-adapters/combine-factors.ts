/**
 * The two PEFT merges that never form a delta: `cat` (exact: the factors are stacked, rank Σ r_i)
 * and the linear / ties / dare_* / magnitude_prune family, which merges lora_A and lora_B each on
 * its own. The latter is PEFT's approximation: with A' = Σ ±√|c_i|·A_i and B' = Σ √|c_i|·B_i,
 * B'·A' = Σ_i c_i·B_i·A_i + Σ_{i≠j} ±√|c_i c_j|·B_j·A_i — the cross terms make it differ from the
 * weighted sum, often by as much as the sum itself.
 */
import { matrix, type Matrix } from '../tensor/matrix.js';
import { combineTaskTensors } from './prune.js';
import type { ElementwiseStep, LowRank, MaskTarget, ModuleMergeContext } from './types.js';

/**
 * PEFT's cat: A' stacks w_i·s_i·A_i row-wise, B' stacks B_i column-wise, so
 * B'·A' = Σ w_i·s_i·B_i·A_i exactly; the rank is Σ r_i.
 */
export function catFactors(ctx: ModuleMergeContext): LowRank {
  const { terms } = ctx;
  const out = terms[0].B.rows;
  const inF = terms[0].A.cols;
  const total = terms.reduce((s, t) => s + t.A.rows, 0);
  const A = matrix(total, inF);
  const B = matrix(out, total);
  let offset = 0;
  for (const { A: a, B: b, weight, scaling } of terms) {
    const r = a.rows;
    // PEFT multiplies by the weight, then by the scaling, each rounded to f32
    for (let i = 0; i < a.data.length; i++) A.data[offset * inF + i] = Math.fround(a.data[i] * weight) * scaling;
    for (let row = 0; row < out; row++) B.data.set(b.data.subarray(row * r, row * r + r), row * total + offset);
    offset += r;
  }
  return { A, B };
}

/**
 * Why the factor-wise family cannot merge these ranks, or undefined when they are all equal.
 * `sources` label each adapter (a path, or its position) for the message.
 */
export function unequalRanksProblem(module: string, method: string, sources: ReadonlyArray<{ label: string; rank: number }>): string | undefined {
  if (new Set(sources.map((s) => s.rank)).size <= 1) return undefined;
  const list = sources.map((s) => `${s.label}: r=${s.rank}`).join(', ');
  return (
    `module "${module}": method ${method} merges lora_A and lora_B separately and needs all adapters to have the same rank ` +
    `(${list}); use cat, an *_svd method, or --exact, which merge the deltas instead`
  );
}

/**
 * PEFT's factor-wise merge: the weights c_i = w_i·s_i are split as ±√|c_i| on A (sign on A only,
 * so negative weights stay negative) and √|c_i| on B, and `step` combines the A_i and the B_i as
 * task tensors, each with its own DARE masks.
 */
export function mergeFactorsSeparately(ctx: ModuleMergeContext, step: ElementwiseStep, method: string): LowRank {
  const { terms } = ctx;
  const problem = unequalRanksProblem(ctx.module, method, terms.map((t) => ({ label: `adapter ${t.adapter + 1}`, rank: t.A.rows })));
  if (problem) throw new Error(problem);
  const weightsA: number[] = [];
  const weightsB: number[] = [];
  for (const { weight, scaling } of terms) {
    const c = weight * scaling;
    weightsA.push(Math.sqrt(Math.abs(c)) * (c >= 0 ? 1 : -1));
    weightsB.push(Math.sqrt(Math.abs(c)));
  }
  const combine = (pick: (t: (typeof terms)[number]) => Matrix, weights: number[], target: MaskTarget): Matrix => {
    const first = pick(terms[0]);
    const data = combineTaskTensors(
      step,
      terms.map((t) => pick(t).data.slice()), // pruning works in place; the inputs are still needed
      weights,
      {
        density: ctx.density,
        majoritySign: ctx.majoritySign,
        mask: (i) => ctx.masks({ module: ctx.module, target, adapter: terms[i].adapter, size: first.data.length }),
      },
    );
    return matrix(first.rows, first.cols, data);
  };
  return { A: combine((t) => t.A, weightsA, 'A'), B: combine((t) => t.B, weightsB, 'B') };
}
