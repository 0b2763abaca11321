/**
 * Scaled-down SDXL- and Flux-shaped checkpoints (real tensor names, small widths) with planted
 * low-rank deltas, written as single `.safetensors` files for extract's diffusion path.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FloatDType } from '../../src/io/types.js';
import { writeSafetensorsFile } from '../../src/io/safetensors.js';
import { openLoraFile } from '../../src/lora/lora-file.js';
import { addInto, planted, type Tensors } from './extract.js';

const C = 16; // channels of the first level (SDXL: 320)
const T = 24; // time embedding width (SDXL: 1280)
const CTX = 20; // cross-attention context (SDXL: 2048)
const D = 16; // CLIP width (te1: 768)
const H = 24; // Flux hidden (3072)

export const SDXL_SHAPES: Record<string, number[]> = {
  'model.diffusion_model.time_embed.0.weight': [T, C],
  'model.diffusion_model.label_emb.0.0.weight': [T, 12],
  'model.diffusion_model.input_blocks.0.0.weight': [C, 4, 3, 3],
  'model.diffusion_model.input_blocks.1.0.in_layers.0.weight': [C],
  'model.diffusion_model.input_blocks.1.0.in_layers.2.weight': [C, C, 3, 3],
  'model.diffusion_model.input_blocks.1.0.in_layers.2.bias': [C],
  'model.diffusion_model.input_blocks.1.0.emb_layers.1.weight': [C, T],
  'model.diffusion_model.input_blocks.1.0.out_layers.3.weight': [C, C, 3, 3],
  'model.diffusion_model.input_blocks.3.0.op.weight': [C, C, 3, 3],
  'model.diffusion_model.input_blocks.4.0.skip_connection.weight': [2 * C, C, 1, 1],
  'model.diffusion_model.input_blocks.4.1.norm.weight': [2 * C],
  'model.diffusion_model.input_blocks.4.1.proj_in.weight': [2 * C, 2 * C],
  'model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight': [2 * C, 2 * C],
  'model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_out.0.weight': [2 * C, 2 * C],
  'model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_out.0.bias': [2 * C],
  'model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight': [2 * C, CTX],
  'model.diffusion_model.input_blocks.4.1.transformer_blocks.0.ff.net.0.proj.weight': [8 * C, 2 * C],
  'model.diffusion_model.input_blocks.4.1.transformer_blocks.0.ff.net.2.weight': [2 * C, 4 * C],
  'model.diffusion_model.input_blocks.4.1.transformer_blocks.0.norm1.weight': [2 * C],
  'model.diffusion_model.input_blocks.4.1.proj_out.weight': [2 * C, 2 * C],
  'model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_v.weight': [2 * C, 2 * C],
  'model.diffusion_model.output_blocks.2.2.conv.weight': [C, C, 3, 3],
  'model.diffusion_model.out.2.weight': [4, C, 3, 3],
  'conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight': [D, D],
  'conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight': [2 * D, D],
  'conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight': [30, D],
  'conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight': [3 * D, D],
  'first_stage_model.decoder.conv_in.weight': [C, 4, 3, 3],
};

export const FLUX_SHAPES: Record<string, number[]> = {
  'img_in.weight': [H, 16],
  'time_in.in_layer.weight': [H, 8],
  'double_blocks.0.img_attn.qkv.weight': [3 * H, H],
  'double_blocks.0.img_attn.proj.weight': [H, H],
  'double_blocks.0.img_attn.norm.query_norm.scale': [8],
  'double_blocks.0.img_mlp.0.weight': [4 * H, H],
  'double_blocks.0.img_mlp.2.weight': [H, 4 * H],
  'double_blocks.0.img_mod.lin.weight': [6 * H, H],
  'double_blocks.0.txt_attn.qkv.weight': [3 * H, H],
  'double_blocks.0.txt_mlp.0.weight': [4 * H, H],
  'single_blocks.0.linear1.weight': [7 * H, H],
  'single_blocks.0.linear2.weight': [H, 5 * H],
  'single_blocks.0.modulation.lin.weight': [3 * H, H],
  'final_layer.linear.weight': [16, H],
};

function seeded(count: number, seed: number): Float32Array {
  let s = seed * 2654435761 + 1;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = ((s / 2 ** 32) - 0.5) * 0.04;
  }
  return out;
}

export function baseOf(shapes: Record<string, number[]>, seed: number, prefix = ''): Tensors {
  const out: Tensors = {};
  let k = 0;
  for (const [name, shape] of Object.entries(shapes)) out[prefix + name] = { shape, data: seeded(shape.reduce((a, b) => a * b, 1), seed * 100 + k++) };
  return out;
}

/** A planted rank-2 delta for a weight of any rank (out × everything else). */
export function plantFor(shape: readonly number[], seed: number): Float32Array {
  return planted(shape[0], shape.slice(1).reduce((a, b) => a * b, 1), [0.5, 0.25], seed);
}

