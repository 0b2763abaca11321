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

// ---------------------------------------------------------------------------------------------
// Where a stack is saved. PEFT wraps the module holding each targeted parameter in a ParamWrapper;
// several targeted parameters of one module nest, each wrapping the previous wrapper in the order
// the module declares its parameters, so the first-declared parameter's LoRA is saved under
// `<module>.base_layer.….lora_A.weight` (one `.base_layer` per parameter wrapped after it) and the
// last one's under `<module>.lora_A.weight`. The reader and the writer both go by this.
// ---------------------------------------------------------------------------------------------

/** What PEFT appends to a module's path for each wrapper around it. */
export const BASE_LAYER = '.base_layer';

/** Whether an expert parameter is the down projection (writes the hidden state; declared last). */
export function isDownProjection(param: string): boolean {
  return param.startsWith('down') || param === 'w2';
}

/**
 * Parameters of one module in PEFT's nesting order, innermost first: the order the model declares
 * them, which an adapter does not record. transformers' expert modules declare the gate/up
 * projection (gate_up_proj, gate_proj, up_proj, w1, w3) before the down projection (down_proj, w2).
 */
export function declarationOrder(params: readonly string[]): string[] {
  return [...params.filter((p) => !isDownProjection(p)), ...params.filter(isDownProjection)];
}

/** Names of the parameters of `module` that target_parameters selects (PEFT: `<module>.<param>` equals or ends with an entry). */
export function parametersTargetedOn(module: string, targets: readonly string[]): string[] {
  const params: string[] = [];
  for (const t of targets) {
    const param = t.slice(t.lastIndexOf('.') + 1);
    const key = `${module}.${param}`;
    if ((key === t || key.endsWith(`.${t}`)) && !params.includes(param)) params.push(param);
  }
  return params;
}

/** The PEFT module path `param`'s LoRA is saved under when `params` of `module` are targeted. */
export function wrapperPath(module: string, params: readonly string[], param: string): string {
  const order = declarationOrder(params);
  return module + BASE_LAYER.repeat(order.length - 1 - order.indexOf(param));
}
