/**
 * Which tensors of an image-model checkpoint (SD 1.x/2.x, SDXL, Flux) kohya's sd-scripts would give
 * a LoRA, and under which kohya name — from tensor names and shapes alone, so that extract can plan
 * a diffusion pair the way targets.ts plans an LLM pair. The rules follow sd-scripts' networks:
 *
 * U-Net (networks/lora.py): the Linear and Conv2d layers inside a Transformer2DModel (proj_in,
 * proj_out, attention to_q/k/v/out.0, ff.net.0.proj, ff.net.2) are targets; with conv_dim, the
 * layers inside ResnetBlock2D (conv1, conv2, time_emb_proj, conv_shortcut), Downsample2D and
 * Upsample2D are too. A Linear or a 1×1 conv gets the linear rank, a k×k conv the conv rank.
 * Layers outside those blocks (conv_in, conv_out, time/label embeddings) never are.
 * Flux (networks/lora_flux.py): every Linear inside a double or single stream block, BFL names.
 * Text encoders (CLIP, HF layout): the Linear layers of CLIPAttention and CLIPMLP.
 *
 * Layouts and kohya names (stem = `lora_<part>_` + module path with "." → "_"):
 * - SDXL single file (`model.diffusion_model.input_blocks…`): the original LDM paths, as
 *   sd-scripts' SDXL networks keep them (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`);
 *   te1 (`conditioner.embedders.0.transformer.text_model…`) → `lora_te1_text_model_…`; te2
 *   (OpenCLIP, `conditioner.embedders.1.model.transformer.resblocks…`) → `lora_te2_text_model_…`
 *   by kohya's conversion to HF CLIP names, its fused in_proj split into q/k/v (ldm-names.ts).
 * - SD 1.x/2.x single file (`model.diffusion_model.input_blocks…`, no label_emb): kohya loads it
 *   into the diffusers layout, so modules are named by the diffusers paths (ldm-names.ts maps
 *   them): `lora_unet_down_blocks_0_attentions_0_…`; the text encoder is `lora_te_text_model_…`,
 *   from CLIP-L (`cond_stage_model.transformer.`, SD 1.x) or OpenCLIP-H converted as te2 is
 *   (`cond_stage_model.model.transformer.`, SD 2.x, whose unused last layer kohya drops).
 * - Flux single file (`double_blocks.`/`single_blocks.`, bare or under `model.diffusion_model.`).
 * - diffusers SD 1.x/2.x U-Net folder (`down_blocks…`): kohya names these by the diffusers paths.
 *
 * Two layouts kohya names by other paths get diffusers-layout names instead (stem = component + "." +
 * the module path as it is, which diffusers' load_lora_weights reads unchanged; see
 * lora/lora-file-format.ts): an SDXL diffusers U-Net (`down_blocks…` with `add_embedding`; kohya
 * names SDXL by the LDM paths) → `unet.<path>`, the same targets as SD's, and a diffusers Flux
 * transformer (`single_transformer_blocks…`; kohya's Flux names are BFL's, with fused qkv) →
 * `transformer.<path>`: every linear of a block, as kohya's lora_flux targets them, in diffusers'
 * names (what diffusers' kohya-Flux conversion produces). The diffusers layout is also written for
 * SD 1.x/2.x (U-Net and text encoder), whose kohya names are made from the diffusers paths already:
 * `unet.<path>`, `text_encoder.<HF CLIP path>`. SDXL and Flux single files are kohya only: their
 * LDM / BFL paths are not diffusers' (Flux's fused qkv and linear1 would have to be split).
 */
import { UsageError } from '../errors.js';
import { withoutWeightSuffix } from './targets.js';
import { ldmUnetToDiffusers, openClipToHf } from './ldm-names.js';
import type { LoraFileFormat } from '../lora/lora-file-format.js';

export type DiffusionLayout = 'sdxl' | 'flux' | 'sd-diffusers' | 'sd-ldm' | 'sdxl-diffusers' | 'flux-diffusers';

/** The LoRA file layout each checkpoint layout is written in by default: kohya's where its names are exact. */
export function defaultLoraFileFormat(layout: DiffusionLayout): LoraFileFormat {
  return layout === 'sdxl-diffusers' || layout === 'flux-diffusers' ? 'diffusers' : 'kohya';
}

