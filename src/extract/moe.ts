/**
 * 3-D MoE expert tensors ([experts, ·, ·], e.g. `mlp.experts.gate_up_proj`) written the way PEFT
 * loads them: LoraConfig.target_parameters and lora.ParamWrapper (PEFT ≥ 0.17).
 *
 * What PEFT does, which this file mirrors:
 * - One ParamWrapper per targeted parameter, around the module holding it. Several targeted
 *   parameters of one module nest: each wraps the previous wrapper, in the order the module
 *   declares its parameters, so the first-declared parameter's LoRA is saved under
 *   `<module>.base_layer.….lora_A.weight` and the last one's under `<module>.lora_A.weight`.
 *   transformers declares gate_up_proj (gate_proj, up_proj, w1, w3) before down_proj (w2).
 * - One rank r per parameter; lora_A is (r·E) × in with rows grouped by expert (row e·r + j),
 *   lora_B is out × (r·E) with columns grouped by rank (column j·E + e), so that
 *   ΔW_e = (alpha / r) · Σ_j B[:, j·E + e] · A[e·r + j, :].
 * - Layout: weights stored (E, out, in) (used with F.linear, transformers' default) or
 *   (E, in, out) (used as x @ W: gpt-oss and Llama 4, whose expert modules set is_transposed);
 *   ΔW_e is in the first case slice e, in the second its transpose.
 * - rank_pattern / alpha_pattern entries are matched against the parameter's path
 *   (`model.layers.0.mlp.experts.gate_up_proj`), and target_parameters lists those paths.
 */
import { atomicWriteFile } from '../io/atomic.js';
import { moduleSuffix, patternKey, type PeftConfig } from '../lora/adapter.js';
import { readOwnJsonFile } from '../io/json-file.js';
import { isDownProjection } from '../arch/experts.js';

/**
 * The PEFT module path under which each targeted expert parameter's LoRA is saved, keyed by the
 * parameter's full name: `<module>` plus one `.base_layer` per targeted parameter of the same
 * module that PEFT wraps after it. `params` is in checkpoint order.
 */
export function peftWrapperPaths(params: ReadonlyArray<{ module: string; param: string }>): Map<string, string> {
  const byModule = new Map<string, string[]>();
  for (const { module, param } of params) {
    const list = byModule.get(module) ?? [];
    list.push(param);
    byModule.set(module, list);
  }
  const paths = new Map<string, string>();
  for (const [module, list] of byModule) {
    // stable sort: declaration order as transformers writes it, checkpoint order otherwise
    const ordered = [...list].sort((x, y) => Number(isDownProjection(x)) - Number(isDownProjection(y)));
    ordered.forEach((param, i) => {
      paths.set(`${module}.${param}`, module + '.base_layer'.repeat(ordered.length - 1 - i));
    });
  }
  return paths;
}

export interface ExpertParameterEntry {
  /** full parameter path, e.g. `model.layers.0.mlp.experts.gate_up_proj` */
  parameter: string;
  /** PEFT module path its factors were written under */
  wrapper: string;
  /** rank per expert */
  rank: number;
  alpha: number;
}

/** The module holding a parameter: `model.layers.0.mlp.experts.down_proj` → `model.layers.0.mlp.experts`. */
export function parentPath(parameter: string): string {
  return parameter.slice(0, parameter.lastIndexOf('.'));
}

/**
 * Turns the adapter_config.json the PEFT writer produced (which saw the stacked factors as plain
 * modules of rank r·E) into one PEFT loads with ParamWrapper: the wrappers leave target_modules and
 * the patterns, the parameters go to target_parameters with their per-expert rank and alpha.
 * `linearModules` are the ordinary LoRA modules written (their suffixes stay in target_modules).
 * `planned`: every expert parameter the plan targeted, written or not. PEFT nests the wrappers of
 * one module's parameters in target_parameters order and we chose the nesting (the key paths)
 * before knowing which would turn out unchanged, so a module's unchanged parameters stay listed:
 * PEFT then wraps them too, with zero-initialised factors (a missing-keys warning, no effect).
 */
export async function rewriteConfigForExperts(
  configPath: string,
  entries: readonly ExpertParameterEntry[],
  linearModules: readonly string[],
  planned: readonly string[],
): Promise<void> {
  const config = (await readOwnJsonFile(configPath)) as PeftConfig;
  const writtenModules = new Set(entries.map((e) => parentPath(e.parameter)));
  const rankPattern = { ...config.rank_pattern };
  const alphaPattern = { ...config.alpha_pattern };
  for (const e of entries) {
    delete rankPattern[patternKey(e.wrapper)];
    delete alphaPattern[patternKey(e.wrapper)];
  }
  for (const e of entries) {
    if (e.rank !== config.r) rankPattern[patternKey(e.parameter)] = e.rank;
    if (e.alpha !== config.lora_alpha) alphaPattern[patternKey(e.parameter)] = e.alpha;
  }
  const rewritten: PeftConfig = {
    ...config,
    target_modules: [...new Set(linearModules.map(moduleSuffix))].sort(),
    target_parameters: [...new Set([...entries.map((e) => e.parameter), ...planned.filter((p) => writtenModules.has(parentPath(p)))])].sort(),
    rank_pattern: rankPattern,
    alpha_pattern: alphaPattern,
  };
  await atomicWriteFile(configPath, JSON.stringify(rewritten, null, 2) + '\n');
}
