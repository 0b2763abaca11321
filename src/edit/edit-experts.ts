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
import { atomicWriteFile } from '../io/atomic.js';
import { moduleSuffix, patternKey, type LoraExpertsModule, type PeftConfig } from '../lora/adapter.js';
import type { LowRank } from '../lowrank/low-rank.js';
import { stackExpertFactors } from '../lora/expert-stack.js';
import type { Matrix } from '../tensor/matrix.js';
import { editComponents, editedScaling, factorsForComponents, type SigmaEdit } from './sigma-edit.js';
import { assertFiniteSpectrum } from '../linalg/finite-spectrum.js';
import { scaledLeftFactor } from '../lora/scaled-left-factor.js';
import { readOwnJsonFile } from '../io/json-file.js';

/** What one written update contributes to adapter_config.json. */
export interface WrittenUpdate {
  /** a plain module's path, or an expert stack's parameter path (what PEFT matches patterns against) */
  path: string;
  expertStack: boolean;
  /** rank (per expert for a stack) */
  rank: number;
  alpha: number;
}

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

/**
 * The PEFT writer sees a stack as a plain module of rank r'·E under its wrapper path; this rewrites
 * the adapter_config.json it wrote into one PEFT loads with ParamWrapper: r / lora_alpha become the
 * most common pair over all updates (ties: the first in `written`), every update that differs
 * gets rank_pattern / alpha_pattern entries keyed by its path (a stack's parameter path, as PEFT
 * matches them), and target_modules lists the plain modules only. target_parameters is the
 * input's, carried through untouched: the keys are the input's too, so PEFT nests the wrappers
 * exactly as before.
 */
export async function restoreExpertConfig(configPath: string, written: readonly WrittenUpdate[]): Promise<void> {
  const config = (await readOwnJsonFile(configPath)) as PeftConfig;
  const counts = new Map<string, { rank: number; alpha: number; n: number }>();
  for (const { rank, alpha } of written) {
    const entry = counts.get(`${rank}/${alpha}`) ?? { rank, alpha, n: 0 };
    entry.n++;
    counts.set(`${rank}/${alpha}`, entry);
  }
  let common = { rank: config.r, alpha: config.lora_alpha, n: 0 };
  for (const entry of counts.values()) if (entry.n > common.n) common = entry;
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const u of written) {
    if (u.rank !== common.rank) rankPattern[patternKey(u.path)] = u.rank;
    if (u.alpha !== common.alpha) alphaPattern[patternKey(u.path)] = u.alpha;
  }
  const restored: PeftConfig = {
    ...config,
    r: common.rank,
    lora_alpha: common.alpha,
    target_modules: [...new Set(written.filter((u) => !u.expertStack).map((u) => moduleSuffix(u.path)))].sort(),
    rank_pattern: rankPattern,
    alpha_pattern: alphaPattern,
  };
  await atomicWriteFile(configPath, JSON.stringify(restored, null, 2) + '\n');
}
