/**
 * Where adapters go: a PEFT folder, a llama.cpp GGUF LoRA, or both, written as modules arrive.
 * Every command that produces an adapter (extract, merge-adapters, edit, convert) writes through this.
 */
import { join } from 'node:path';
import type { FloatDType } from '../io/types.js';
import { PeftAdapterWriter, type ExpertStackUpdate, type ExpertTargets, type LoraModule } from './adapter.js';
import { createGgufLoraWriter } from './gguf-lora.js';

export type AdapterFormat = 'peft' | 'gguf' | 'both';
export const ADAPTER_FORMATS: readonly AdapterFormat[] = ['peft', 'gguf', 'both'];
/** File name of the GGUF LoRA inside the output folder. */
export const GGUF_LORA_FILE = 'adapter.gguf';

/** What every adapter format takes: LoRA modules and whole tensors. */
export interface ModuleSink {
  addModule(m: LoraModule): Promise<void>;
  /** A whole tensor saved with the adapter (modules_to_save); GGUF cannot carry these and reports so. */
  addFull(tensorName: string, shape: number[], data: Float32Array): Promise<void>;
  finish(): Promise<void>;
  abort(): Promise<void>;
}

export interface AdapterSink extends ModuleSink {
  /** An MoE expert stack (PEFT target_parameters), declared in AdapterSinkOptions.experts; returns the module path it is saved under. */
  addExpertStack(s: ExpertStackUpdate): Promise<string>;
}

export interface AdapterSinkOptions {
  format: AdapterFormat;
  dtype?: FloatDType;
  /** base_model_name_or_path for PEFT */
  baseModel?: string;
  /** the base model's config.json: GGUF needs its architecture and head counts */
  baseConfig?: Record<string, unknown>;
  useRslora?: boolean;
  useDora?: boolean;
  extraConfig?: Record<string, unknown>;
  /**
   * The expert stacks the run may write (PEFT only), and the sentence that refuses a GGUF output
   * for them, naming them the way the command's user knows them and giving the way out.
   */
  experts?: ExpertTargets & { ggufRefusal: string };
}

export async function createAdapterSink(dir: string, opts: AdapterSinkOptions): Promise<AdapterSink> {
  // llama.cpp's LoRA format has no form for expert stacks yet: refused before anything is written
  if (opts.format !== 'peft' && opts.experts?.parameters.length) throw new Error(opts.experts.ggufRefusal);
  let peft: PeftAdapterWriter | undefined;
  const sinks: ModuleSink[] = [];
  if (opts.format === 'peft' || opts.format === 'both') {
    peft = await PeftAdapterWriter.create(dir, {
      baseModel: opts.baseModel,
      dtype: opts.dtype,
      useRslora: opts.useRslora,
      useDora: opts.useDora,
      extraConfig: opts.extraConfig,
      experts: opts.experts && { parameters: opts.experts.parameters, source: opts.experts.source },
    });
    sinks.push(peft);
  }
  if (opts.format === 'gguf' || opts.format === 'both') {
    if (!opts.baseConfig) throw new Error('GGUF output needs the base model config.json (architecture and head counts)');
    sinks.push(await createGgufLoraWriter(join(dir, GGUF_LORA_FILE), { config: opts.baseConfig, dtype: opts.dtype, useRslora: opts.useRslora }));
  }
  return {
    async addModule(m) {
      for (const s of sinks) await s.addModule(m);
    },
    async addExpertStack(s) {
      if (!peft || sinks.length > 1) throw new Error(`internal error: expert stack "${s.parameter}" reached a GGUF adapter; please report it`);
      return peft.addExpertStack(s);
    },
    async addFull(name, shape, data) {
      for (const s of sinks) await s.addFull(name, shape, data);
    },
    async finish() {
      for (const s of sinks) await s.finish();
    },
    async abort() {
      for (const s of sinks) await s.abort();
    },
  };
}
