/**
 * llama.cpp LoRA adapter GGUF writer.
 *
 * What llama.cpp (src/llama-adapter.cpp, src/llama-graph.cpp) expects and why this writer does
 * what it does:
 * - metadata `general.type = "adapter"`, `adapter.type = "lora"`, `general.architecture` equal to
 *   the base GGUF's, and `adapter.lora.alpha` (f32);
 * - per base tensor `<name>.weight.lora_a` / `.lora_b`. For a linear layer lora_a is PyTorch
 *   [r, in] and lora_b [out, r]; ΔW·x is computed as lora_b·(lora_a·x).
 * - `token_embd` is the exception: the lookup is `lora_b · lora_a[token]ᵀ`, so lora_a is
 *   [vocab, r] and lora_b [hidden, r] (the factors of ΔE = lora_a·lora_bᵀ).
 * - the applied scale is `user_scale · alpha / r` with r = lora_b's row length per tensor, and one
 *   alpha per file; `alpha = 0` means "no alpha": scale = user_scale. Modules of one adapter can
 *   have different alphas, ranks and rsLoRA scaling, and modules stream in one at a time, so every
 *   module's own PEFT scaling is multiplied into lora_b and the file says alpha = 0: every tensor
 *   is then applied with exactly its own scaling times the user's scale.
 * - bases converted from HF Llama checkpoints have the rows of Q and K permuted for RoPE; the
 *   rows of lora_b are permuted the same way, since (P·B)·A = P·(B·A).
 */
import { familyOfGgufArch, modelConfig } from '../arch/index.js';
import type { FloatDType } from '../io/types.js';
import { createGgufSink, kvF32, kvString, type GgufSink } from '../io/gguf.js';
import { matrix, transpose, type Matrix } from '../tensor/matrix.js';
import { loraScaling, type LoraModule } from './adapter.js';
import { ggufArchFromConfig, hfModuleToGguf, permuteQkRows, qkPermuteHeadCount, type GgufArch } from './gguf-names.js';
import type { ModuleSink } from './sink.js';

export interface GgufLoraWriterOptions {
  /** The base model's config.json: architecture, head counts, tie_word_embeddings. */
  config: Record<string, unknown>;
  /** Storage dtype of the factors; default F32. */
  dtype?: FloatDType;
  /** Modules' scaling is alpha/√r instead of alpha/r (PEFT use_rslora). */
  useRslora?: boolean;
}

/** What llama.cpp reads as "apply each tensor with the user's scale only" (see the file comment). */
export const GGUF_LORA_BAKED_ALPHA = 0;

/** The GGUF base names (no `.weight`) of the two tensors that can only exist in untied models. */
const TOKEN_EMBD = 'token_embd';
const LM_HEAD = 'lm_head';

/**
 * Whether the base model shares its input embedding with the output projection: config.json's
 * tie_word_embeddings, else the default of the arch's HF config class (src/arch/families.ts).
 */
export function hasTiedEmbeddings(arch: GgufArch, config: Record<string, unknown>): boolean {
  return modelConfig(config).tieWordEmbeddings ?? familyOfGgufArch(arch)?.tieWordEmbeddings ?? false;
}

/** The two tensors one LoRA module becomes, in PyTorch shape order. */
export interface GgufLoraPair {
  /** GGUF tensor base name, e.g. `blk.0.attn_q.weight` */
  weightName: string;
  loraA: { shape: [number, number]; data: Float32Array };
  loraB: { shape: [number, number]; data: Float32Array };
}

/** B (out × r) · R (r × r): folds an EDoRA-style latent into B; r is small, so a plain loop is enough. */
function foldLatent(B: Matrix, R: Matrix): Matrix {
  const out = matrix(B.rows, R.cols);
  for (let i = 0; i < B.rows; i++) {
    for (let k = 0; k < B.cols; k++) {
      const b = B.data[i * B.cols + k]!;
      if (b === 0) continue;
      for (let j = 0; j < R.cols; j++) out.data[i * R.cols + j]! += b * R.data[k * R.cols + j]!;
    }
  }
  return out;
}

function scaled(data: Float32Array, s: number): Float32Array {
  if (s === 1) return data;
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i]! * s;
  return out;
}

/**
 * The llama.cpp LoRA tensors for one module (pure: no I/O), with the module's PEFT scaling baked
 * into lora_b and the Q/K row permutation applied. Throws a message naming the module for
 * anything a GGUF LoRA cannot express.
 */
