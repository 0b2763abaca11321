/**
 * The inference engine: a model folder (plus PEFT adapters applied on the fly) run layer by layer.
 *
 * `forward` streams: all sequences of a batch go through layer l before layer l + 1 is read, and
 * a layer's tensors are dropped once it is done, so memory is one layer plus the activations,
 * whatever the model's depth. `resident()` keeps every tensor read (generation, where the same
 * weights serve every new token). bf16/f16 weights are widened to f32 one tensor at a time, with
 * NaN/Inf refused by the reader, naming file and tensor. The two vocabulary-sized tables are read
 * in parts when they come unchanged from the checkpoint: the embedding rows of a batch's tokens,
 * lm_head in blocks of rows (head.ts); a resident engine holds them whole.
 */
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { modelConfig } from '../arch/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { AdaptedModel } from '../lora/adapted-model.js';
import type { AdapterSpec } from '../lora/adapter-spec.js';
import { InputError } from '../errors.js';
import { matrix, type Matrix } from '../tensor/matrix.js';
import { HEAD_BLOCK_ROWS, headProduct, type Head } from './head.js';
import { RawTensorReader } from '../io/raw-read.js';
import { expertDims, expertWeight, readExpert } from './expert-slice.js';
import { rmsNorm, softcap } from './kernels.js';
import { layerForward, layerScratch, type Batch, type LayerWeights } from './layer.js';
import { gatherRows } from './row-read.js';
import { modelSpec, type ModelSpec } from './spec.js';
import { join } from 'node:path';

const EMBED = 'model.embed_tokens.weight';

export class Engine {
  private cache: Map<string, Float32Array> | undefined;
  /** reads parts of tensors: single experts of 3-D expert stacks, embedding rows, lm_head blocks */
  private raw: RawTensorReader | undefined;
  /** vocabulary rows per block of a streamed lm_head (tests force small blocks) */
  headBlockRows = HEAD_BLOCK_ROWS;

  private constructor(
    readonly path: string,
    readonly spec: ModelSpec,
    readonly model: AdaptedModel,
    readonly backend: LinalgBackend,
    private overrides?: ReadonlyMap<string, Float32Array>,
  ) {}

  /**
   * Opens a model folder with its adapters; `keep` receives every opened file so the caller's
   * cleanup closes them, whatever fails later. `overrides` replace whole tensors (same shapes),
   * after adapters: a candidate model that exists only in memory (transplant's stages).
   */
  static async open(
    path: string,
    adapters: readonly AdapterSpec[],
    backend: LinalgBackend,
    keep: <C extends { close(): Promise<void> }>(resource: C) => C = (r) => r,
    overrides?: ReadonlyMap<string, Float32Array>,
  ): Promise<Engine> {
    const base: Checkpoint = keep(await openCheckpoint(path));
    if (!base.config) throw new InputError(`${path}: no config.json beside the weights; eval needs the model's config.json`, { file: path });
    const spec = modelSpec(modelConfig(base.config), join(base.dir, 'config.json'));
    const model = keep(await AdaptedModel.open(base, adapters, backend, keep));
    for (const [name, data] of overrides ?? []) {
      const t = model.info(name);
      const n = t?.shape.reduce((a, b) => a * b, 1);
      if (n !== data.length) throw new Error(`${path}: an override of "${name}" holds ${data.length} values, the tensor ${n ?? 'does not exist'}`);
    }
    const engine = new Engine(path, spec, model, backend, overrides);
    engine.checkShapes();
    return engine;
  }

  /** Refuses a config.json that disagrees with the tensors before any work. */
  private checkShapes(): void {
    const { spec } = this;
    const expect = (name: string, shape: number[]) => {
      const t = this.model.info(name);
      if (!t) throw new InputError(`${this.model.base.path}: tensor "${name}" is missing; is this a ${spec.family} model?`, { file: this.model.base.path, tensor: name });
      if (t.shape.join() !== shape.join()) {
        throw new InputError(
          `${this.model.base.path}: tensor "${name}" is [${t.shape.join(', ')}] but config.json implies [${shape.join(', ')}]: the config does not belong to these weights`,
          { file: this.model.base.path, tensor: name },
        );
      }
    };
    expect(EMBED, [spec.vocab, spec.hidden]);
    if (!spec.tied) expect('lm_head.weight', [spec.vocab, spec.hidden]);
    for (let l = 0; l < spec.layers; l++) {
      const p = `model.layers.${l}.self_attn.`;
      expect(`${p}q_proj.weight`, [spec.heads * spec.headDim, spec.hidden]);
      expect(`${p}k_proj.weight`, [spec.kvHeads * spec.headDim, spec.hidden]);
      expect(`${p}o_proj.weight`, [spec.hidden, spec.heads * spec.headDim]);
    }
  }

  /** Replaces the in-memory tensor overrides (whole tensors, same shapes as stored). */
  setOverrides(overrides: ReadonlyMap<string, Float32Array> | undefined): void {
    this.overrides = overrides;
  }

  /** Bytes every tensor of the (adapted) model takes as f32: what `resident()` comes to hold at most. */
  f32Bytes(): number {
    return this.model.tensors.reduce((sum, t) => sum + 4 * t.shape.reduce((a, b) => a * b, 1), 0);
  }

