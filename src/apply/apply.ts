/**
 * `apply`: PEFT's merge_and_unload, out of core. The base checkpoint is streamed tensor by tensor
 * into a new model folder; every tensor an adapter touches is changed on the way through (LoRA,
 * rsLoRA, LoRA-XS, DoRA, EDoRA modules, embedding LoRA, modules_to_save tensors and saved biases).
 * LoRA on 3-D MoE expert stacks (PEFT target_parameters: one LoRA per expert) is merged into the
 * parameter's tensor, in whichever layout the base stores it ([E, out, in] or [E, in, out]).
 *
 * Several adapters are applied one after the other, in the order given, each to the result of the
 * previous ones — as PEFT does when it merges several adapters into one layer. For plain LoRA the
 * order does not matter (the deltas add up); for DoRA it does, since each adapter's norm is taken
 * of the weight it finds. An adapter's weight w scales what it does to each tensor:
 * W ← W + w·(W' − W) (see formula.ts).
 */
import { resolve } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { createSafetensorsSink } from '../io/safetensors.js';
import type { FloatDType } from '../io/types.js';
import { getBackend } from '../linalg/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import type { AdapterSpec } from '../lora/adapter-spec.js';
import { AdaptedModel, type AdaptedTensor, type AppliedUpdate } from '../lora/adapted-model.js';
import { runCommand } from '../pipeline/run.js';
import { isFloatDType } from '../tensor/dtype.js';
import { writeModelSideFiles } from '../io/model-folder.js';
import type { OnProgress } from '../progress.js';
import type { HubOptions } from '../io/hub/index.js';
import { localAdapters, localInput } from '../io/local-inputs.js';

export type { AppliedUpdate } from '../lora/adapted-model.js';

export interface ApplyOptions {
  /** model folder or .safetensors file */
  base: string;
  /** applied in this order */
  adapters: AdapterSpec[];
  /** output model folder */
  out: string;
  /** output dtype for every tensor; default: each tensor keeps the base's dtype */
  dtype?: FloatDType;
  /** shard size in bytes (default 5 GB, as save_pretrained) */
  maxShardBytes?: number;
  /** replace a non-empty --out */
  overwrite?: boolean;
  backend?: LinalgBackend;
  /** how Hub ids among the inputs are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
  /** called after each output tensor is written */
  onProgress?: OnProgress;
}

export interface ApplyReport {
  base: string;
  out: string;
  adapters: Array<{ dir: string; weight: number; variant: string; modules: number; fullTensors: number; reconstrConfig?: string }>;
  /** tensors written */
  tensors: number;
  /** of them, changed by an adapter */
  changedTensors: number;
  /** tensors an adapter brought that the base did not have (e.g. a new head in modules_to_save) */
  addedTensors: string[];
  updates: AppliedUpdate[];
  /** files written under out, weights first */
  files: string[];
  notes: string[];
  seconds: number;
}

const DEFAULT_SHARD_BYTES = 5_000_000_000;

interface OutputTensor extends AdaptedTensor {
  /** the dtype written */
  out: FloatDType;
}

function outputTensors(base: Checkpoint, model: AdaptedModel, requested: FloatDType | undefined): OutputTensor[] {
  return model.tensors.map((t) => {
    if (requested) return { ...t, out: requested };
    if (isFloatDType(t.dtype)) return { ...t, out: t.dtype };
    // a tensor an adapter brings in another dtype is written as f32
    if (!('base' in t.from)) return { ...t, out: 'F32' };
    throw new Error(`${base.path}: tensor "${t.name}" is ${t.dtype}; apply reads and writes F32/F16/BF16 checkpoints only (dequantize the base first)`);
  });
}

/** Merges the adapters into the base and writes a full model folder. */
export async function applyAdapters(params: ApplyOptions): Promise<ApplyReport> {
  const opts = { ...params, base: await localInput(params.base, 'model', params), adapters: await localAdapters(params.adapters, params) };
  const started = Date.now();
  if (opts.adapters.length === 0) throw new Error('apply: give at least one adapter');
  return runCommand({
    inputs: [opts.base, ...opts.adapters.map((a) => a.dir)],
    open: async (keep) => {
      const backend = opts.backend ?? (await getBackend());
      const base = keep(await openCheckpoint(opts.base));
      return { base, model: await AdaptedModel.open(base, opts.adapters, backend, keep) };
    },
    plan: ({ base, model }) => ({ items: outputTensors(base, model, opts.dtype) }),
    output: {
      dir: opts.out,
      overwrite: opts.overwrite,
      sink: (tmpPath, { plan }) =>
        createSafetensorsSink(tmpPath, {
          baseName: 'model',
          maxShardBytes: opts.maxShardBytes ?? DEFAULT_SHARD_BYTES,
          plan: plan.items.map((t) => ({ name: t.name, shape: t.shape, dtype: t.out })),
        }),
    },
    load: (t, { res }) => res.model.readStart(t),
    each: async (t, data, { res, sink }) => {
      const { data: adapted, updates } = await res.model.adapt(t, data);
      await sink.add(t.name, t.shape, adapted, t.out);
      return updates;
    },
    finish: async (rows, { res, plan, sink, tmpPath }) => {
      const { adapters, variants, weights } = res.model;
      await sink.finish();
      const copied = await writeModelSideFiles(tmpPath, { source: opts.base, dtype: opts.dtype });
      const updates = rows.flat();
      const notes = variants.flatMap((v) => v.notes);
      if (updates.some((u) => u.note)) notes.push(...new Set(updates.filter((u) => u.note).map((u) => u.note!)));
      const changed = new Set(updates.map((u) => u.tensor));
      return {
        base: resolve(opts.base),
        out: resolve(opts.out),
        adapters: adapters.map((a, i) => ({
          dir: a.dir,
          weight: weights[i],
          variant: variants[i].summary,
          modules: a.modules.length,
          fullTensors: a.fullTensors.length,
          ...(variants[i].reconstrConfig ? { reconstrConfig: variants[i].reconstrConfig } : {}),
        })),
        tensors: plan.items.length,
        changedTensors: changed.size,
        addedTensors: plan.items.filter((t) => !('base' in t.from)).map((t) => t.name),
        updates,
        files: [...sink.writtenFiles(), ...copied],
        notes,
        seconds: (Date.now() - started) / 1000,
      };
    },
    onProgress: opts.onProgress,
  });
}