/** Why `layout` cannot be written as `format`, or undefined when it can (see the rules above). */
export function loraFileFormatRefusal(layout: DiffusionLayout, format: LoraFileFormat): string | undefined {
  if (format === 'kohya' && layout === 'sdxl-diffusers') {
    return 'kohya names SDXL LoRA modules by the original single-file paths (input_blocks…), which loraforge does not map from diffusers\'; write --out-format diffusers (unet.<path>), or pass the single-file SDXL checkpoints';
  }
  if (format === 'kohya' && layout === 'flux-diffusers') {
    return "kohya's Flux LoRA names are the original BFL ones (double_blocks…, fused qkv), which loraforge does not map from diffusers'; write --out-format diffusers (transformer.<path>), or pass the single-file BFL checkpoints";
  }
  if (format === 'diffusers' && layout === 'sdxl') return "the SDXL single file's module paths (input_blocks…) are not diffusers'; write --out-format kohya";
  if (format === 'diffusers' && layout === 'flux') return "BFL's Flux paths (double_blocks…, fused qkv) are not diffusers'; write --out-format kohya";
  return undefined;
}

export interface DiffusionModel {
  layout: DiffusionLayout;
  /** kohya's ss_base_model_version and ss_v2 for the layout */
  baseModelVersion: string;
  v2: boolean;
  networkModule: string;
}

export type DiffusionRole =
  /** a LoRA target: kohya's module stem, and the kernel of a conv (4-D) weight */
  | { kind: 'lora'; stem: string; kernel?: [number, number]; part: 'unet' | 'te' }
  /** a fused weight kohya splits into equal row blocks, one module each (OpenCLIP's in_proj → q, k, v) */
  | { kind: 'lora-split'; stems: string[]; part: 'te' }
  /** a k×k conv kohya targets only with conv_dim */
  | { kind: 'conv-skipped'; stem: string }
  /** not a target; `reason` when it is one kohya would target in a layout this does not write */
  | { kind: 'other'; reason?: string };

const LDM = 'model.diffusion_model.';

/**
 * The layout of a diffusion checkpoint from its tensor names; undefined when it is not one (an
 * LLM). `where` names the checkpoint in refusals.
 */
export function detectDiffusionModel(tensors: ReadonlyArray<{ name: string; shape: readonly number[] }>, where: string): DiffusionModel | undefined {
  const has = (re: RegExp) => tensors.some((t) => re.test(t.name));
  if (has(/^(model\.diffusion_model\.)?(double_blocks|single_blocks)\.\d+\./)) {
    return { layout: 'flux', baseModelVersion: 'flux1', v2: false, networkModule: 'networks.lora_flux' };
  }
  if (has(/^model\.diffusion_model\.input_blocks\./)) {
    if (has(/^model\.diffusion_model\.label_emb\./)) return { layout: 'sdxl', baseModelVersion: 'sdxl_base_v1-0', v2: false, networkModule: 'networks.lora' };
    // SD 2.x: OpenCLIP-H text encoder, and cross-attention to its 1024-wide states
    const v2 = has(/^cond_stage_model\.model\./) || tensors.some((t) => t.name.startsWith(LDM) && t.name.endsWith('.attn2.to_k.weight') && t.shape[1] === 1024);
    return { layout: 'sd-ldm', baseModelVersion: v2 ? 'sd_v2' : 'sd_v1', v2, networkModule: 'networks.lora' };
  }
  if (has(/^(down_blocks|up_blocks|mid_block)\./)) {
    if (has(/^add_embedding\./)) return { layout: 'sdxl-diffusers', baseModelVersion: 'sdxl_base_v1-0', v2: false, networkModule: 'networks.lora' };
    // SD 2.x cross-attends to OpenCLIP-H's 1024-wide states, SD 1.x to CLIP-L's 768
    const v2 = tensors.some((t) => t.name.endsWith('.attn2.to_k.weight') && t.shape[1] === 1024);
    return { layout: 'sd-diffusers', baseModelVersion: v2 ? 'sd_v2' : 'sd_v1', v2, networkModule: 'networks.lora' };
  }
  if (has(/^single_transformer_blocks\.\d+\./)) return { layout: 'flux-diffusers', baseModelVersion: 'flux1', v2: false, networkModule: 'networks.lora_flux' };
  if (has(/^transformer_blocks\.\d+\./)) {
    throw new UsageError(`${where} is a diffusers transformer without single_transformer_blocks (SD3 or another model, not Flux): loraforge extracts from Flux, SD 1.x/2.x and SDXL checkpoints only`);
  }
  return undefined;
}

