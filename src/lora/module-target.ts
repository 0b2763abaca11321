/**
 * Where an adapter module lands in a base checkpoint: the tensor name, whether it is stored
 * transposed (GPT-2 style Conv1D with fan_in_fan_out), and whether it is a tied embedding; for a
 * targeted parameter (3-D MoE expert stack), the parameter's tensor and its expert layout.
 * Every mismatch is found here, before anything is written.
 */
import type { Checkpoint } from '../io/checkpoint.js';
import { expertLayout } from '../arch/experts.js';
import { moduleSuffix, type ExpertLayout, type LoraExpertsModule, type LoraModule, type LoraModuleInfo, type PeftAdapter } from './adapter.js';
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
 * The base tensor called `name`, allowing for a leading `model.` present on one side only
 * (adapters trained on the bare backbone vs. the *ForCausalLM checkpoint).
 */
function findTensor(base: Checkpoint, name: string): string | undefined {
  const candidates = [name, name.startsWith('model.') ? name.slice('model.'.length) : `model.${name}`];
  return candidates.find((c) => base.has(c));
}

/** The base tensor for a module path: `<module>.weight`. */
function findWeight(base: Checkpoint, module: string): string | undefined {
  return findTensor(base, `${module}.weight`);
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

export interface ExpertTarget {
  /** the targeted parameter's base tensor, e.g. `model.layers.0.mlp.experts.gate_up_proj` (no `.weight`) */
  tensor: string;
  /** [E, out, in] or [E, in, out] */
  layout: ExpertLayout;
}

/**
 * The base tensor of a targeted parameter and how it stores its experts. The shape decides the
 * layout; only when every expert is square does the base's config.json (model_type) decide, as
 * extract does when it writes such adapters.
 */
export function resolveExpertTarget(base: Checkpoint, adapter: PeftAdapter, m: LoraModuleInfo): ExpertTarget {
  const { parameter, count } = m.experts!;
  const tensor = findTensor(base, parameter);
  if (!tensor) {
    throw new Error(
      `${adapter.dir}: module "${m.name}" holds the LoRA of parameter "${parameter}" (${count} experts), but the base ${base.path} has no tensor "${parameter}": the adapter was made for another model`,
    );
  }
  const shape = base.info(tensor).shape;
  const preferred = base.config && shape.length === 3 ? expertLayout(base.config, moduleSuffix(parameter), shape) : undefined;
  try {
    return { tensor, layout: adapter.expertLayout(m.name, shape, preferred) };
  } catch (err) {
    throw new Error(`${(err as Error).message} (base tensor "${tensor}" in ${base.path})`);
  }
}

/**
 * Each expert's slice of a 3-D parameter's data as a matrix view (no copy), with the expert's LoRA
 * in that slice's orientation. An [E, in, out] slice holds ΔW_eᵀ = s·A_eᵀ·B_eᵀ, so there the
 * factors are swapped and transposed (r × (in + out) values) instead of the weight.
 */
export function expertSlices(data: Float32Array, mod: LoraExpertsModule, layout: ExpertLayout): Array<{ W: Matrix; lora: LoraModule }> {
  let offset = 0;
  return mod.experts.map((lora) => {
    const out = lora.B.rows;
    const inF = lora.A.cols;
    const slice = data.subarray(offset, offset + out * inF);
    offset += out * inF;
    if (layout === 'out-in') return { W: matrix(out, inF, slice), lora };
    return { W: matrix(inF, out, slice), lora: { ...lora, A: transpose(lora.B), B: transpose(lora.A) } };
  });
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