  /** Keeps every tensor read from now on in memory (generation). */
  resident(): void {
    this.cache ??= new Map();
  }

  private async read(name: string): Promise<Float32Array> {
    const override = this.overrides?.get(name);
    if (override) return override;
    const hit = this.cache?.get(name);
    if (hit) return hit;
    if (!this.model.has(name)) throw new InputError(`${this.model.base.path}: tensor "${name}" is missing`, { file: this.model.base.path, tensor: name });
    const data = await this.model.read(name);
    this.cache?.set(name, data);
    return data;
  }

  /**
   * Whether `name` may be read in parts straight from the checkpoint: stored there, changed by no
   * adapter or override, and not kept whole by a resident engine.
   */
  private readsParts(name: string): boolean {
    const t = this.model.info(name);
    return this.cache === undefined && !this.overrides?.has(name) && t !== undefined && 'base' in t.from && !this.model.isChanged(name);
  }

  private reader(): RawTensorReader {
    return (this.raw ??= new RawTensorReader());
  }

  private async readMatrix(name: string): Promise<Matrix> {
    const shape = this.model.info(name)!.shape;
    return matrix(shape[0]!, shape.length === 1 ? 1 : shape.slice(1).reduce((a, b) => a * b, 1), await this.read(name));
  }

  /** Layer l's tensors, each read on first use and dropped with the returned object (unless resident). */
  layer(l: number): LayerWeights {
    const prefix = `model.layers.${l}.`;
    const memo = new Map<string, Promise<Float32Array>>();
    const get = (suffix: string) => {
      let p = memo.get(suffix);
      if (!p) memo.set(suffix, (p = this.read(prefix + suffix)));
      return p;
    };
    return {
      has: (suffix) => this.model.has(prefix + suffix),
      vector: get,
      matrix: async (suffix) => {
        const shape = this.model.info(prefix + suffix)?.shape;
        const data = await get(suffix);
        return matrix(shape![0]!, data.length / shape![0]!, data);
      },
      expert: async (suffix, e) => {
        const name = prefix + suffix;
        const t = this.model.info(name);
        if (!t) throw new InputError(`${this.model.base.path}: tensor "${name}" is missing`, { file: this.model.base.path, tensor: name });
        const [rows, cols] = expertDims(this.model.base.path, name, t.shape, e);
        // resident weights, or a stack an adapter changes, come whole (adapters update every expert at once)
        const data = this.readsParts(name) ? readExpert(this.reader(), this.model.base.locate(name), e) : (await get(suffix)).subarray(e * rows * cols, (e + 1) * rows * cols);
        return expertWeight(this.model.base.config, name, t.shape, data);
      },
    };
  }

  /** Hidden states (rows × hidden) of the token ids, scaled as the family scales embeddings. */
  async embed(ids: ArrayLike<number>): Promise<Float32Array> {
    const { hidden: d, vocab } = this.spec;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!(id >= 0 && id < vocab)) throw new InputError(`token id ${id} is outside the vocabulary of ${this.path} (${vocab} rows)`);
    }
    const x = new Float32Array(ids.length * d);
    if (this.readsParts(EMBED)) gatherRows(this.reader(), this.model.base.locate(EMBED), d, ids, x);
    else {
      const table = await this.read(EMBED);
      for (let i = 0; i < ids.length; i++) x.set(table.subarray(ids[i]! * d, (ids[i]! + 1) * d), i * d);
    }
    if (this.spec.facts.embedScale) {
      const s = Math.fround(Math.sqrt(d));
      for (let i = 0; i < x.length; i++) x[i]! *= s;
    }
    return x;
  }

  /** Runs every layer on the batch in place, then the final norm. */
  async forward(b: Batch, onLayer?: (l: number) => void): Promise<void> {
    const scratch = layerScratch(this.spec, b.rows);
    for (let l = 0; l < this.spec.layers; l++) {
      await layerForward(this.backend, this.spec, l, this.layer(l), b, scratch);
      onLayer?.(l);
    }
    const { hidden: d, eps } = this.spec;
    rmsNorm(b.x, b.rows, d, await this.read('model.norm.weight'), eps, this.spec.facts.normPlusOne ?? false, b.x);
  }

  /**
   * The output projection (vocab × hidden) as the model has it now: lm_head, or the embeddings
   * when tied. A table read in parts stays on disk until `logits` streams it; one in memory (an
   * override, adapted, resident) is taken as it is now, so later overrides do not change it.
   */
  async head(): Promise<Head> {
    const name = this.spec.tied || !this.model.has('lm_head.weight') ? EMBED : 'lm_head.weight';
    if (!this.readsParts(name)) return { whole: await this.readMatrix(name) };
    return { stored: this.model.base.locate(name), rows: this.spec.vocab, cols: this.spec.hidden, blockRows: this.headBlockRows };
  }

  /** Logits (rows × vocab) of final hidden states, soft-capped where the family does. */
  async logits(head: Head, h: Float32Array, rows: number): Promise<Float32Array> {
    const out = await headProduct(this.backend, () => this.reader(), head, h, rows);
    if (this.spec.finalSoftcap) softcap(out, this.spec.finalSoftcap);
    return out;
  }

  async close(): Promise<void> {
    this.cache?.clear();
    this.raw?.close();
    await this.model.close();
    await this.model.base.close();
  }
}
