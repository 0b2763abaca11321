/**
 * A base checkpoint seen through PEFT adapters, tensor by tensor: what `apply` writes, what `eval`
 * runs and what mergekit's `model+lora` sources read, without a merged copy on disk.
 *
 * Reading a tensor returns the base's values with every adapter that touches it applied, in the
 * order the adapters were given (LoRA, rsLoRA, LoRA-XS, DoRA, EDoRA modules, embedding LoRA,
 * 3-D expert stacks, modules_to_save tensors). Adapters are applied one after the other, each to
 * the result of the previous ones, as PEFT merges several adapters into one layer: for plain LoRA
 * the order does not matter, for DoRA it does (each norm is taken of the weight it finds). An
 * adapter's weight w scales what it does: W ← W + w·(W' − W) (see weight-update.ts).
 *
 * Every module is matched to its base tensor when the view is opened, so an adapter made for
 * another model is refused before any work, naming the module and the shapes.
 */
import type { Checkpoint } from '../io/checkpoint.js';
import type { TensorInfo } from '../io/types.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { openPeftAdapter, type ExpertLayout, type LoraModuleInfo, type PeftAdapter } from './adapter.js';
import type { AdapterSpec } from './adapter-spec.js';
import { applyUpdateInPlace, weightUpdate, type AdapterMethod } from './weight-update.js';
import { asOutIn, expertSlices, resolveExpertTarget, resolveModuleTarget, toStored } from './module-target.js';
import { checkAdapterVariant, type AdapterVariant } from './variant.js';

type Op =
  | { type: 'module'; adapter: number; info: LoraModuleInfo; method: AdapterMethod; transposed: boolean; tied: boolean }
  | { type: 'experts'; adapter: number; info: LoraModuleInfo; layout: ExpertLayout }
  | { type: 'full'; adapter: number; name: string };

/** One change an adapter made to one tensor, for reports. */
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

/** A tensor of the adapted model: the base's, or one an adapter brings (e.g. a new head in modules_to_save). */
export interface AdaptedTensor extends TensorInfo {
  /** where its starting value comes from */
  from: { base: true } | { adapter: number };
}

export class AdaptedModel {
  private readonly byName: Map<string, AdaptedTensor>;

  private constructor(
    readonly base: Checkpoint,
    readonly adapters: PeftAdapter[],
    readonly variants: AdapterVariant[],
    /** each adapter's weight w */
    readonly weights: number[],
    /** every tensor of the adapted model: the base's in its order, then the ones adapters add */
    readonly tensors: AdaptedTensor[],
    private readonly ops: Map<string, Op[]>,
    private readonly backend: LinalgBackend,
  ) {
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  /**
   * Opens the adapters over an open base; `keep` receives each adapter as soon as it is open, so a
   * caller's cleanup closes them even when a later one fails.
   */
  static async open(
    base: Checkpoint,
    specs: readonly AdapterSpec[],
    backend: LinalgBackend,
    keep: <C extends { close(): Promise<void> }>(resource: C) => C = (r) => r,
  ): Promise<AdaptedModel> {
    for (const a of specs) {
      if (a.weight !== undefined && !Number.isFinite(a.weight)) throw new Error(`adapter ${a.dir} has weight ${a.weight}; use a finite number`);
    }
    const adapters: PeftAdapter[] = [];
    for (const a of specs) adapters.push(keep(await openPeftAdapter(a.dir)));
    const variants: AdapterVariant[] = [];
    for (const adapter of adapters) variants.push(await checkAdapterVariant(adapter));
    const { tensors, ops } = plan(base, adapters, variants);
    return new AdaptedModel(base, adapters, variants, specs.map((a) => a.weight ?? 1), tensors, ops, backend);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** The tensor's name, dtype and shape as stored (adapters do not change shapes). */
  info(name: string): AdaptedTensor | undefined {
    return this.byName.get(name);
  }

  /** Whether any adapter changes `name`. */
  isChanged(name: string): boolean {
    return (this.ops.get(name)?.length ?? 0) > 0;
  }

  /** The tensor's starting value, before any adapter: `load` of a pipeline that reads ahead. */
  readStart(t: AdaptedTensor): Promise<Float32Array> {
    return 'base' in t.from ? this.base.read(t.name) : this.adapters[t.from.adapter].readFull(t.name);
  }

  /** The tensor as the adapted model has it. */
  async read(name: string): Promise<Float32Array> {
    const t = this.byName.get(name);
    if (!t) throw new Error(`${this.base.path}: no tensor "${name}"`);
    return (await this.adapt(t, await this.readStart(t))).data;
  }

  /**
   * Applies every adapter that touches `t` to `data` (its starting value, updated in place where
   * the layout allows); returns the result and what each adapter did.
   */
  async adapt(t: TensorInfo, data: Float32Array): Promise<{ data: Float32Array; updates: AppliedUpdate[] }> {
    const { backend, adapters, weights } = this;
    const updates: AppliedUpdate[] = [];
    let current = data;
    for (const op of this.ops.get(t.name) ?? []) {
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
    return { data: current, updates };
  }

  async close(): Promise<void> {
    await Promise.all(this.adapters.map((a) => a.close()));
  }
}

function plan(base: Checkpoint, adapters: PeftAdapter[], variants: AdapterVariant[]): { tensors: AdaptedTensor[]; ops: Map<string, Op[]> } {
  const ops = new Map<string, Op[]>();
  const push = (tensor: string, op: Op) => {
    const list = ops.get(tensor) ?? [];
    list.push(op);
    ops.set(tensor, list);
  };
  const tensors: AdaptedTensor[] = base.list().map((t) => ({ ...t, from: { base: true } }));
  const added = new Map<string, AdaptedTensor>();

  adapters.forEach((adapter, a) => {
    for (const info of adapter.modules) {
      if (info.experts) {
        const target = resolveExpertTarget(base, adapter, info);
        push(target.tensor, { type: 'experts', adapter: a, info, layout: target.layout });
        continue;
      }
      const target = resolveModuleTarget(base, adapter, info);
      push(target.tensor, { type: 'module', adapter: a, info, method: variants[a].methods.get(info.name)!, transposed: target.transposed, tied: target.tied });
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
      const out: AdaptedTensor = { ...t, from: { adapter: a } };
      added.set(t.name, out);
      tensors.push(out);
    }
  });
  return { tensors, ops };
}
