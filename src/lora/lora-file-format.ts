/**
 * Image-model LoRA single files (SD 1.5, SDXL, Flux): which key layout a `.safetensors` file uses,
 * and the naming rules between layouts. Rules, from kohya's sd-scripts (networks/lora.py,
 * lora_flux.py) and diffusers' loaders (lora_pipeline.py, lora_conversion_utils.py):
 *
 * kohya (also A1111/Forge/ComfyUI): one module per stem `lora_<part>_<module path with "." → "_">`,
 *   part `unet` (the U-Net, or Flux's transformer under its original BFL names:
 *   `lora_unet_double_blocks_0_img_attn_qkv`, `lora_unet_single_blocks_…`), `te` (SD 1.x/2.x's one
 *   text encoder), `te1`/`te2` (SDXL's two CLIPs; Flux: `te1` CLIP-L, `te3` T5). Tensors
 *   `<stem>.lora_down.weight` (r × in, or r × in × kh × kw for a conv), `<stem>.lora_up.weight`
 *   (out × r, or out × r × 1 × 1) and `<stem>.alpha` (a 0-d tensor; when absent, or 0, alpha = r, as
 *   kohya's LoRAModule does). Update: ΔW = (alpha / r) · up · down, the conv one reshaped to
 *   out × in × kh × kw (down flattened to r × (in·kh·kw), row-major, is exactly that product).
 * diffusers: stems `<component>.<module path>`, component `unet`, `transformer` or
 *   `text_encoder[_N]`; PEFT's `<stem>.lora_A.weight` / `.lora_B.weight`, or the older
 *   `<stem>.lora.down.weight` / `.lora.up.weight`, same shapes as kohya's; an optional
 *   `<stem>.alpha`, else the PEFT config diffusers stores in the header (`lora_adapter_metadata`),
 *   else alpha = r (diffusers' default lora_alpha).
 *
 * Names between the layouts: diffusers → kohya is mechanical (component → prefix, "." → "_"):
 * `unet` → `lora_unet`, `text_encoder` → `lora_te` (or `lora_te1` when the file also has
 * `text_encoder_2`), `text_encoder_N` → `lora_teN`. It is exact for the SD 1.x/2.x U-Net and the
 * CLIP text encoders, whose kohya names are made from the same diffusers module paths; it is
 * refused for `transformer` (kohya's Flux names are BFL's, with fused qkv, not diffusers').
 * kohya → diffusers is never mechanical: "_" is both the separator and part of names (`to_q`,
 * `down_blocks`), so it is refused.
 *
 * kohya files as other tools rewrite them are read under kohya's stems, as diffusers' Flux loader
 * maps them (lora_conversion_utils.py, `_convert_kohya_flux_lora_to_diffusers` + `_custom_replace`):
 * ComfyUI's `diffusion_model.<module path>` (what its LoRA save and extract nodes write) is
 * `lora_unet_<path, "." → "_">`, and a `lora_unet`/`lora_te*` stem spelled with dots anywhere
 * (`lora_unet_double_blocks.0.img_attn.qkv`, `lora_unet.foo.bar`) is its "_" spelling. Both are
 * exact: "." → "_" is kohya's own rule, and ComfyUI loads `lora_unet_` + the original module path
 * for every model. ComfyUI's text-encoder keys (`text_encoders.clip_l.…`) are refused: whether
 * CLIP-L is kohya's `lora_te` or `lora_te1` depends on the model, which the file does not say.
 *
 * Anything else is refused by name: LyCORIS (LoHa `hada_*`, LoKr `lokr_*`, `dora_scale`) is not a
 * LoRA and cannot be merged as one.
 */
import { InputError, UsageError } from '../errors.js';

export type LoraFileFormat = 'kohya' | 'diffusers';
export const LORA_FILE_FORMATS: readonly LoraFileFormat[] = ['kohya', 'diffusers'];

export type LoraKeyRole = 'down' | 'up' | 'alpha';

/** kohya's stem, also spelled with dots (`lora_unet_double_blocks.0.…`, `lora_unet.…`): part, path. */
const KOHYA_STEM = /^lora_(unet|te\d*)[._]([\w.]+)$/;
/** The prefix ComfyUI writes in place of `lora_unet_` (its save/extract nodes), dotted path after it. */
const COMFY_UNET_PREFIX = 'diffusion_model.';
const DIFFUSERS_STEM = /^(unet|transformer|text_encoder(_\d+)?)\.\S+$/;

const SUFFIXES: Record<LoraFileFormat, Array<[string, LoraKeyRole]>> = {
  kohya: [
    ['.lora_down.weight', 'down'],
    ['.lora_up.weight', 'up'],
    ['.alpha', 'alpha'],
  ],
  diffusers: [
    ['.lora_A.weight', 'down'],
    ['.lora_B.weight', 'up'],
    ['.lora.down.weight', 'down'],
    ['.lora.up.weight', 'up'],
    ['.alpha', 'alpha'],
  ],
};

/** LyCORIS algorithms' key fragments, to name them when refusing. */
const LYCORIS = /\.(hada_|lokr_|dora_scale|oft_|boft_)/;

/** A key's module stem and role in `format`, or undefined when it is not one of that format's keys. */
export function parseLoraKey(format: LoraFileFormat, key: string): { stem: string; role: LoraKeyRole } | undefined {
  for (const [suffix, role] of SUFFIXES[format]) {
    if (!key.endsWith(suffix)) continue;
    const stem = key.slice(0, -suffix.length);
    if (format === 'diffusers') {
      if (DIFFUSERS_STEM.test(stem)) return { stem, role };
      continue;
    }
    const kohya = kohyaStem(stem);
    if (kohya) return { stem: kohya, role };
  }
  return undefined;
}

