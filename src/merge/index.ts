/**
 * Whole-model merges from a mergekit-style config: `mergeModels('merge.yaml', {out})`.
 */
import { readMergeConfig, validateMergeConfig } from './config.js';
import { executeMerge, type MergeModelsOptions, type MergeModelsReport } from './executor.js';
import { withInputTracking } from '../io/inputs.js';

export { parseMergeConfig, readMergeConfig, validateMergeConfig, type MergeConfig, type ModelRef, type SliceSpec, type SourceSpec } from './config.js';
export { executeMerge, DEFAULT_SHARD_BYTES, CONFIG_COPY_FILE, type MergeModelsOptions, type MergeModelsReport } from './executor.js';
export { MERGE_METHODS, METHOD_NAMES, describeMethods, type MergeMethodDef, type MethodName, type ParamDef, type TensorContext } from './methods.js';
export { evaluateSetting, resolveParameter, type ParameterSetting, type ConditionalParameter, type Scalar } from './params.js';
export { maskRng } from './mask-rng.js';
export { planMerge, type MergePlan, type PlannedTensor } from './plan.js';
export { slerpInto, slerpCoefficients, SLERP_DOT_THRESHOLD } from './slerp.js';
export { sparsifyMagnitude, sparsifyRandom, selectTopK, applyTopK, type TopK } from './sparsify.js';
export { kthLargestMagnitude } from '../tensor/top-k.js';

/**
 * Merges models as `config` describes: a path to a YAML file, or the same data as a plain object
 * (mergekit's keys: merge_method, base_model, models | slices, parameters, dtype, tokenizer_source).
 */
export function mergeModels(config: string | Record<string, unknown>, opts: MergeModelsOptions): Promise<MergeModelsReport> {
  return withInputTracking(() => mergeModelsInRun(config, opts));
}

async function mergeModelsInRun(config: string | Record<string, unknown>, opts: MergeModelsOptions): Promise<MergeModelsReport> {
  const checked = typeof config === 'string' ? await readMergeConfig(config) : validateMergeConfig(config);
  return executeMerge(checked, opts);
}
