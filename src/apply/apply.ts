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
import type { FloatDType, TensorInfo } from '../io/types.js';
import { getBackend } from '../linalg/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { openPeftAdapter, type ExpertLayout, type LoraModuleInfo, type PeftAdapter } from '../lora/adapter.js';
import type { AdapterSpec } from '../lora/adapter-spec.js';
import { runCommand } from '../pipeline/run.js';
import { isFloatDType } from '../tensor/dtype.js';
import { applyUpdateInPlace, weightUpdate, type AdapterMethod } from '../lora/weight-update.js';
import { asOutIn, expertSlices, resolveExpertTarget, resolveModuleTarget, toStored } from '../lora/module-target.js';
import { checkAdapterVariant, type AdapterVariant } from '../lora/variant.js';
import { writeModelSideFiles } from '../io/model-folder.js';
import type { OnProgress } from '../progress.js';

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
  /** called after each output tensor is written */
  onProgress?: OnProgress;
}

export interface AppliedUpdate {
  /** base tensor changed */
  tensor: string;
  adapter: string;
  /** adapter module (LoRA modules; for an expert stack, the PEFT wrapper path) or saved tensor name (modules_to_save) */
  source: string;
  method: AdapterMethod | 'full';
  /** the module's rank; for an expert stack, each expert's */
  rank?: number;
  /** an expert stack (target_parameters): how many experts, and how the base tensor stores them */
  experts?: { count: number; layout: ExpertLayout };
  weight: number;
  note?: string;
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

type Op =
  | { type: 'module'; adapter: number; info: LoraModuleInfo; method: AdapterMethod; transposed: boolean; tied: boolean }
  | { type: 'experts'; adapter: number; info: LoraModuleInfo; layout: ExpertLayout }
  | { type: 'full'; adapter: number; name: string };

interface OutputTensor {
  name: string;
  shape: number[];
  dtype: FloatDType;
  /** where the starting value comes from: the base, or the first adapter that brings a new tensor */
  from: { base: true } | { adapter: number };
}

function outputDtype(base: Checkpoint, t: TensorInfo, requested: FloatDType | undefined): FloatDType {
  if (requested) return requested;
  if (!isFloatDType(t.dtype)) {
    throw new Error(`${base.path}: tensor "${t.name}" is ${t.dtype}; apply reads and writes F32/F16/BF16 checkpoints only (dequantize the base first)`);
  }
  return t.dtype;
}

interface Plan {
  /** the output tensors, in the order written */
  items: OutputTensor[];
  ops: Map<string, Op[]>;
}

function planApply(base: Checkpoint, adapters: PeftAdapter[], methods: Array<Map<string, AdapterMethod>>, dtype: FloatDType | undefined): Plan {
  const ops = new Map<string, Op[]>();
  const push = (tensor: string, op: Op) => {
    const list = ops.get(tensor) ?? [];
    list.push(op);
    ops.set(tensor, list);
  };
  const tensors: OutputTensor[] = base.list().map((t) => ({ name: t.name, shape: t.shape, dtype: outputDtype(base, t, dtype), from: { base: true } }));
  const added = new Map<string, OutputTensor>();

  adapters.forEach((adapter, a) => {
    for (const info of adapter.modules) {
      if (info.experts) {
        const target = resolveExpertTarget(base, adapter, info);
        push(target.tensor, { type: 'experts', adapter: a, info, layout: target.layout });
        continue;
      }
      const target = resolveModuleTarget(base, adapter, info);
      push(target.tensor, { type: 'module', adapter: a, info, method: methods[a].get(info.name)!, transposed: target.transposed, tied: target.tied });
    }
    for (const t of adapter.fullTensors) {
      if (base.has(t.name)) {
        const shape = base.info(t.name).shape;
        if (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i])) {
          throw new Error(
            `${adapter.dir}: saved tensor "${t.name}" is [${t.shape.join(', ')}] but the base has [${shape.join(', ')}] in ${base.path}: the adapter was made for another base (or a resized vocabulary)`,
          );
        }
        push(t.name, { type: 'full', adapter: a, name: t.name });
        continue;
      }
      const prior = added.get(t.name);
      if (prior) {
        if (prior.shape.join() !== t.shape.join()) throw new Error(`${adapter.dir}: saved tensor "${t.name}" is [${t.shape.join(', ')}] but an earlier adapter brought it as [${prior.shape.join(', ')}]`);
        push(t.name, { type: 'full', adapter: a, name: t.name });
        continue;
      }
      const dt = dtype ?? (isFloatDType(t.dtype) ? t.dtype : 'F32');
      const out: OutputTensor = { name: t.name, shape: t.shape, dtype: dt, from: { adapter: a } };
      added.set(t.name, out);
      tensors.push(out);
    }
  });
  return { items: tensors, ops };
}

