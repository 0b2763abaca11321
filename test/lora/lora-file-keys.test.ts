import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openLoraFile, type LoraFile } from '../../src/lora/lora-file.js';
import { detectLoraFileFormat } from '../../src/lora/lora-file-format.js';
import { InputError } from '../../src/errors.js';
import { tempFolders } from '../helpers/synthetic.js';
import { kohyaName, writeLoraFile, type PlantedModule } from '../helpers/lora-file.js';

const folder = tempFolders('lora-file-keys-');

async function withFile<T>(path: string, fn: (f: LoraFile) => Promise<T>): Promise<T> {
  const f = await openLoraFile(path);
  try {
    return await fn(f);
  } finally {
    await f.close();
  }
}

/** The modules as read: name, alpha, scaling and both factors, for comparing two files. */
async function modulesOf(path: string): Promise<unknown[]> {
  return withFile(path, async (f) => {
    const out: unknown[] = [];
    for (const m of f.modules) {
      const l = await f.load(m.name);
      out.push({ name: m.name, alpha: m.alpha, scaling: m.scaling, conv: m.conv, A: [...l.A.data], B: [...l.B.data] });
    }
    return out;
  });
}

// ComfyUI's save/extract nodes write `diffusion_model.` + the original (dotted) module path
const PATHS = ['input_blocks.4.1.transformer_blocks.0.attn1.to_q', 'input_blocks.1.0.in_layers.2', 'double_blocks.0.img_attn.qkv'];
const modules = (stemOf: (path: string) => string): PlantedModule[] => [
  { stem: stemOf(PATHS[0]), out: 8, in: 8, rank: 2, alpha: 1 },
  { stem: stemOf(PATHS[1]), out: 6, in: 5, rank: 3, kernel: [3, 3], alpha: 1.5 },
  { stem: stemOf(PATHS[2]), out: 12, in: 4, rank: 2 },
];

test('ComfyUI diffusion_model.<path> keys and dotted lora_unet_ stems read as the plain kohya file, under kohya names', async () => {
  const dir = await folder('comfy');
  const plain = join(dir, 'plain.safetensors');
  await writeLoraFile(plain, 'kohya', modules((p) => kohyaName('lora_unet', p)), 3);
  const expected = await modulesOf(plain);
  assert.deepEqual(expected.map((m) => (m as { name: string }).name), PATHS.map((p) => kohyaName('lora_unet', p)));
  for (const [label, stemOf] of [
    ['diffusion_model.', (p: string) => `diffusion_model.${p}`],
    ['lora_unet_ dotted', (p: string) => `lora_unet_${p}`],
    ['lora_unet. dotted', (p: string) => `lora_unet.${p}`],
  ] as const) {
    const path = join(dir, `${label}.safetensors`);
    await writeLoraFile(path, 'kohya', modules(stemOf), 3);
    assert.equal(await withFile(path, async (f) => f.format), 'kohya', label);
    assert.deepEqual(await modulesOf(path), expected, label);
  }
  // a dotted text-encoder stem too
  assert.equal(detectLoraFileFormat('x.safetensors', ['lora_te1_text_model.encoder.layers.0.mlp.fc1.lora_down.weight']), 'kohya');
});

test('ComfyUI text-encoder keys, and one module under two spellings, are refused naming the tensor', async () => {
  assert.throws(
    () => detectLoraFileFormat('x.safetensors', ['diffusion_model.a.lora_down.weight', 'text_encoders.clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.lora_down.weight']),
    (e: Error) => e instanceof InputError && /"text_encoders\.clip_l\..*" is a ComfyUI text-encoder tensor.*lora_te, lora_te1 or lora_te2/.test(e.message),
  );
  const dir = await folder('twice');
  const path = join(dir, 'twice.safetensors');
  await writeLoraFile(path, 'kohya', [
    { stem: 'diffusion_model.input_blocks.4.1.proj_in', out: 4, in: 4, rank: 2 },
    { stem: 'lora_unet_input_blocks_4_1_proj_in', out: 4, in: 4, rank: 2 },
  ], 1);
  await assert.rejects(openLoraFile(path), (e: Error) => e instanceof InputError && /module "lora_unet_input_blocks_4_1_proj_in" has two down tensors/.test(e.message));
});

