/**
 * Whole-model merges from a mergekit-style config: `mergeModels({ config: 'merge.yaml', out })`.
 */
import { readMergeConfig, validateMergeConfig } from './config.js';
import { executeMerge, type MergeModelsReport, type MergeRunOptions } from './executor.js';
import { withInputTracking } from '../io/inputs.js';

export { parseMergeConfig, readMergeConfig, validateMergeConfig, type MergeConfig, type ModelRef, type SliceSpec, type SourceSpec } from './config.js';
export { executeMerge, DEFAULT_SHARD_BYTES, CONFIG_COPY_FILE, type ExecuteMergeOptions, type MergeRunOptions, type MergeModelsReport } from './executor.js';
export { MERGE_METHODS, METHOD_NAMES, describeMethods, type MergeMethodDef, type MethodName, type ParamDef, type TensorContext } from './methods.js';
export { evaluateSetting, resolveParameter, type ParameterSetting, type ConditionalParameter, type Scalar } from './params.js';
export { maskRng } from './mask-rng.js';
export { planMerge, type MergePlan, type PlannedTensor } from './plan.js';
export { slerpInto, slerpCoefficients, SLERP_DOT_THRESHOLD } from './slerp.js';
export { sparsifyMagnitude, sparsifyRandom, selectTopK, applyTopK, type TopK } from '../sparsify/sparsify.js';
export { kthLargestMagnitude } from '../tensor/top-k.js';

export interface MergeModelsOptions extends MergeRunOptions {
  /**
   * a path to a YAML file, or the same data as a plain object (mergekit's keys: merge_method,
   * base_model, models | slices, parameters, dtype, tokenizer_source | tokenizer, chat_template)
 */
  config: string | Record<string, unknown>;
}

/** Merges models as `params.config` describes. */
export function mergeModels(params: MergeModelsOptions): Promise<MergeModelsReport> {
  return withInputTracking(() => mergeModelsInRun(params));
}

async function mergeModelsInRun({ config, ...opts }: MergeModelsOptions): Promise<MergeModelsReport> {
  const checked = typeof config === 'string' ? await readMergeConfig(config) : validateMergeConfig(config);
  return executeMerge({ ...opts, config: checked });
}
