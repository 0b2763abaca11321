/**
 * Copies tokenizer metadata (`tokenizer.*` KVs) from an existing GGUF, typically a vocab-only
 * GGUF such as llama.cpp's models/ggml-vocab-llama-spm.gguf or any converted model of the same
 * family. Types are kept exactly as stored, so llama.cpp reads the copy as it read the original.
 */
import { openGguf, GgufValueType, type GgufKv } from '../io/gguf.js';

export interface TokenizerKvs {
  kvs: Array<[string, GgufKv]>;
  /** Number of tokens (length of tokenizer.ggml.tokens): must equal the embedding's row count. */
  tokenCount: number;
  /** Where they came from, for summaries. */
  source: string;
}

export const TOKENIZER_KV_PREFIX = 'tokenizer.';
export const TOKENS_KEY = 'tokenizer.ggml.tokens';

export async function tokenizerKvsFromGguf(path: string): Promise<TokenizerKvs> {
  const file = await openGguf(path);
  try {
    const kvs = [...file.metadata].filter(([k]) => k.startsWith(TOKENIZER_KV_PREFIX));
    const tokens = file.metadata.get(TOKENS_KEY);
    if (!tokens || tokens.type !== GgufValueType.ARRAY || tokens.elemType !== GgufValueType.STRING) {
      throw new Error(`${path}: has no ${TOKENS_KEY} string array; --vocab-from needs a GGUF with tokenizer metadata (e.g. llama.cpp's models/ggml-vocab-*.gguf)`);
    }
    return { kvs, tokenCount: tokens.value.length, source: path };
  } finally {
    await file.close();
  }
}
