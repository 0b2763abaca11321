/**
 * Writes LoRA modules as ONE kohya or diffusers `.safetensors` file (layouts: lora-file-format.ts).
 *
 * kohya: `<stem>.lora_down.weight`, `<stem>.lora_up.weight` (4-D for a conv: r×in×kh×kw and
 * out×r×1×1, as kohya stores them) and `<stem>.alpha`, a 0-d tensor in the file's dtype (kohya's
 * save_weights casts its alpha buffer with everything else). The header gets kohya's minimum
 * network metadata (as its svd_merge_lora does): ss_network_module "networks.lora",
 * ss_network_dim / ss_network_alpha (the most common rank / alpha of the linear and 1×1 modules,
 * formatted as Python's str() of kohya's int / float arguments) and, when there are k×k conv
 * modules, ss_network_args {"conv_dim", "conv_alpha"} (strings, as kohya's --network_args give).
 * kohya's sshs_* hashes are not written (they are of a file this is not).
 *
 * diffusers: `<stem>.lora_A.weight` / `.lora_B.weight` and no alpha: diffusers then loads
 * lora_alpha = r, so a module whose alpha ≠ r has its scale alpha/r folded into lora_B.
 *
 * Tensors are kept in memory until finish(): a LoRA file is small beside a model, and its header,
 * which comes first, depends on every module.
 */
import type { FloatDType } from '../io/types.js';
import { writeSafetensorsFile } from '../io/safetensors.js';
import { UsageError } from '../errors.js';
import { DIFFUSERS_METADATA_KEY } from './lora-file.js';
import { matrix } from '../tensor/matrix.js';
import type { LoraModule } from './adapter.js';
import type { ModuleSink } from './sink.js';
import { loraFileStem, type LoraFileFormat } from './lora-file-format.js';

export interface LoraFileWriterOptions {
  format: LoraFileFormat;
  dtype?: FloatDType;
  /** header entries carried over (e.g. an input's ss_base_model_version); computed ones win */
  metadata?: Record<string, string>;
  /** every module name to come: decides `lora_te` vs `lora_te1` when diffusers names become kohya's */
  moduleNames?: readonly string[];
}

interface Written {
  stem: string;
  rank: number;
  alpha: number;
  /** a k×k conv (kohya's conv_dim / conv_alpha), not a linear or 1×1 module */
  convKxK: boolean;
}

/** Python's str() of a float: kohya writes ss_network_alpha from a float argument ("8.0"). */
function pyFloat(x: number): string {
  return Number.isInteger(x) ? `${x}.0` : String(x);
}

/** The most common value (ties: the first seen). */
function mostCommon<T>(xs: readonly T[]): T {
  const counts = new Map<T, number>();
  for (const x of xs) counts.set(x, (counts.get(x) ?? 0) + 1);
  let best = xs[0];
  for (const [x, n] of counts) if (n > counts.get(best)!) best = x;
  return best;
}

export class LoraFileWriter implements ModuleSink {
  private readonly tensors: Array<{ name: string; shape: number[]; data: Float32Array; dtype: FloatDType }> = [];
  private readonly written: Written[] = [];
  private readonly secondTextEncoder: boolean;

  constructor(
    private readonly path: string,
    private readonly opts: LoraFileWriterOptions,
  ) {
    this.secondTextEncoder = (opts.moduleNames ?? []).some((n) => n.startsWith('text_encoder_2.'));
  }

  /** The stem a module is written under in this file's layout. */
  stemOf(name: string): string {
    return loraFileStem(this.opts.format, name, this.secondTextEncoder);
  }

  async addModule(m: LoraModule): Promise<void> {
    const stem = this.stemOf(m.name);
    if (this.written.some((w) => w.stem === stem)) throw new Error(`LoRA file writer: module "${stem}" added twice`);
    const r = m.A.rows;
    if (m.B.cols !== r) throw new Error(`LoRA file writer: module "${m.name}" has A ${m.A.rows}×${m.A.cols} and B ${m.B.rows}×${m.B.cols}`);
    const kernel = m.conv?.kernel;
    if (kernel && m.A.cols % (kernel[0] * kernel[1]) !== 0) throw new Error(`LoRA file writer: module "${m.name}" has ${m.A.cols} columns, not in·${kernel.join('·')}`);
    const downShape = kernel ? [r, m.A.cols / (kernel[0] * kernel[1]), ...kernel] : [r, m.A.cols];
    const upShape = kernel ? [m.B.rows, r, 1, 1] : [m.B.rows, r];
    const dtype = this.opts.dtype ?? 'F32';
    if (this.opts.format === 'kohya') {
      this.tensors.push({ name: `${stem}.alpha`, shape: [], data: Float32Array.of(m.alpha), dtype });
      this.tensors.push({ name: `${stem}.lora_down.weight`, shape: downShape, data: m.A.data, dtype });
      this.tensors.push({ name: `${stem}.lora_up.weight`, shape: upShape, data: m.B.data, dtype });
    } else {
      const scale = r === 0 ? 0 : m.alpha / r;
      const B = scale === 1 ? m.B : matrix(m.B.rows, r, m.B.data.map((x) => x * scale));
      this.tensors.push({ name: `${stem}.lora_A.weight`, shape: downShape, data: m.A.data, dtype });
      this.tensors.push({ name: `${stem}.lora_B.weight`, shape: upShape, data: B.data, dtype });
    }
    this.written.push({ stem, rank: r, alpha: m.alpha, convKxK: kernel !== undefined && kernel[0] * kernel[1] > 1 });
  }

  addFull(tensorName: string): Promise<void> {
    return Promise.reject(new UsageError(`"${tensorName}" is a whole tensor (modules_to_save): ${this.opts.format} LoRA files cannot carry it; write a PEFT adapter`));
  }

  get moduleCount(): number {
    return this.written.length;
  }

  async finish(): Promise<void> {
    const tensors = [...this.tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    await writeSafetensorsFile(this.path, tensors, this.header());
    this.tensors.length = 0;
  }

  async abort(): Promise<void> {
    this.tensors.length = 0; // nothing was written: the file appears only in finish()
  }

  private header(): Record<string, string> {
    const meta: Record<string, string> = { ...this.opts.metadata };
    // the scale alpha/r is folded into lora_B here: a carried PEFT config would make diffusers apply it again
    if (this.opts.format === 'diffusers') delete meta[DIFFUSERS_METADATA_KEY];
    // hashes of an input file (kohya's sshs_model_hash, sshs_legacy_hash) are not this file's
    for (const k of Object.keys(meta)) if (k.startsWith('sshs_')) delete meta[k];
    if (this.opts.format !== 'kohya' || this.written.length === 0) return meta;
    const linear = this.written.filter((w) => !w.convKxK);
    const conv = this.written.filter((w) => w.convKxK);
    const main = linear.length ? linear : conv;
    meta.ss_network_module ??= 'networks.lora'; // a caller may know better (Flux: networks.lora_flux)
    meta.ss_network_dim = String(mostCommon(main.map((w) => w.rank)));
    meta.ss_network_alpha = pyFloat(mostCommon(main.map((w) => w.alpha)));
    if (conv.length) {
      meta.ss_network_args = JSON.stringify({ conv_dim: String(mostCommon(conv.map((w) => w.rank))), conv_alpha: pyFloat(mostCommon(conv.map((w) => w.alpha))) });
    } else delete meta.ss_network_args;
    return meta;
  }
}

export function createLoraFileWriter(path: string, opts: LoraFileWriterOptions): LoraFileWriter {
  return new LoraFileWriter(path, opts);
}