export function ggufLoraTensors(
  m: LoraModule,
  opts: { config: Record<string, unknown>; arch?: GgufArch; useRslora?: boolean; where?: string },
): GgufLoraPair {
  const arch = opts.arch ?? ggufArchFromConfig(opts.config);
  const where = opts.where ?? 'GGUF LoRA';
  if (m.magnitude) {
    throw new Error(
      `${where}: module "${m.name}" is DoRA (has a magnitude vector); llama.cpp has no DoRA — convert the adapter to plain LoRA first, or write --format peft`,
    );
  }
  const tied = hasTiedEmbeddings(arch, opts.config);
  if (m.name === LM_HEAD && tied) {
    throw new Error(
      `${where}: module "lm_head" cannot be written: the base model ties lm_head to the embeddings (tie_word_embeddings), so its llama.cpp GGUF has no "output" tensor — leave lm_head out of the adapter or write --format peft`,
    );
  }
  const base = hfModuleToGguf(arch, m.name);
  if (base === undefined) {
    throw new Error(
      `${where}: module "${m.name}" has no llama.cpp tensor for architecture "${arch}"; leave it out of the adapter or write --format peft`,
    );
  }
  // EDoRA-style latent without magnitude is still a plain LoRA: ΔW = s·(B·R)·A.
  const B: Matrix = m.latent ? foldLatent(m.B, m.latent) : m.B;
  const A = m.A;
  const r = A.rows;
  if (B.cols !== r) throw new Error(`${where}: module "${m.name}": B is ${B.rows}×${B.cols} but A has ${r} rows (rank mismatch)`);
  if (r === 0) throw new Error(`${where}: module "${m.name}" has rank 0; drop it instead of writing an empty LoRA`);
  const s = loraScaling(m.alpha, r, opts.useRslora ?? false);
  const weightName = `${base}.weight`;

  if (base === TOKEN_EMBD) {
    if (tied) {
      // llama.cpp uses the token_embd tensor as the output projection of a tied model and looks up
      // LoRA by tensor name, so it would also apply this (transposed-layout) pair there.
      throw new Error(
        `${where}: module "${m.name}" cannot be written: the base model ties the embeddings to lm_head, and llama.cpp would apply a token_embd LoRA to its output projection too — leave the embeddings out of the adapter or write --format peft`,
      );
    }
    // ΔE (vocab × hidden) = s·B·A; llama.cpp's lookup wants lora_a = B (vocab × r), lora_b = s·Aᵀ (hidden × r).
    const At = transpose(A);
    return {
      weightName,
      loraA: { shape: [B.rows, r], data: B.data },
      loraB: { shape: [At.rows, r], data: scaled(At.data, s) },
    };
  }

  let bData = scaled(B.data, s);
  const nHead = qkPermuteHeadCount(arch, opts.config, m.name);
  if (nHead !== undefined) bData = permuteQkRows(bData, B.rows, r, nHead);
  return {
    weightName,
    loraA: { shape: [r, A.cols], data: A.data },
    loraB: { shape: [B.rows, r], data: bData },
  };
}

class GgufLoraWriter implements ModuleSink {
  private modules = 0;

  constructor(
    private readonly path: string,
    private readonly sink: GgufSink,
    private readonly arch: GgufArch,
    private readonly opts: GgufLoraWriterOptions,
  ) {}

  async addModule(m: LoraModule): Promise<void> {
    const pair = ggufLoraTensors(m, { config: this.opts.config, arch: this.arch, useRslora: this.opts.useRslora, where: this.path });
    await this.sink.add(`${pair.weightName}.lora_a`, pair.loraA.shape, pair.loraA.data);
    await this.sink.add(`${pair.weightName}.lora_b`, pair.loraB.shape, pair.loraB.data);
    this.modules++;
  }

  async addFull(tensorName: string): Promise<void> {
    throw new Error(
      `${this.path}: "${tensorName}" is a full tensor (modules_to_save); a llama.cpp GGUF LoRA can only hold low-rank pairs — write --format peft to keep it`,
    );
  }

  async finish(): Promise<void> {
    if (this.modules === 0) {
      await this.sink.abort();
      throw new Error(`${this.path}: no LoRA modules were added; refusing to write an empty GGUF adapter`);
    }
    await this.sink.finish();
  }

  abort(): Promise<void> {
    return this.sink.abort();
  }
}

/**
 * Streams LoRA modules into a llama.cpp GGUF adapter at `path` (atomic: the file appears on
 * `finish()`). Each module's scaling is baked into lora_b and `adapter.lora.alpha` is 0, so the
 * adapter applies exactly ΔW = scaling·B·A per module at llama.cpp scale 1.
 */
export async function createGgufLoraWriter(path: string, opts: GgufLoraWriterOptions): Promise<ModuleSink> {
  const arch = ggufArchFromConfig(opts.config);
  const sink = await createGgufSink(path, {
    dtype: opts.dtype ?? 'F32',
    kv: [
      ['general.architecture', kvString(arch)],
      ['general.type', kvString('adapter')],
      ['adapter.type', kvString('lora')],
      ['adapter.lora.alpha', kvF32(GGUF_LORA_BAKED_ALPHA)],
    ],
  });
  return new GgufLoraWriter(path, sink, arch, opts);
}
