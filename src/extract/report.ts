/**
 * What an extraction did, tensor by tensor: kept in the output folder as report.json (beside a
 * kohya output file as `<name>.report.json`) and
 * summarised as a table for people.
 */
import type { FloatDType } from '../io/types.js';
import type { AdapterFormat } from '../lora/sink.js';
import type { ExpertLayout } from '../lora/expert-stack.js';
import type { EmbeddingsMode } from './plan.js';
import type { RankPolicy } from '../lowrank/rank-policy.js';
import type { ExtractEvalReport } from './evaluate.js';
import type { DiffusionLayout } from '../delta/diffusion-targets.js';
import type { LoraFileFormat } from '../lora/lora-file-format.js';

export const REPORT_FILE = 'report.json';

export interface ExpertDetail {
  count: number;
  layout: ExpertLayout;
  /** PEFT target_parameters entry (`model.layers.0.mlp.experts.gate_up_proj`) */
  parameter: string;
  /**
   * the rank the policy chose for each expert (0 for an expert that did not change); every expert
   * stores `rank` directions — PEFT has one rank per parameter — so the others keep extra ones
   */
  ranks: number[];
  /** relative error per expert with the directions stored, from the spectrum */
  relErrors: number[];
}

export interface ExtractedTensor {
  /** tensor name in the checkpoints */
  name: string;
  /** module path the LoRA is saved under (PEFT naming, without base_model.model.) */
  module: string;
  kind: 'linear' | 'embedding' | 'experts';
  shape: number[];
  /** LoRA rank r (per expert for 3-D tensors) */
  rank: number;
  alpha: number;
  /** captured fraction of ‖Δ‖²_F */
  energy: number;
  /**
   * ‖Δ − scaling·B·A‖_F / ‖Δ‖_F from the spectrum, err² = ‖Δ‖² − Σ_{i≤r} σ_i²; a difference of two
   * f32-accurate energies, so good to ~1e-3 absolute (exactRelError is exact)
   */
  relError: number;
  /** the same, computed exactly by GEMM from the factors as stored (sampled tensors, or all with verify) */
  exactRelError?: number;
  /** adaptive ranks: false when the rank cap stopped short of the target */
  targetMet: boolean;
  /** seconds spent on this tensor after reading (Δ, SVD, writing) */
  seconds: number;
  experts?: ExpertDetail;
}

export interface DifferingTensor {
  name: string;
  shape: number[];
  /** ‖W_B − W_A‖_F / ‖W_A‖_F (Infinity when W_A is all zeros; null when A's tensor was not read) */
  relChange: number | null;
  /** written whole into the adapter (modules_to_save) */
  saved: boolean;
  /** why it was not extracted or saved */
  reason?: string;
}

export interface ExtractTotals {
  /** LoRA modules written */
  tensors: number;
  /** parameters in the adapter (LoRA factors and saved tensors) */
  params: number;
  /** bytes of tensor data read from both checkpoints */
  bytesRead: number;
  /** wall time of the whole extraction */
  seconds: number;
  /** time spent waiting for reads (the part not hidden behind compute) */
  readWaitSeconds: number;
  /** time spent forming Δ, decomposing and writing */
  computeSeconds: number;
  skippedIdentical: number;
  nonTargetDiffering: number;
}

export interface ExtractReport {
  modelA: string;
  modelB: string;
  out: string;
  /** 'kohya' / 'diffusers': one LoRA .safetensors file of that layout (diffusion checkpoints) */
  format: AdapterFormat | LoraFileFormat;
  /** diffusion checkpoints: the layout read and the conv rank policy (absent: k×k convs skipped) */
  diffusion?: { layout: DiffusionLayout; convPolicy?: RankPolicy; textEncoders: boolean; convSkipped: string[] };
  dtype: FloatDType;
  policy: RankPolicy;
  /** the alpha given, or 'rank' when every module's alpha is its own rank (scaling 1) */
  alpha: number | 'rank';
  seed: number;
  backend: string;
  embeddings: { mode: EmbeddingsMode; tied: boolean; vocabA?: number; vocabB?: number };
  tensors: ExtractedTensor[];
  /** targets whose weights are identical in A and B (nothing to extract, nothing written) */
  skippedIdentical: string[];
  /** non-target tensors that differ (norms, biases, skipped embeddings or experts) */
  nonTargetDiffering: DifferingTensor[];
  /** 3-D expert tensors left out by --skip-3d */
  skipped3d: string[];
  notes: string[];
  warnings: string[];
  totals: ExtractTotals;
  /** with evalText: perplexities of B, A and A + adapter, KL(B ‖ A + adapter) */
  eval?: ExtractEvalReport;
}
