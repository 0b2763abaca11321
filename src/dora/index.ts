/** DoRA / EDoRA support: merging adapters into a base, converting DoRA to LoRA, EDoRA initialisation. */
export { applyAdapters, type ApplyOptions, type ApplyReport, type AppliedUpdate } from './apply.js';
export { parseAdapterSpec, type AdapterSpec } from '../lora/adapter-spec.js';
export { convertAdapter, DEFAULT_ENERGY, DEFAULT_MAX_RANK_FACTOR, type ConvertOptions, type ConvertReport, type ConvertedModule, type RankPolicy } from './convert.js';
export { edoraInit, DEFAULT_EDORA_POWER_ITERS, DEFAULT_EDORA_SIGMA, type EdoraInitOptions, type EdoraInitReport, type EdoraInitModule } from './edora-init.js';
export {
  adapterMethod,
  applyUpdateInPlace,
  doraNormAxis,
  updateDifference,
  weightNorms,
  weightUpdate,
  type AdapterMethod,
  type BlockOptions,
  type NormAxis,
  type WeightUpdate,
} from './formula.js';
export { checkAdapterVariant, edoraReconstrConfig, findReconstrConfig, RECONSTR_CONFIG_FILE, type AdapterVariant, type ReconstrConfig } from './variant.js';
