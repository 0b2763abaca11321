/**
 * Hugging Face safetensors checkpoint → llama.cpp GGUF model, written the way llama.cpp's
 * convert_hf_to_gguf.py writes the families with `toGguf` in src/arch/families.ts (llama, qwen2,
 * qwen3, qwen3moe, gemma2): the same tensor names, the Q/K row permutation for `llama`, stacked
 * MoE experts (./experts.ts), Gemma's 1 + w norms, 1-D tensors, norms and routers kept in F32,
 * the same model KVs, and
 * tokenizer metadata either copied from a GGUF (`vocabFrom`) or built from the model folder.
 *
 * Every tensor's shape is known from the safetensors headers, so the GGUF header is written first
 * and each tensor streams straight into place: memory holds about two tensors at a time.
 */
import { basename, join } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { createGgufSink, kvString, kvU32, type GgufKv, type GgufTensorPlan } from '../io/gguf.js';
import type { FloatDType } from '../io/types.js';
import { roundTo } from '../tensor/dtype.js';
import { ggufArchFromConfig, hfToGgufTensorName, permuteQkRows, qkPermuteHeadCount, type GgufArch } from '../lora/gguf-names.js';
import { runCommand } from '../pipeline/run.js';
import { checkHparamsAgainstTensors } from './check-hparams.js';
import { planExpertStacks } from './experts.js';
import { GGML_QUANT_VERSION, ggufHparamKvs, llama3RopeFactors } from './gguf-hparams.js';
import { ggufFacts, textFields } from '../arch/index.js';
import { tokenizerKvsFromFolder } from './tokenizer-folder.js';
import { tokenizerKvsFromGguf, type TokenizerKvs } from './tokenizer-gguf.js';
import { slidingWindowNote } from './sliding-window.js';
import type { OnProgress } from '../progress.js';
import type { HubOptions } from '../io/hub/index.js';
import { localInput } from '../io/local-inputs.js';

export interface ToGgufOptions {
  /** the checkpoint: a folder, or a .safetensors file with config.json beside it */
  model: string;
  /** the GGUF file to write */
  out: string;
  /** Storage dtype of 2-D weights; 1-D tensors and norms are always F32. Default F16 (the converter's default). */
  dtype?: FloatDType;
  /** Copy all `tokenizer.*` KVs from this GGUF instead of reading the model folder's tokenizer files. */
  vocabFrom?: string;
  /** general.name; default the model folder's name (as the converter does). */
  name?: string;
  /** how Hub ids among the inputs are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
  /** called after each tensor is written, with its GGUF name */
  onProgress?: OnProgress;
}

export interface ToGgufResult {
  path: string;
  arch: GgufArch;
  dtype: FloatDType;
  tensors: number;
  /** Tokens in the written vocabulary. */
  vocabSize: number;
  /** Where the tokenizer metadata came from. */
  tokenizer: string;
  /** What the GGUF model will do differently from the checkpoint in transformers (e.g. an ignored sliding window). */
  notes: string[];
}

/** Buffers HF checkpoints carry that llama.cpp recomputes (the converter skips them too). */
const SKIPPED_SUFFIXES = ['.attention.masked_bias', '.attention.bias', '.rotary_emb.inv_freq'];

interface PlannedTensor {
  /** the GGUF name (progress events name it) */
  name: string;
  hfName: string | undefined;
  plan: GgufTensorPlan;
  /** Produces the tensor's f32 data in GGUF layout. */
  load: () => Promise<Float32Array>;
}

/** The converter stores 1-D tensors, every `*_norm.weight` and MoE routers in F32 whatever the output type. */
function storageDtype(ggufName: string, shape: number[], dtype: FloatDType): FloatDType {
  return shape.length <= 1 || ggufName.endsWith('_norm.weight') || ggufName.endsWith('.ffn_gate_inp.weight') ? 'F32' : dtype;
}

