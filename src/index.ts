/**
 * loraforge as a library. Everything the CLI does is reachable from here.
 */
export type { Matrix } from './tensor/matrix.js';
export type { TensorInfo, TensorSource, TensorSink, FloatDType } from './io/types.js';
export { openSafetensors, writeSafetensorsFile, createSafetensorsSink } from './io/safetensors.js';
export { openCheckpoint, pairTensors } from './io/checkpoint.js';
export { openGguf, createGgufSink } from './io/gguf.js';
export { describeOsError, userPath } from './io/os-error.js';
export { getBackend } from './linalg/index.js';
export type { LinalgBackend } from './linalg/backend.js';
export { randomizedSvd, incrementalSvd } from './linalg/rsvd.js';
export { productSvd } from './linalg/product-svd.js';
export {
  openPeftAdapter,
  readPeftAdapter,
  PeftAdapterWriter,
  expertDeltaTensor,
  type LoraModule,
  type LoraModuleInfo,
  type LoraExpertsModule,
  type PeftAdapter,
  type PeftConfig,
} from './lora/adapter.js';
export { stackExpertFactors, splitExpertFactors, type ExpertLayout } from './lora/expert-stack.js';
export { createAdapterSink, type AdapterFormat } from './lora/sink.js';
export { inspectPath, type InspectResult } from './inspect/inspect.js';
export { extractLora, type ExtractOptions, type ExtractReport } from './extract/index.js';
export { mergeAdapters, type MergeAdaptersOptions, type MergeReport } from './merge-adapters/index.js';
export { mergeModels, type MergeModelsOptions, type MergeModelsReport } from './merge/index.js';
export { applyAdapters } from './apply/apply.js';
export { convertAdapter } from './convert/convert.js';
export { edoraInit } from './edora-init/edora-init.js';
export { adapterSpectrum, deltaSpectrum } from './spectrum/spectrum.js';
export { convertToGguf } from './to-gguf/to-gguf.js';
