/** merge-adapters as a library: merge PEFT LoRA adapters the way PEFT does, or exactly. */
export {
  mergeAdapters,
  mergeReportPath,
  REPORT_FILE,
  type AdapterInput,
  type MergeAdaptersOptions,
  type MergeReport,
  type ModuleReport,
} from './merge.js';
export {
  MERGE_METHODS,
  METHOD_NAMES,
  acceptedParams,
  checkMethodOptions,
  defaultSvdRank,
  isMethodName,
  mergeModule,
  type MergeMethod,
  type MergedFactors,
  type MethodName,
  type MethodOptions,
  type MethodParam,
} from './methods.js';
export { compareToWeightedSum, type ExactComparison } from './exact.js';
export { seededMaskSource, combineTaskTensors, topKMask } from './prune.js';
export { clampFactors, quantile } from './combine-svd.js';
export type { LowRank, MajoritySign, MaskRequest, MaskSource, MergeTerm, ModuleMergeContext } from './types.js';
export { MAJORITY_SIGNS } from './types.js';