/** kohya's own spelling of a kohya stem as other tools write it (see the rules above), or undefined. */
function kohyaStem(stem: string): string | undefined {
  const m = KOHYA_STEM.exec(stem.startsWith(COMFY_UNET_PREFIX) ? `lora_unet_${stem.slice(COMFY_UNET_PREFIX.length)}` : stem);
  return m ? `lora_${m[1]}_${m[2].replaceAll('.', '_')}` : undefined;
}

/** The layout of a LoRA file from its tensor names; an InputError naming the file for anything else. */
export function detectLoraFileFormat(path: string, keys: readonly string[]): LoraFileFormat {
  const lycoris = keys.find((k) => LYCORIS.test(k));
  if (lycoris) {
    throw new InputError(
      `${path}: "${lycoris}" is a LyCORIS tensor (LoHa/LoKr/DoRA/OFT), not LoRA: it cannot be merged as a LoRA; ` +
        'merge it with LyCORIS tools, or bake it into the model first',
      { file: path, tensor: lycoris },
    );
  }
  const comfyTextEncoder = keys.find((k) => k.startsWith('text_encoders.'));
  if (comfyTextEncoder) {
    throw new InputError(
      `${path}: "${comfyTextEncoder}" is a ComfyUI text-encoder tensor, which is not read: whether it is kohya's lora_te, lora_te1 or lora_te2 ` +
        'depends on the model, which the file does not say; its U-Net (diffusion_model.…) tensors alone would be read',
      { file: path, tensor: comfyTextEncoder },
    );
  }
  for (const format of LORA_FILE_FORMATS) {
    if (keys.length > 0 && keys.every((k) => parseLoraKey(format, k))) return format;
  }
  const odd = keys.find((k) => !LORA_FILE_FORMATS.some((f) => parseLoraKey(f, k)));
  const what = odd ? `tensor "${odd}" is neither` : 'its tensors mix';
  throw new InputError(
    `${path}: not a kohya or diffusers LoRA file: ${what} kohya's (lora_unet_…/lora_te…_ with .lora_down/.lora_up/.alpha) ` +
      "nor diffusers' (unet./transformer./text_encoder…. with .lora_A/.lora_B); a PEFT adapter is read from its folder",
    { file: path, tensor: odd },
  );
}

/** The kohya stem of a diffusers module stem (see the rules above); a UsageError where no exact rule exists. */
export function kohyaStemFromDiffusers(stem: string, hasSecondTextEncoder: boolean): string {
  const dot = stem.indexOf('.');
  const component = stem.slice(0, dot);
  const path = stem.slice(dot + 1).replaceAll('.', '_');
  if (component === 'unet') return `lora_unet_${path}`;
  if (component === 'text_encoder') return `${hasSecondTextEncoder ? 'lora_te1' : 'lora_te'}_${path}`;
  const te = /^text_encoder_(\d+)$/.exec(component);
  if (te) return `lora_te${te[1]}_${path}`;
  throw new UsageError(
    `module "${stem}": diffusers' ${component} names have no exact kohya equivalent (kohya names Flux's blocks as BFL does); ` +
      'write it in the diffusers layout',
  );
}

/**
 * Report grouping for both layouts (spectrum's charts, edit's --layers/--modules). The layer is the
 * index after the first `blocks` or `layers` path part, `_`- or `.`-joined: SDXL's
 * `input_blocks_4_1_…` → 4, diffusers' `down_blocks.1.…` → 1, Flux's `double_blocks_7_…` /
 * `single_blocks_7_…` → 7, a text encoder's `encoder_layers_3_…` → 3; none (null) for modules
 * outside a block stack (`mid_block`, `conv_in`, `time_embedding`). The module type is the part of
 * the path after its last index, in kohya's "_" spelling for both layouts, so one --modules list
 * fits both: `…transformer_blocks_0_attn1_to_q` and `….transformer_blocks.0.attn1.to_q` → attn1_to_q,
 * `…_resnets_0_conv1` → conv1, `lora_unet_conv_in` → conv_in.
 */
export function loraFileLayerIndex(stem: string): number | null {
  const m = /(?:blocks|layers)[._](\d+)(?:[._]|$)/.exec(stem);
  return m ? Number(m[1]) : null;
}

export function loraFileModuleType(stem: string): string {
  const path = (/^lora_(?:unet|te\d*)_/.exec(stem) ? stem.replace(/^lora_(?:unet|te\d*)_/, '') : stem.slice(stem.indexOf('.') + 1)).replaceAll('.', '_');
  const parts = path.split('_');
  let last = -1;
  parts.forEach((p, i) => {
    if (/^\d+$/.test(p) && i < parts.length - 1) last = i;
  });
  return parts.slice(last + 1).join('_');
}

/** A module's stem in `format` (see the rules above); a UsageError where no exact rule exists. */
export function loraFileStem(format: LoraFileFormat, name: string, hasSecondTextEncoder: boolean): string {
  const own = parseLoraKey(format, `${name}.alpha`);
  if (own) return own.stem;
  if (format === 'kohya' && parseLoraKey('diffusers', `${name}.alpha`)) return kohyaStemFromDiffusers(name, hasSecondTextEncoder);
  throw new UsageError(
    `module "${name}" cannot be written in the ${format} layout: kohya's "_"-joined names have no exact diffusers spelling; ` + 'write it in the kohya layout',
  );
}