function planTensors(ckpt: Checkpoint, arch: GgufArch, config: Record<string, unknown>, dtype: FloatDType): PlannedTensor[] {
  const planned: PlannedTensor[] = [];
  const ropeFactors = llama3RopeFactors(ckpt.path, textFields(config));
  if (ropeFactors) {
    planned.push({ name: 'rope_freqs.weight', hfName: undefined, plan: { name: 'rope_freqs.weight', shape: [ropeFactors.length], dtype: 'F32' }, load: async () => ropeFactors });
  }
  const expertStacks = planExpertStacks(ckpt, arch, config);
  const facts = ggufFacts(arch);
  for (const info of ckpt.list()) {
    if (SKIPPED_SUFFIXES.some((s) => info.name.endsWith(s)) || facts.skippedTensors?.includes(info.name)) continue;
    const stacks = expertStacks.get(info.name);
    if (stacks) {
      for (const t of stacks) planned.push({ name: t.name, hfName: info.name, plan: { name: t.name, shape: t.shape, dtype: storageDtype(t.name, t.shape, dtype) }, load: t.load });
      continue;
    }
    const name = hfToGgufTensorName(arch, info.name);
    if (name === undefined) {
      throw new Error(`${ckpt.path}: tensor "${info.name}" has no llama.cpp name for architecture "${arch}"; to-gguf converts plain ${arch} checkpoints only`);
    }
    const shape = [...info.shape];
    const modulePath = info.name.replace(/\.(weight|bias)$/, '');
    const nHead = qkPermuteHeadCount(arch, config, modulePath);
    const plusOne = facts.normWeightsPlusOne === true && info.name.endsWith('norm.weight');
    const load = async () => {
      const data = await ckpt.read(info.name);
      // the converter adds 1 in the stored dtype when that is F16 (BF16 is widened to F32 first)
      if (plusOne) return info.dtype === 'F16' ? roundTo(data.map((v) => v + 1), 'F16') : data.map((v) => v + 1);
      return nHead === undefined ? data : permuteQkRows(data, shape[0]!, shape.length > 1 ? shape[1]! : 1, nHead);
    };
    planned.push({ name, hfName: info.name, plan: { name, shape, dtype: storageDtype(name, shape, dtype) }, load });
  }
  return planned;
}

/** Rows of the token embedding: the vocabulary size llama.cpp will check the tokenizer against. */
function embeddingRows(planned: PlannedTensor[], where: string): number {
  const embd = planned.find((t) => t.plan.name === 'token_embd.weight');
  if (!embd) throw new Error(`${where}: no model.embed_tokens.weight tensor; is this a complete causal-LM checkpoint?`);
  return embd.plan.shape[0]!;
}

/**
 * Converts the checkpoint at `params.model` to a GGUF model at `params.out`, atomically (the file
 * appears only when complete).
 */
export async function convertToGguf(given: ToGgufOptions): Promise<ToGgufResult> {
  const params = { ...given, model: await localInput(given.model, 'model', given) };
  const { model: modelPath, out: outPath } = params;
  const dtype = params.dtype ?? 'F16';
  return runCommand({
    inputs: params.vocabFrom === undefined ? [modelPath] : [modelPath, params.vocabFrom],
    open: async (keep) => ({ ckpt: keep(await openCheckpoint(modelPath)) }),
    plan: ({ ckpt }) => planConversion(ckpt, dtype, params),
    output: { file: outPath, sink: (path, { plan }) => createGgufSink(path, { kv: plan.kv, plan: plan.items.map((t) => t.plan) }) },
    load: (t) => t.load(),
    each: (t, data, { sink }) => sink.add(t.plan.name, t.plan.shape, data),
    finish: async (_rows, { plan, sink }) => {
      await sink.finish();
      return { path: outPath, arch: plan.arch, dtype, tensors: plan.items.length, vocabSize: plan.tokenizer.tokenCount, tokenizer: plan.tokenizer.source, notes: plan.notes };
    },
    onProgress: params.onProgress,
  });
}

/** The tensors in GGUF order, with the model KVs: hyper-parameters checked against the tensors, tokenizer against the embeddings. */
async function planConversion(ckpt: Checkpoint, dtype: FloatDType, opts: Pick<ToGgufOptions, 'vocabFrom' | 'name'>) {
  const config = ckpt.config;
  if (!config) throw new Error(`${ckpt.path}: no config.json next to the weights; to-gguf needs it for the architecture and hyper-parameters`);
  const arch = ggufArchFromConfig(config);
  const hparamKvs = ggufHparamKvs(ckpt.path, arch, config, dtype);
  const planned = planTensors(ckpt, arch, config, dtype);
  checkHparamsAgainstTensors(join(ckpt.dir, 'config.json'), arch, hparamKvs, planned.map((t) => t.plan), textFields(config)['vocab_size']);
  const vocabRows = embeddingRows(planned, ckpt.path);

  const tokenizer: TokenizerKvs = opts.vocabFrom ? await tokenizerKvsFromGguf(opts.vocabFrom) : await tokenizerKvsFromFolder(ckpt.dir, arch, textFields(config));
  if (tokenizer.tokenCount !== vocabRows) {
    throw new Error(
      `${tokenizer.source}: the tokenizer has ${tokenizer.tokenCount} tokens but ${ckpt.path} has ${vocabRows} embedding rows; llama.cpp needs them equal — use a matching vocabulary`,
    );
  }

  const kv: Array<[string, GgufKv]> = [
    ['general.architecture', kvString(arch)],
    ['general.type', kvString('model')],
    ['general.name', kvString(opts.name ?? basename(ckpt.dir))],
    ...hparamKvs,
    ['general.quantization_version', kvU32(GGML_QUANT_VERSION)],
    ...tokenizer.kvs,
  ];
  const notes = [slidingWindowNote(arch, config)].filter((n): n is string => n !== undefined);
  return { items: planned, arch, kv, tokenizer, notes };
}