/** Merges the adapters into the base and writes a full model folder. */
export async function applyAdapters(opts: ApplyOptions): Promise<ApplyReport> {
  const started = Date.now();
  if (opts.adapters.length === 0) throw new Error('apply: give at least one adapter');
  for (const a of opts.adapters) {
    if (a.weight !== undefined && !Number.isFinite(a.weight)) throw new Error(`apply: adapter ${a.dir} has weight ${a.weight}; use a finite number`);
  }
  const weights = opts.adapters.map((a) => a.weight ?? 1);

  return runCommand({
    inputs: [opts.base, ...opts.adapters.map((a) => a.dir)],
    open: async (keep) => {
      const backend = opts.backend ?? (await getBackend());
      const base = keep(await openCheckpoint(opts.base));
      const adapters: PeftAdapter[] = [];
      for (const a of opts.adapters) adapters.push(keep(await openPeftAdapter(a.dir)));
      const variants: AdapterVariant[] = [];
      for (const adapter of adapters) variants.push(await checkAdapterVariant(adapter));
      return { backend, base, adapters, variants };
    },
    plan: ({ base, adapters, variants }) => planApply(base, adapters, variants.map((v) => v.methods), opts.dtype),
    output: {
      dir: opts.out,
      overwrite: opts.overwrite,
      sink: (tmpPath, { plan }) =>
        createSafetensorsSink(tmpPath, {
          baseName: 'model',
          maxShardBytes: opts.maxShardBytes ?? DEFAULT_SHARD_BYTES,
          plan: plan.items.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype })),
        }),
    },
    load: (t, { res }) => ('base' in t.from ? res.base.read(t.name) : res.adapters[t.from.adapter].readFull(t.name)),
    each: async (t, data, { res, plan, sink }) => {
      const { backend, adapters } = res;
      const updates: AppliedUpdate[] = [];
      let current = data;
      for (const op of plan.ops.get(t.name) ?? []) {
        const adapter = adapters[op.adapter];
        const weight = weights[op.adapter];
        if (op.type === 'full') {
          const saved = await adapter.readFull(op.name);
          for (let i = 0; i < current.length; i++) current[i] += weight * (saved[i] - current[i]);
          updates.push({ tensor: t.name, adapter: adapter.dir, source: op.name, method: 'full', weight });
          continue;
        }
        if (op.type === 'experts') {
          // in place, one expert at a time: no second copy of a tensor that can be gigabytes
          const mod = await adapter.loadExperts(op.info.name);
          for (const { W, lora } of expertSlices(current, mod, op.layout)) {
            await applyUpdateInPlace(backend, W, await weightUpdate(backend, lora, mod.scaling, weight));
          }
          const { count, rank } = op.info.experts!;
          updates.push({ tensor: t.name, adapter: adapter.dir, source: op.info.name, method: 'lora', rank, weight, experts: { count, layout: op.layout } });
          continue;
        }
        const mod = await adapter.load(op.info.name);
        const W = asOutIn(current, t.shape, op.transposed);
        await applyUpdateInPlace(backend, W, await weightUpdate(backend, mod, op.info.scaling, weight));
        current = toStored(W, op.transposed);
        const note = op.tied ? `lm_head is tied to ${t.name}: the merge changes both` : undefined;
        updates.push({ tensor: t.name, adapter: adapter.dir, source: op.info.name, method: op.method, rank: op.info.rank, weight, ...(note ? { note } : {}) });
      }
      await sink.add(t.name, t.shape, current, t.dtype);
      return updates;
    },
    finish: async (rows, { res, plan, sink, tmpPath }) => {
      const { adapters, variants } = res;
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