/** Adds a planted delta to every tensor of `names`; returns B and the deltas. */
export function plantAll(base: Tensors, names: readonly string[]): { b: Tensors; deltas: Record<string, Float32Array> } {
  const b: Tensors = { ...base };
  const deltas: Record<string, Float32Array> = {};
  names.forEach((name, i) => {
    deltas[name] = plantFor(base[name].shape, 7 + i);
    b[name] = { shape: base[name].shape, data: addInto(base[name].data, deltas[name]) };
  });
  return { b, deltas };
}

export async function writeSingleFile(path: string, t: Tensors, dtype: FloatDType = 'F32'): Promise<string> {
  await writeSafetensorsFile(path, Object.entries(t).map(([name, { shape, data }]) => ({ name, shape, data, dtype })));
  return path;
}

export async function writeDiffusionPair(root: string, a: Tensors, b: Tensors, dtype: FloatDType = 'F32'): Promise<{ a: string; b: string }> {
  return { a: await writeSingleFile(join(root, 'a.safetensors'), a, dtype), b: await writeSingleFile(join(root, 'b.safetensors'), b, dtype) };
}

/** kohya's stem rule, restated here apart from the writer: prefix, then the module path with every "." replaced by "_". */
export function kohyaStem(prefix: string, path: string): string {
  return `${prefix}_${path.split('.').join('_')}`;
}

/** max over modules of ‖(alpha/r)·up·down − Δ‖ / ‖Δ‖, in f64; Δ by the module's tensor name. */
export async function worstRecovery(file: string, byStem: Record<string, string>, deltas: Record<string, Float32Array>): Promise<number> {
  const lora = await openLoraFile(file);
  let worst = 0;
  try {
    for (const [s, tensor] of Object.entries(byStem)) {
      const m = await lora.load(s);
      const d = deltas[tensor];
      const r = m.A.rows;
      const scale = m.alpha / r;
      if (m.B.rows * m.A.cols !== d.length) throw new Error(`${s}: ${m.B.rows}×${m.A.cols} factors for ${d.length} values`);
      let err = 0;
      let norm = 0;
      for (let i = 0; i < m.B.rows; i++) {
        for (let j = 0; j < m.A.cols; j++) {
          let x = 0;
          for (let k = 0; k < r; k++) x += m.B.data[i * r + k] * m.A.data[k * m.A.cols + j];
          const t = d[i * m.A.cols + j];
          err += (scale * x - t) ** 2;
          norm += t * t;
        }
      }
      worst = Math.max(worst, Math.sqrt(err / norm));
    }
  } finally {
    await lora.close();
  }
  return worst;
}


/**
 * A diffusers model folder as `save_pretrained` writes it: `diffusion_pytorch_model.safetensors`,
 * or with `shards` > 1 that many `diffusion_pytorch_model-0000i-of-0000N.safetensors` (tensors dealt
 * in order) plus `diffusion_pytorch_model.safetensors.index.json`; and a config.json.
 */
export async function writeDiffusersFolder(dir: string, t: Tensors, shards = 1, dtype: FloatDType = 'F32'): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), '{"_class_name": "UNet2DConditionModel"}\n');
  if (shards === 1) {
    await writeSingleFile(join(dir, 'diffusion_pytorch_model.safetensors'), t, dtype);
    return dir;
  }
  const names = Object.keys(t);
  const per = Math.ceil(names.length / shards);
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `diffusion_pytorch_model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = names.slice(s * per, (s + 1) * per);
    await writeSingleFile(join(dir, file), Object.fromEntries(part.map((n) => [n, t[n]])), dtype);
    for (const n of part) weightMap[n] = file;
  }
  await writeFile(join(dir, 'diffusion_pytorch_model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return dir;
}
