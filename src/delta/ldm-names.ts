/**
 * Module paths of the original Stable Diffusion single files → the paths kohya's sd-scripts names
 * LoRA modules by. kohya loads SD 1.x/2.x single files into diffusers-layout models
 * (library/model_util.py) and names modules by those paths, so a LoRA extracted from the original
 * names must use the converted ones. Pure name functions, over module paths without `.weight`.
 */

/** Inside an LDM ResBlock → inside a diffusers ResnetBlock2D. */
const RESNET_INNER: Record<string, string> = {
  'in_layers.0': 'norm1',
  'in_layers.2': 'conv1',
  'out_layers.0': 'norm2',
  'out_layers.3': 'conv2',
  'emb_layers.1': 'time_emb_proj',
  skip_connection: 'conv_shortcut',
};

/** Layers outside the blocks. */
const TOP_LEVEL: Record<string, string> = {
  'time_embed.0': 'time_embedding.linear_1',
  'time_embed.2': 'time_embedding.linear_2',
  'input_blocks.0.0': 'conv_in',
  'out.0': 'conv_norm_out',
  'out.2': 'conv_out',
};

/** SD 1.x/2.x: two ResBlocks per level on the way down, three on the way up (the extra one takes the skip). */
const LAYERS_PER_BLOCK = 2;

function resnet(prefix: string, inner: string): string | undefined {
  return RESNET_INNER[inner] === undefined ? undefined : `${prefix}.${RESNET_INNER[inner]}`;
}

/**
 * The diffusers path of an SD 1.x/2.x U-Net module path (after `model.diffusion_model.`), or
 * undefined for a path outside the U-Net's layout. Levels hold LAYERS_PER_BLOCK ResBlocks
 * (input_blocks.{3i+j+1}.0) each followed by a transformer (.1) on the attention levels, then a
 * Downsample (input_blocks.{3i+3}.0.op); going up, output_blocks.{3i+j} hold a ResBlock (.0), a
 * transformer (.1) and, after the level's last one, an Upsample (`conv`, at .1 where the level has
 * no transformer, else .2).
 */
export function ldmUnetToDiffusers(path: string): string | undefined {
  if (TOP_LEVEL[path] !== undefined) return TOP_LEVEL[path];
  const per = LAYERS_PER_BLOCK + 1;
  let m = /^input_blocks\.(\d+)\.([01])\.(.+)$/.exec(path);
  if (m) {
    const k = Number(m[1]);
    if (k === 0) return undefined;
    const level = Math.floor((k - 1) / per);
    const j = (k - 1) % per;
    if (j === LAYERS_PER_BLOCK) return m[2] === '0' && m[3] === 'op' ? `down_blocks.${level}.downsamplers.0.conv` : undefined;
    return m[2] === '0' ? resnet(`down_blocks.${level}.resnets.${j}`, m[3]) : `down_blocks.${level}.attentions.${j}.${m[3]}`;
  }
  m = /^middle_block\.([012])\.(.+)$/.exec(path);
  if (m) return m[1] === '1' ? `mid_block.attentions.0.${m[2]}` : resnet(`mid_block.resnets.${m[1] === '0' ? 0 : 1}`, m[2]);
  m = /^output_blocks\.(\d+)\.([012])\.(.+)$/.exec(path);
  if (m) {
    const k = Number(m[1]);
    const level = Math.floor(k / per);
    const j = k % per;
    if (m[2] === '0') return resnet(`up_blocks.${level}.resnets.${j}`, m[3]);
    // an Upsample is the only layer whose whole inner path is `conv`; transformers hold norm, proj_in, …
    if (m[3] === 'conv') return j === LAYERS_PER_BLOCK ? `up_blocks.${level}.upsamplers.0.conv` : undefined;
    return m[2] === '1' ? `up_blocks.${level}.attentions.${j}.${m[3]}` : undefined;
  }
  return undefined;
}

/**
 * An OpenCLIP text-encoder layer (SD 2.x's `cond_stage_model.model.transformer.`, SDXL's
 * `conditioner.embedders.1.model.transformer.`; the path after it, without `.weight`) → the HF CLIP
 * module paths kohya converts it to (library/model_util.py, sdxl_model_util.py): the fused
 * `attn.in_proj` (3·d × d) becomes q_proj, k_proj, v_proj — its three row blocks, in that order —
 * `attn.out_proj` self_attn.out_proj, `mlp.c_fc` mlp.fc1, `mlp.c_proj` mlp.fc2. Undefined for
 * anything else (norms, embeddings).
 */
export function openClipToHf(path: string): string[] | undefined {
  const m = /^resblocks\.(\d+)\.(attn\.in_proj|attn\.out_proj|mlp\.c_fc|mlp\.c_proj)$/.exec(path);
  if (!m) return undefined;
  const layer = `text_model.encoder.layers.${m[1]}`;
  switch (m[2]) {
    case 'attn.in_proj':
      return ['q_proj', 'k_proj', 'v_proj'].map((p) => `${layer}.self_attn.${p}`);
    case 'attn.out_proj':
      return [`${layer}.self_attn.out_proj`];
    case 'mlp.c_fc':
      return [`${layer}.mlp.fc1`];
    default:
      return [`${layer}.mlp.fc2`];
  }
}
