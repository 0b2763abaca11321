// PLACEHOLDER — being written by a helper (llama.cpp GGUF LoRA writer). Do not rely on this body.
import type { FloatDType } from '../io/types.js';
import type { AdapterSink } from './sink.js';

export interface GgufLoraWriterOptions {
  config: Record<string, unknown>;
  dtype?: FloatDType;
  useRslora?: boolean;
}

export async function createGgufLoraWriter(path: string, _opts: GgufLoraWriterOptions): Promise<AdapterSink> {
  throw new Error(`GGUF LoRA output is not implemented yet (${path})`);
}
