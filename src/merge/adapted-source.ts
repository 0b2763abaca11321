/**
 * A `MODEL+ADAPTER` source of a merge (mergekit's syntax): the model seen through a PEFT adapter
 * (LoRA, rsLoRA, DoRA, EDoRA, expert stacks, modules_to_save), tensor by tensor, as a Checkpoint,
 * so the planner and the main thread read it like any other model. Nothing is written to disk:
 * each tensor is adapted when it is read (lora/adapted-model.ts, the view `apply` writes out).
 */
import type { Checkpoint } from '../io/checkpoint.js';
import type { TensorInfo, TensorLocation } from '../io/types.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { AdaptedModel } from '../lora/adapted-model.js';

export class AdaptedCheckpoint implements Checkpoint {
  private constructor(
    readonly base: Checkpoint,
    readonly model: AdaptedModel,
    /** absolute adapter folder */
    readonly adapter: string,
  ) {}

  /**
   * Opens `adapter` over an open `base`; every module is matched to its base tensor now, so an
   * adapter made for another model fails here, naming the module and both shapes. `keep` receives
   * the adapter once open, so the caller's cleanup closes it whatever fails later.
   */
  static async open(base: Checkpoint, adapter: string, backend: LinalgBackend, keep: <C extends { close(): Promise<void> }>(r: C) => C): Promise<AdaptedCheckpoint> {
    return new AdaptedCheckpoint(base, await AdaptedModel.open(base, [{ dir: adapter }], backend, keep), adapter);
  }

  get path(): string {
    return this.base.path;
  }

  get dir(): string {
    return this.base.dir;
  }

  get config(): Record<string, unknown> | undefined {
    return this.base.config;
  }

  get files(): string[] {
    return this.base.files;
  }

  list(): TensorInfo[] {
    return this.model.tensors;
  }

  has(name: string): boolean {
    return this.model.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.model.info(name);
    if (!t) throw new Error(`${this.base.path}+${this.adapter}: no tensor "${name}"`);
    return t;
  }

  read(name: string): Promise<Float32Array> {
    return this.model.read(name);
  }

  /** Reads the starting value into `out` and applies the adapter there (in place where the layout allows). */
  async readInto(name: string, out: Float32Array): Promise<Float32Array> {
    const t = this.model.info(name);
    if (!t) throw new Error(`${this.base.path}+${this.adapter}: no tensor "${name}"`);
    if ('base' in t.from) await this.base.readInto(name, out);
    else out.set(await this.model.readStart(t));
    const { data } = await this.model.adapt(t, out);
    if (data !== out) out.set(data);
    return out;
  }

  /** Where a file holds the tensor's values as this source has them; null when the adapter changes (or brings) it. */
  fileLocation(name: string): TensorLocation | null {
    const t = this.model.info(name);
    return t && 'base' in t.from && !this.model.isChanged(name) ? this.base.locate(name) : null;
  }

  locate(name: string): TensorLocation {
    const location = this.fileLocation(name);
    // the base's bytes are not this source's values: a reader on another thread must not get them
    if (!location) throw new Error(`${this.base.path}+${this.adapter}: tensor "${name}" is changed by the adapter; no file holds its values`);
    return location;
  }

  /** Closes the adapter; the base belongs to whoever opened it (open() takes it open). */
  async close(): Promise<void> {
    await this.model.close();
  }
}