/** U-Net blocks of the LDM layout: `input_blocks.4.1.`, `middle_block.1.`, `output_blocks.2.2.`. */
const LDM_BLOCK = /^(?:input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\.(.+)$/;
/** The same of the diffusers layout: `down_blocks.0.attentions.1.`, `mid_block.resnets.0.`. */
const DIFFUSERS_BLOCK = /^(?:(?:down_blocks|up_blocks)\.\d+\.|mid_block\.)(attentions|resnets|downsamplers|upsamplers)\.\d+\.(.+)$/;
/** Inside a Transformer2DModel: every Linear / Conv2d is a target (norms are 1-D and fall out by shape). */
const TRANSFORMER_INNER = /^(?:proj_in|proj_out|transformer_blocks\.\d+\..+)$/;
/** Inside an LDM ResBlock (kohya's original SDXL U-Net), Downsample (`op`) and Upsample (`conv`). */
const LDM_CONV_BLOCK_INNER = /^(?:in_layers\.2|out_layers\.3|emb_layers\.1|skip_connection|op|conv)$/;
/** Inside a diffusers ResnetBlock2D, Downsample2D, Upsample2D. */
const DIFFUSERS_CONV_BLOCK_INNER = /^(?:conv1|conv2|time_emb_proj|conv_shortcut|conv)$/;
/** Flux: every Linear of a double or single stream block (img/txt attn qkv & proj, mlp, modulation). */
const FLUX_BLOCK = /^(?:double_blocks|single_blocks)\.\d+\./;
/**
 * diffusers Flux: the linears of a FluxTransformerBlock (attention q/k/v/out and their context
 * twins, both feed-forwards, both AdaLayerNormZero modulations) and of a FluxSingleTransformerBlock
 * (q/k/v, proj_mlp, proj_out, the modulation): kohya's lora_flux set (every linear of a block) in
 * diffusers' names. diffusers' own training script targets a subset (attention and feed-forward).
 */
const FLUX_DIFFUSERS_TARGET =
  /^(?:transformer_blocks\.\d+\.(?:attn\.(?:to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)|ff\.net\.(?:0\.proj|2)|ff_context\.net\.(?:0\.proj|2)|norm1\.linear|norm1_context\.linear)|single_transformer_blocks\.\d+\.(?:attn\.(?:to_q|to_k|to_v)|proj_mlp|proj_out|norm\.linear))$/;
/** CLIP (HF layout) targets: CLIPAttention and CLIPMLP linears. */
const CLIP_TARGET = /^text_model\.encoder\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.fc[12])$/;
const SDXL_TE1 = 'conditioner.embedders.0.transformer.';
const SDXL_TE2 = 'conditioner.embedders.1.model.transformer.';
const SD1_TE = 'cond_stage_model.transformer.';
const SD2_TE = 'cond_stage_model.model.transformer.';
/** SD 2.x conditions on OpenCLIP-H's penultimate layer: kohya's converted encoder has 23 layers, dropping this one. */
const SD2_UNUSED_LAYER = 'resblocks.23.';

/** Where a U-Net tensor sits, or undefined outside kohya's target blocks. */
function unetPlace(layout: DiffusionLayout, path: string): { convBlock: boolean } | undefined {
  if (layout === 'sdxl') {
    const m = LDM_BLOCK.exec(path);
    if (!m) return undefined;
    if (TRANSFORMER_INNER.test(m[1])) return { convBlock: false };
    return LDM_CONV_BLOCK_INNER.test(m[1]) ? { convBlock: true } : undefined;
  }
  const m = DIFFUSERS_BLOCK.exec(path);
  if (!m) return undefined;
  if (m[1] === 'attentions') return TRANSFORMER_INNER.test(m[2]) ? { convBlock: false } : undefined;
  return DIFFUSERS_CONV_BLOCK_INNER.test(m[2]) ? { convBlock: true } : undefined;
}

type Part = 'unet' | 'transformer' | 'te' | 'te1' | 'te2';
/** diffusers' pipeline component of each part (SDXL's te1 is text_encoder, te2 text_encoder_2). */
const DIFFUSERS_COMPONENT: Record<Part, string> = { unet: 'unet', transformer: 'transformer', te: 'text_encoder', te1: 'text_encoder', te2: 'text_encoder_2' };

/** A module's stem: kohya's `lora_<part>_<path, "." → "_">`, or diffusers' `<component>.<path>`. */
function stemOf(format: LoraFileFormat, part: Part, path: string): string {
  return format === 'kohya' ? `lora_${part}_${path.replaceAll('.', '_')}` : `${DIFFUSERS_COMPONENT[part]}.${path}`;
}

/** A weight's role for a Linear (2-D) or Conv2d (4-D) layer; `convRank` says whether k×k convs are targets. */
function weightRole(stem: string, shape: readonly number[], convRank: boolean, part: 'unet' | 'te'): DiffusionRole {
  if (shape.length === 2) return { kind: 'lora', stem, part };
  if (shape.length !== 4) return { kind: 'other' };
  const kernel: [number, number] = [shape[2], shape[3]];
  if (kernel[0] * kernel[1] === 1 || convRank) return { kind: 'lora', stem, kernel, part };
  return { kind: 'conv-skipped', stem };
}

export interface DiffusionSelection {
  /** k×k convs (and, as kohya does, the whole ResnetBlock2D/Down/Upsample blocks) are targets */
  conv: boolean;
  textEncoders: boolean;
  /** the LoRA file layout the stems are named for (loraFileFormatRefusal says which a layout allows) */
  format: LoraFileFormat;
}