/** A safetensors file written byte by byte, for dtypes the writer does not produce (I64, U8). */
async function writeRaw(path: string, tensors: Array<{ name: string; dtype: string; shape: number[]; bytes: Uint8Array }>): Promise<void> {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  await writeFile(path, Buffer.concat([len, json, ...tensors.map((t) => t.bytes)]));
}

const f32 = (n: number) => new Uint8Array(Float32Array.from({ length: n }, (_, i) => (i % 7) / 7 - 0.4).buffer);
function factors(stem: string, rank: number, out = 4, inF = 4) {
  return [
    { name: `${stem}.lora_down.weight`, dtype: 'F32', shape: [rank, inF], bytes: f32(rank * inF) },
    { name: `${stem}.lora_up.weight`, dtype: 'F32', shape: [out, rank], bytes: f32(out * rank) },
  ];
}
function scalar(stem: string, dtype: string, bytes: number[], shape: number[] = []) {
  return { name: `${stem}.alpha`, dtype, shape, bytes: Uint8Array.from(bytes) };
}

test('alpha tensors: I64 (kohya svd merge), I32, F16, F64, 0 or absent (→ r); a diffusers module without alpha or header has alpha = r', async () => {
  const dir = await folder('alpha');
  const path = join(dir, 'a.safetensors');
  const le64 = (v: bigint) => [...new Uint8Array(BigInt64Array.of(v).buffer)];
  await writeRaw(path, [
    ...factors('lora_unet_i64', 4), scalar('lora_unet_i64', 'I64', le64(8n)),
    ...factors('lora_unet_i32', 4), scalar('lora_unet_i32', 'I32', [...new Uint8Array(Int32Array.of(2).buffer)]),
    ...factors('lora_unet_f16', 3), scalar('lora_unet_f16', 'F16', [0x00, 0x3e]), // 1.5
    ...factors('lora_unet_f64', 2), scalar('lora_unet_f64', 'F64', [...new Uint8Array(Float64Array.of(0.5).buffer)], [1]),
    ...factors('lora_unet_zero', 2), scalar('lora_unet_zero', 'F32', [0, 0, 0, 0]),
    ...factors('lora_unet_none', 3),
  ]);
  const got = await withFile(path, async (f) => Object.fromEntries(f.modules.map((m) => [m.name, [m.alpha, m.scaling]])));
  assert.deepEqual(got, {
    lora_unet_i64: [8, 2],
    lora_unet_i32: [2, 0.5],
    lora_unet_f16: [1.5, 0.5],
    lora_unet_f64: [0.5, 0.25],
    lora_unet_zero: [2, 1],
    lora_unet_none: [3, 1],
  });

  const diff = join(dir, 'd.safetensors');
  await writeLoraFile(diff, 'diffusers', [{ stem: 'unet.mid_block.attentions.0.proj_out', out: 4, in: 4, rank: 2 }], 1);
  assert.deepEqual(await withFile(diff, async (f) => [f.modules[0].alpha, f.modules[0].scaling]), [2, 1]);
});

test('an alpha of another dtype or more than one value is refused naming the file and tensor', async () => {
  const dir = await folder('bad-alpha');
  const u8 = join(dir, 'u8.safetensors');
  await writeRaw(u8, [...factors('lora_unet_a', 2), scalar('lora_unet_a', 'U8', [4])]);
  await assert.rejects(openLoraFile(u8), (e: Error) => e instanceof InputError && e.message.includes(u8) && /"lora_unet_a\.alpha" has dtype U8; alpha must be a float or integer/.test(e.message));
  const two = join(dir, 'two.safetensors');
  await writeRaw(two, [...factors('lora_unet_a', 2), scalar('lora_unet_a', 'F32', [0, 0, 128, 63, 0, 0, 128, 63], [2])]);
  await assert.rejects(openLoraFile(two), (e: Error) => e instanceof InputError && /"lora_unet_a\.alpha" has shape 2; alpha is one value/.test(e.message));
});
