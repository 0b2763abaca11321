/** Public API of extraction: `extractLora` and the types around it, plus the built-in demo. */
export { extractLora, isLoraFileOut, loraFileReportPath, type ExtractOptions } from './extract.js';
export type { ExtractReport, ExtractedTensor, DifferingTensor, ExtractTotals, ExpertDetail } from './report.js';
export { REPORT_FILE } from './report.js';
export type { ExtractEvalOptions, ExtractEvalReport } from './evaluate.js';
export type { RankPolicy } from '../lowrank/rank-policy.js';
export { DEFAULT_RANK, DEFAULT_MAX_RANK, describePolicy } from '../lowrank/rank-policy.js';
export type { EmbeddingsMode } from './plan.js';
export { EMBEDDINGS_MODES } from './plan.js';
export { DEFAULT_TARGET_MODULES } from '../delta/targets.js';
