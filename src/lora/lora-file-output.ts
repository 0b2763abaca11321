/**
 * Where commands reading LoRA files (merge-adapters, edit) write: one `.safetensors` file in the
 * kohya or diffusers layout (lora-file-writer.ts), or a PEFT folder (`--out-format peft`).
 *
 * PEFT: only from diffusers-named modules of one component (a PEFT adapter wraps one model: the
 * UNet, the Flux transformer or a text encoder), since only those names are that model's module
 * paths. Each module is saved as `base_model.model.<path>` with the component prefix dropped
 * (`unet.down_blocks.0.resnets.0.conv1` → `down_blocks.0.resnets.0.conv1`), target_modules lists
 * those full paths (as diffusers' get_peft_kwargs derives them), task_type is null, conv modules
 * are PEFT's Conv2d weights (lora_A r×in×kh×kw, lora_B out×r×1×1), and each module's alpha goes to
 * lora_alpha / alpha_pattern.
 */
import type { FloatDType } from '../io/types.js';
import { UsageError } from '../errors.js';
import { PeftAdapterWriter, type LoraModule } from './adapter.js';
import { createLoraFileWriter } from './lora-file-writer.js';
import { loraFileStem, parseLoraKey, type LoraFileFormat } from './lora-file-format.js';
import type { ModuleSink } from './sink.js';

export type LoraFileOutFormat = LoraFileFormat | 'peft';
export const LORA_FILE_OUT_FORMATS: readonly LoraFileOutFormat[] = ['kohya', 'diffusers', 'peft'];

export interface LoraFileOutputOptions {
  format: LoraFileOutFormat;
  /** every module name to come (checked here before anything is written) */
  moduleNames: readonly string[];
  dtype?: FloatDType;
  /** header entries carried to a kohya/diffusers file */
  metadata?: Record<string, string>;
}

/** The component (`unet`, `transformer`, `text_encoder_2`) of every module, when they share one diffusers component. */
function peftComponent(names: readonly string[]): string {
  const kohya = names.find((n) => !parseLoraKey('diffusers', `${n}.alpha`));
  if (kohya) {
    throw new UsageError(`module "${kohya}" cannot be written as a PEFT adapter: kohya's "_"-joined names have no exact module path; write it in the kohya layout`);
  }
  const components = [...new Set(names.map((n) => n.slice(0, n.indexOf('.'))))];
  if (components.length > 1) {
    throw new UsageError(
      `the modules span ${components.join(', ')}: a PEFT adapter wraps one model; write the diffusers or kohya layout, or keep one component's modules`,
    );
  }
  return components[0];
}

/** The output path's kind must fit the format: a `.safetensors` file, or a folder for PEFT. */
export function checkLoraFileOutPath(out: string, format: LoraFileOutFormat): void {
  const file = /\.safetensors$/i.test(out);
  if (format === 'peft' && file) throw new UsageError(`--out ${out}: --out-format peft writes a folder (adapter_config.json + adapter_model.safetensors); give a folder path`);
  if (format !== 'peft' && !file) throw new UsageError(`--out ${out}: a ${format} LoRA is one file: give a path ending in .safetensors`);
}

/** Checks that every module can be named in `format`: a UsageError, before any work, where not. */
export function checkLoraFileOutput(opts: Pick<LoraFileOutputOptions, 'format' | 'moduleNames'>): void {
  if (opts.format === 'peft') {
    peftComponent(opts.moduleNames);
    return;
  }
  const second = opts.moduleNames.some((n) => n.startsWith('text_encoder_2.'));
  for (const n of opts.moduleNames) loraFileStem(opts.format, n, second);
}

/** The sink; `path`: the output file, or the temporary folder of a PEFT output. */
export async function createLoraFileOutput(path: string, opts: LoraFileOutputOptions): Promise<ModuleSink> {
  checkLoraFileOutput(opts);
  if (opts.format !== 'peft') return createLoraFileWriter(path, { format: opts.format, dtype: opts.dtype, metadata: opts.metadata, moduleNames: opts.moduleNames });
  const prefix = peftComponent(opts.moduleNames).length + 1;
  const peft = await PeftAdapterWriter.create(path, { dtype: opts.dtype, diffusionComponent: true });
  return {
    addModule: (m: LoraModule) => peft.addModule({ ...m, name: m.name.slice(prefix) }),
    addFull: (name) => Promise.reject(new Error(`internal error: LoRA files carry no whole tensor ("${name}"); please report it`)),
    finish: () => peft.finish(),
    abort: () => peft.abort(),
  };
}
