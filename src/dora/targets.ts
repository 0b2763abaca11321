/**
 * Where an adapter module lands in a base checkpoint: the tensor name, whether it is stored
 * transposed (GPT-2 style Conv1D with fan_in_fan_out), and whether it is a tied embedding.
 * Every mismatch is found here, before anything is written.
 */
import type { Checkpoint } from '../io/checkpoint.js';
import type { LoraModuleInfo, PeftAdapter } from '../lora/adapter.js';
import { matrix, transpose, type Matrix } from '../tensor/matrix.js';

export interface ModuleTarget {
  /** base tensor the module changes */
  tensor: string;
  /** the base stores the weight as in × out (fan_in_fan_out): transposed on the way in and out */
  transposed: boolean;
  /** an lm_head module landing on the embedding it is tied to */
  tied: boolean;
}

/** Embedding tensors an untied-looking lm_head may share its weight with (tie_word_embeddings). */
const TIED_EMBEDDINGS = ['model.embed_tokens.weight', 'transformer.wte.weight', 'model.decoder.embed_tokens.weight', 'gpt_neox.embed_in.weight'];

function fmt(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/**
 * The base tensor for a module path: `<module>.weight`, allowing for a leading `model.` present
 * on one side only (adapters trained on the bare backbone vs. the *ForCausalLM checkpoint).
 */
function findWeight(base: Checkpoint, module: string): string | undefined {
  const candidates = [`${module}.weight`, module.startsWith('model.') ? `${module.slice('model.'.length)}.weight` : `model.${module}.weight`];
  return candidates.find((c) => base.has(c));
}

function tiedEmbedding(base: Checkpoint, module: string): string | undefined {
  if (!/(^|\.)lm_head$/.test(module) || base.config?.tie_word_embeddings === false) return undefined;
  return TIED_EMBEDDINGS.find((c) => base.has(c));
}

export function resolveModuleTarget(base: Checkpoint, adapter: PeftAdapter, m: LoraModuleInfo): ModuleTarget {
  let tensor = findWeight(base, m.name);
  let tied = false;
  if (!tensor) {
    tensor = tiedEmbedding(base, m.name);
    tied = tensor !== undefined;
  }
  if (!tensor) {
    throw new Error(
      `${adapter.dir}: module "${m.name}" has no weight "${m.name}.weight" in the base ${base.path}: the adapter was made for another model`,
    );
  }
  const shape = base.info(tensor).shape;
  const want = [m.outFeatures, m.inFeatures];
  const same = (s: readonly number[]) => s.length === 2 && s[0] === want[0] && s[1] === want[1];
  if (same(shape)) return { tensor, transposed: false, tied };
  if (m.kind === 'linear' && adapter.config.fan_in_fan_out === true && shape.length === 2 && shape[0] === want[1] && shape[1] === want[0]) {
    return { tensor, transposed: true, tied };
  }
  throw new Error(
    `${adapter.dir}: module "${m.name}" is ${m.kind === 'embedding' ? 'an embedding' : 'a linear layer'} of shape ${fmt(want)} (out × in) but the base tensor "${tensor}" in ${base.path} is ${fmt(shape)}: the adapter was made for another base model`,
  );
}

/** The base weight as out × in f32, whichever way it is stored. */
export function asOutIn(data: Float32Array, shape: readonly number[], transposed: boolean): Matrix {
  const m = matrix(shape[0], shape[1], data);
  return transposed ? transpose(m) : m;
}

/** Back to the stored layout (a copy only when transposed). */
export function toStored(w: Matrix, transposed: boolean): Float32Array {
  return transposed ? transpose(w).data : w.data;
}
