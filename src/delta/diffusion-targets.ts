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
 *   te1 (`conditioner.embedders.0.transformer.text_model…`) → `lora_te1_text_model_…`.
 * - Flux single file (`double_blocks.`/`single_blocks.`, bare or under `model.diffusion_model.`).
 * - diffusers SD 1.x/2.x U-Net folder (`down_blocks…`): kohya names these by the diffusers paths.
 * Refused with the way out: SD 1.x/2.x single files (kohya names them by diffusers paths, a mapping
 * from the LDM names this does not implement), SDXL diffusers folders (kohya names SDXL by LDM
 * paths), diffusers Flux transformers (kohya's Flux names are BFL's, with fused qkv), and SDXL's
 * OpenCLIP te2 layout (reported, not extracted).
 */
import { UsageError } from '../errors.js';
import { withoutWeightSuffix } from './targets.js';

export type DiffusionLayout = 'sdxl' | 'flux' | 'sd-diffusers';

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
    throw new UsageError(
      `${where} is an SD 1.x/2.x single-file checkpoint: kohya names its LoRA modules by the diffusers U-Net paths, which loraforge does not map from the original names; ` +
        'convert both checkpoints to diffusers folders (diffusers convert_original_stable_diffusion_to_diffusers.py) and pass their unet/ folders',
    );
  }
  if (has(/^(down_blocks|up_blocks|mid_block)\./)) {
    if (has(/^add_embedding\./)) {
      throw new UsageError(
        `${where} is an SDXL diffusers U-Net: kohya names SDXL LoRA modules by the original single-file paths (input_blocks…), which loraforge does not map from diffusers'; ` +
          'pass the single-file SDXL checkpoints instead',
      );
    }
    // SD 2.x cross-attends to OpenCLIP-H's 1024-wide states, SD 1.x to CLIP-L's 768
    const v2 = tensors.some((t) => t.name.endsWith('.attn2.to_k.weight') && t.shape[1] === 1024);
    return { layout: 'sd-diffusers', baseModelVersion: v2 ? 'sd_v2' : 'sd_v1', v2, networkModule: 'networks.lora' };
  }
  if (has(/^(transformer_blocks|single_transformer_blocks)\.\d+\./)) {
    throw new UsageError(
      `${where} is a diffusers transformer (Flux/SD3): kohya's Flux LoRA names are the original BFL ones (double_blocks…, fused qkv), which loraforge does not map from diffusers'; ` +
        'pass the single-file BFL checkpoints (flux1-dev.safetensors) instead',
    );
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
/** CLIP (HF layout) targets: CLIPAttention and CLIPMLP linears. */
const CLIP_TARGET = /^text_model\.encoder\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.fc[12])$/;
const SDXL_TE1 = 'conditioner.embedders.0.transformer.';
const SDXL_TE2 = /^conditioner\.embedders\.1\.model\.transformer\.resblocks\.\d+\.(?:attn\.(?:in_proj_weight|out_proj\.weight)|mlp\.c_(?:fc|proj)\.weight)$/;

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

function stemOf(part: string, path: string): string {
  return `lora_${part}_${path.replaceAll('.', '_')}`;
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
}

/** The role of one tensor of a diffusion checkpoint in `model`'s layout. */
export function classifyDiffusionTensor(model: DiffusionModel, name: string, shape: readonly number[], sel: DiffusionSelection): DiffusionRole {
  if (model.layout === 'sdxl' && sel.textEncoders) {
    if (name.startsWith(SDXL_TE1)) {
      const path = withoutWeightSuffix(name.slice(SDXL_TE1.length));
      return name.endsWith('.weight') && shape.length === 2 && CLIP_TARGET.test(path) ? { kind: 'lora', stem: stemOf('te1', path), part: 'te' } : { kind: 'other' };
    }
    if (SDXL_TE2.test(name)) return { kind: 'other', reason: "SDXL's second text encoder (OpenCLIP layout) is not extracted" };
  }
  if (!name.endsWith('.weight')) return { kind: 'other' };
  if (model.layout === 'flux') {
    const path = withoutWeightSuffix(name.startsWith(LDM) ? name.slice(LDM.length) : name);
    return FLUX_BLOCK.test(path) && shape.length === 2 ? { kind: 'lora', stem: stemOf('unet', path), part: 'unet' } : { kind: 'other' };
  }
  let path = withoutWeightSuffix(name);
  if (model.layout === 'sdxl') {
    if (!path.startsWith(LDM)) return { kind: 'other' };
    path = path.slice(LDM.length);
  }
  const place = unetPlace(model.layout, path);
  // kohya walks ResnetBlock2D / Down- / Upsample2D only with conv_dim: their linears and 1×1 convs too
  if (!place || (place.convBlock && !sel.conv && (shape.length !== 4 || shape[2] * shape[3] === 1))) return { kind: 'other' };
  return weightRole(stemOf('unet', path), shape, sel.conv, 'unet');
}
