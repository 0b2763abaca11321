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
export { openLoraFile, type LoraFile } from './lora/lora-file.js';
export { createLoraFileWriter, type LoraFileWriterOptions } from './lora/lora-file-writer.js';
export { detectLoraFileFormat, type LoraFileFormat } from './lora/lora-file-format.js';
export { downloadSnapshot, parseHubRef, readRemoteSafetensorsHeader, HubError, type HubOptions, type HubRef, type HubErrorKind, type Snapshot, type SnapshotRequest } from './io/hub/index.js';
export { localInput, type InputKind } from './io/local-inputs.js';

// One entry point per command, each taking one params object (an optional `backend` among them,
// default getBackend()) and reporting progress as ProgressEvent through `onProgress`.
// test/index.test.ts checks that every CLI command has its entry point here.
export { extractLora, type ExtractOptions, type ExtractReport, type ExtractEvalOptions, type ExtractEvalReport } from './extract/index.js';
export { mergeAdapters, type MergeAdaptersOptions, type MergeReport, type MergeReport as MergeAdaptersReport } from './merge-adapters/index.js';
export { mergeModels, executeMerge, type MergeModelsOptions, type ExecuteMergeOptions, type MergeModelsReport, type MergeConfig } from './merge/index.js';
export {
  adapterSpectrum,
  deltaSpectrum,
  type AdapterSpectrumOptions,
  type DeltaSpectrumOptions,
  type SpectrumResult,
  type TensorSpectrum,
} from './spectrum/spectrum.js';
export { writeSpectrumOutputs, type SpectrumOutputOptions } from './spectrum/output.js';
export { editAdapter, editDelta, type EditAdapterOptions, type EditDeltaOptions, type EditSummary, type SigmaEdit } from './edit/edit.js';
export type { ModuleSelector } from './edit/selectors.js';
export { editLoraFile, type EditLoraFileOptions } from './edit/edit-lora-file.js';
export { LORA_FILE_OUT_FORMATS, type LoraFileOutFormat } from './lora/lora-file-output.js';
export { applyAdapters, type ApplyOptions, type ApplyReport } from './apply/apply.js';
export { evaluate, type EvalOptions, type EvalReport, type KlPositions, type PromptScore, type ReferenceComparison } from './eval/eval.js';
export { loadTokenizer, type Tokenizer } from './tokenizer/tokenizer.js';
export { transplantEmbeddings, DEFAULT_TRANSPLANT_PARAMS, type TransplantOptions, type TransplantReport, type TransplantParams, type StageReport } from './transplant/transplant.js';
export { sharedVocabulary, type SharedVocabulary, type SharedToken, type MatchKind } from './vocab/shared.js';
export { compareModels, type CompareOptions, type CompareReport, type CompareRow, type CompareSide } from './compare/compare.js';
export { convertAdapter, type ConvertOptions, type ConvertReport } from './convert/convert.js';
export { edoraInit, type EdoraInitOptions, type EdoraInitReport } from './edora-init/edora-init.js';
export { convertToGguf, type ToGgufOptions, type ToGgufResult } from './to-gguf/to-gguf.js';
export { inspectPath, type InspectOptions, type InspectResult } from './inspect/inspect.js';
export { runDemo, type DemoOptions, type DemoResult } from './demo/demo.js';

// What every entry point shares: its progress event and the errors it raises on purpose.
export type { ProgressEvent, OnProgress } from './progress.js';
export { UsageError, InputError, type InputLocation } from './errors.js';
export { OutputIsInputError } from './io/atomic.js';
