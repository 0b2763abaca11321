/**
 * Σ edits of MoE expert stacks (LoRA on 3-D parameters, PEFT target_parameters): every expert's
 * ΔW_e = scaling·B_e·A_e is decomposed exactly and edited like a plain module, and the new
 * per-expert factors are stacked back in PEFT's layout under the same key, so the wrapper nesting
 * and target_parameters stay as they were.
 *
 * PEFT keeps one rank r and one alpha per parameter. Every expert of a stack has the same
 * min(r, out, in) components and an edit names components by index, so all experts keep the same
 * number r' of them; r' becomes the parameter's rank (1, with zero factors, when none is left) and
 * the factors absorb the change of alpha/r.
 */
import type { LinalgBackend } from '../linalg/backend.js';
import { productSvd } from '../linalg/product-svd.js';
import type { Svd } from '../linalg/svd-small.js';
import type { LoraExpertsModule } from '../lora/adapter.js';
import type { LowRank } from '../lowrank/low-rank.js';
import { stackExpertFactors } from '../lora/expert-stack.js';
import type { Matrix } from '../tensor/matrix.js';
import { editComponents, editedScaling, factorsForComponents, type SigmaEdit } from './sigma-edit.js';
import { assertFiniteSpectrum } from '../linalg/finite-spectrum.js';
import { scaledLeftFactor } from '../lora/scaled-left-factor.js';

export interface EditedExpertStack {
  /** PEFT's stacked factors: (r'·E) × in and out × (r'·E) */
  A: Matrix;
  B: Matrix;
  /** r' per expert */
  rank: number;
  /** per expert (`<parameter>[e]`): singular values of scaling·B_e·A_e before, and σ' of every original component after */
  experts: Array<{ name: string; sigmaBefore: Float64Array; sigmaAfter: Float64Array }>;
}

/**
 * Edits Σ of every expert of a stack. `noise[e]` is expert e's draw for --perturb. `where` names
 * the adapter in errors.
 */
export async function editExpertStack(
  backend: LinalgBackend,
  stack: LoraExpertsModule,
  edit: SigmaEdit,
  useRslora: boolean,
  noise: ReadonlyArray<Float64Array | undefined>,
  where: string,
): Promise<EditedExpertStack> {
  const experts: Array<{ name: string; svd: Svd }> = [];
  for (const m of stack.experts) {
    const svd = await productSvd(backend, await scaledLeftFactor(backend, m, stack.scaling), m.A);
    assertFiniteSpectrum(svd.S, `${where}: module "${stack.name}" (${m.name})`);
    experts.push({ name: m.name, svd });
  }
  return editExpertSvds(experts, edit, stack.alpha, useRslora, noise);
}

/**
 * The edited stack from every expert's SVD (of its ΔW_e, named `<parameter>[e]`): each expert's
 * components are edited alike, r' is the most any expert keeps (1 when none is left), and the
 * factors at scaling(alpha, r') are stacked.
 */
export function editExpertSvds(
  experts: ReadonlyArray<{ name: string; svd: Svd }>,
  edit: SigmaEdit,
  alpha: number,
  useRslora: boolean,
  noise: ReadonlyArray<Float64Array | undefined>,
): EditedExpertStack {
  const edited = experts.map((x, e) => ({ ...x, ...editComponents(x.svd.S, edit, noise[e]) }));
  const rank = Math.max(1, ...edited.map((x) => x.kept.length));
  const scaling = editedScaling(alpha, rank, useRslora);
  // experts keeping fewer than r' components (all of them when nothing is left and r' is 1) are zero-padded by the stacking
  const factors: LowRank[] = edited.map((x) => factorsForComponents(x.svd, x.sigmaAfter, x.kept, scaling));
  const { A, B } = stackExpertFactors(factors, rank);
  return { A, B, rank, experts: edited.map((x) => ({ name: x.name, sigmaBefore: x.svd.S, sigmaAfter: x.sigmaAfter })) };
}