/** A CLIP text-encoder weight in the HF layout (`path` after the encoder's prefix). */
function clipRole(format: LoraFileFormat, part: Part, path: string, name: string, shape: readonly number[]): DiffusionRole {
  // old SD 1.x files lack `text_model.`; kohya adds it when loading (load_checkpoint_with_text_encoder_conversion)
  const hf = path.startsWith('text_model.') ? path : `text_model.${path}`;
  return name.endsWith('.weight') && shape.length === 2 && CLIP_TARGET.test(withoutWeightSuffix(hf)) ? { kind: 'lora', stem: stemOf(format, part, withoutWeightSuffix(hf)), part: 'te' } : { kind: 'other' };
}

/** An OpenCLIP text-encoder weight (`path` after `….transformer.`), named as kohya converts it. */
function openClipRole(format: LoraFileFormat, part: Part, path: string, shape: readonly number[]): DiffusionRole {
  // in_proj is a bare parameter (`attn.in_proj_weight`); the other linears are modules (`….weight`)
  const module = path.endsWith('.in_proj_weight') ? path.slice(0, -'_weight'.length) : path.endsWith('.weight') ? withoutWeightSuffix(path) : undefined;
  const hf = module === undefined || shape.length !== 2 ? undefined : openClipToHf(module);
  if (!hf) return { kind: 'other' };
  if (hf.length === 1) return { kind: 'lora', stem: stemOf(format, part, hf[0]), part: 'te' };
  return shape[0] % hf.length === 0 ? { kind: 'lora-split', stems: hf.map((p) => stemOf(format, part, p)), part: 'te' } : { kind: 'other' };
}

/** The role of a text-encoder tensor, or undefined when `name` is not one of `model`'s text encoders. */
function textEncoderRole(model: DiffusionModel, format: LoraFileFormat, name: string, shape: readonly number[]): DiffusionRole | undefined {
  if (model.layout === 'sdxl') {
    if (name.startsWith(SDXL_TE1)) return clipRole(format, 'te1', name.slice(SDXL_TE1.length), name, shape);
    if (name.startsWith(SDXL_TE2)) return openClipRole(format, 'te2', name.slice(SDXL_TE2.length), shape);
  }
  if (model.layout === 'sd-ldm') {
    if (name.startsWith(SD1_TE)) return clipRole(format, 'te', name.slice(SD1_TE.length), name, shape);
    if (name.startsWith(SD2_TE)) {
      const path = name.slice(SD2_TE.length);
      if (path.startsWith(SD2_UNUSED_LAYER)) return { kind: 'other', reason: "SD 2.x's last text-encoder layer (resblocks.23) is unused and not in kohya's converted encoder" };
      return openClipRole(format, 'te', path, shape);
    }
  }
  return undefined;
}

/** The role of one tensor of a diffusion checkpoint in `model`'s layout. */
export function classifyDiffusionTensor(model: DiffusionModel, name: string, shape: readonly number[], sel: DiffusionSelection): DiffusionRole {
  if (sel.textEncoders) {
    const te = textEncoderRole(model, sel.format, name, shape);
    if (te) return te;
  }
  if (!name.endsWith('.weight')) return { kind: 'other' };
  if (model.layout === 'flux') {
    const path = withoutWeightSuffix(name.startsWith(LDM) ? name.slice(LDM.length) : name);
    return FLUX_BLOCK.test(path) && shape.length === 2 ? { kind: 'lora', stem: stemOf(sel.format, 'unet', path), part: 'unet' } : { kind: 'other' };
  }
  if (model.layout === 'flux-diffusers') {
    const path = withoutWeightSuffix(name);
    return FLUX_DIFFUSERS_TARGET.test(path) && shape.length === 2 ? { kind: 'lora', stem: stemOf(sel.format, 'transformer', path), part: 'unet' } : { kind: 'other' };
  }
  let path = withoutWeightSuffix(name);
  let layout = model.layout;
  if (layout === 'sdxl' || layout === 'sd-ldm') {
    if (!path.startsWith(LDM)) return { kind: 'other' };
    path = path.slice(LDM.length);
  }
  if (layout === 'sd-ldm') {
    // kohya names SD 1.x/2.x modules by the diffusers paths it converts the file to
    const mapped = ldmUnetToDiffusers(path);
    if (mapped === undefined) return { kind: 'other' };
    [path, layout] = [mapped, 'sd-diffusers'];
  }
  const place = unetPlace(layout, path);
  // kohya walks ResnetBlock2D / Down- / Upsample2D only with conv_dim: their linears and 1×1 convs too
  if (!place || (place.convBlock && !sel.conv && (shape.length !== 4 || shape[2] * shape[3] === 1))) return { kind: 'other' };
  return weightRole(stemOf(sel.format, 'unet', path), shape, sel.conv, 'unet');
}
