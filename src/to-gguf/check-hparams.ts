/**
 * config.json against the weights, before anything is written: llama.cpp sizes every layer from
 * the GGUF's KVs, so a config that disagrees with the tensors gives a file that fails to load (or
 * worse, loads with the wrong heads). Each check compares a KV to tensor shapes it already has.
 */
import type { GgufKv, GgufTensorPlan } from '../io/gguf.js';

function kvNumber(kvs: ReadonlyArray<[string, GgufKv]>, key: string): number | undefined {
  const v = kvs.find(([k]) => k === key)?.[1].value;
  return typeof v === 'number' ? v : undefined;
}

/** `first–last` of a sorted list of block indices, or the list when it has holes. */
function describeBlocks(indices: number[]): string {
  if (indices.length === 0) return 'none';
  const contiguous = indices.every((b, i) => b === indices[0] + i);
  return contiguous ? `blk.${indices[0]}–blk.${indices[indices.length - 1]}` : indices.map((b) => `blk.${b}`).join(', ');
}

/**
 * Throws naming config.json and the mismatch: layer count against the blk.N tensors, hidden size
 * and vocabulary against the token embedding, attention heads against layer 0's Q and K rows.
 */
export function checkHparamsAgainstTensors(configPath: string, arch: string, kvs: ReadonlyArray<[string, GgufKv]>, tensors: readonly GgufTensorPlan[], vocabSize: unknown): void {
  const fail = (what: string) => {
    throw new Error(`${configPath}: ${what}; the config does not belong to these weights (fix it, or use the config.json saved with them)`);
  };
  const blocks = [...new Set(tensors.flatMap((t) => /^blk\.(\d+)\./.exec(t.name)?.[1] ?? []).map(Number))].sort((a, b) => a - b);
  const blockCount = kvNumber(kvs, `${arch}.block_count`);
  if (blockCount !== undefined && (blocks.length !== blockCount || blocks.some((b, i) => b !== i))) {
    fail(`num_hidden_layers is ${blockCount}, but the weights have ${blocks.length} layer(s) (${describeBlocks(blocks)})`);
  }
  const embd = tensors.find((t) => t.name === 'token_embd.weight');
  const hidden = kvNumber(kvs, `${arch}.embedding_length`);
  if (embd && hidden !== undefined && embd.shape[1] !== hidden) {
    fail(`hidden_size is ${hidden}, but model.embed_tokens.weight is ${embd.shape.join('×')} (width ${embd.shape[1]})`);
  }
  if (embd && typeof vocabSize === 'number' && embd.shape[0] !== vocabSize) {
    fail(`vocab_size is ${vocabSize}, but model.embed_tokens.weight has ${embd.shape[0]} rows`);
  }
  const heads = kvNumber(kvs, `${arch}.attention.head_count`);
  const kvHeads = kvNumber(kvs, `${arch}.attention.head_count_kv`) ?? heads;
  const q = tensors.find((t) => t.name === 'blk.0.attn_q.weight');
  const k = tensors.find((t) => t.name === 'blk.0.attn_k.weight');
  if (!heads || !q || hidden === undefined) return;
  const headDim = kvNumber(kvs, `${arch}.attention.key_length`) ?? hidden / heads;
  if (q.shape[0] !== heads * headDim) {
    fail(`num_attention_heads ${heads} × head dimension ${headDim} is ${heads * headDim}, but layer 0's q_proj has ${q.shape[0]} rows`);
  }
  if (k && kvHeads && k.shape[0] !== kvHeads * headDim) {
    fail(`num_key_value_heads ${kvHeads} × head dimension ${headDim} is ${kvHeads * headDim}, but layer 0's k_proj has ${k.shape[0]} rows`);
  }
}
