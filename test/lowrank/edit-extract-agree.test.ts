/**
 * edit and extract factor a model pair through the one decompose: the same SVD settings and the
 * same per-tensor seeds, so an edit that changes nothing writes extract's adapter byte for byte;
 * and a fixed rank a tensor cannot hold is refused by both, naming the tensor.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { access, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { getBackend } from '../../src/linalg/index.js';
import { createRng } from '../../src/linalg/random.js';
import { editDelta } from '../../src/edit/edit.js';
import { extractLora } from '../../src/extract/extract.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { runCli } from '../helpers/cli.js';

// big enough that rank + oversampling stays below every tensor's size: the SVD is then randomized,
// and its bytes depend on the settings and the seed
const HIDDEN = 48;
const KV = 24;
const FFN = 64;
const VOCAB = 10;
const LAYERS = 2;

function random(shape: number[], seed: number, scale = 1): { shape: number[]; data: Float32Array } {
  const rng = createRng(seed);
  return { shape, data: Float32Array.from({ length: shape[0] * shape[1] }, () => scale * rng.normal()) };
}

/** A llama pair whose only differences are full-rank changes of q/k/v/o/gate/up/down in every layer. */
function llamaPair(): { a: Record<string, { shape: number[]; data: Float32Array }>; b: Record<string, { shape: number[]; data: Float32Array }> } {
  const a: Record<string, { shape: number[]; data: Float32Array }> = {};
  const b: Record<string, { shape: number[]; data: Float32Array }> = {};
  const same = (name: string, t: { shape: number[]; data: Float32Array }) => {
    a[name] = t;
    b[name] = t;
  };
  same('model.embed_tokens.weight', random([VOCAB, HIDDEN], 1));
  let seed = 10;
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}`;
    same(`${p}.input_layernorm.weight`, { shape: [HIDDEN], data: new Float32Array(HIDDEN).fill(1) });
    same(`${p}.post_attention_layernorm.weight`, { shape: [HIDDEN], data: new Float32Array(HIDDEN).fill(1) });
    const linear: Array<[string, number[]]> = [
      ['self_attn.q_proj', [HIDDEN, HIDDEN]],
      ['self_attn.k_proj', [KV, HIDDEN]],
      ['self_attn.v_proj', [KV, HIDDEN]],
      ['self_attn.o_proj', [HIDDEN, HIDDEN]],
      ['mlp.gate_proj', [FFN, HIDDEN]],
      ['mlp.up_proj', [FFN, HIDDEN]],
      ['mlp.down_proj', [HIDDEN, FFN]],
    ];
    for (const [m, shape] of linear) {
      const w = random(shape, seed++);
      const d = random(shape, seed++, 0.1);
      a[`${p}.${m}.weight`] = w;
      b[`${p}.${m}.weight`] = { shape, data: w.data.map((x, i) => x + d.data[i]) };
    }
  }
  same('model.norm.weight', { shape: [HIDDEN], data: new Float32Array(HIDDEN).fill(1) });
  same('lm_head.weight', random([VOCAB, HIDDEN], 2));
  return { a, b };
}

/** Every tensor of a safetensors file as its raw bytes, plus its dtype and shape. */
async function rawTensors(file: string): Promise<Map<string, { dtype: string; shape: number[]; bytes: Buffer }>> {
  const buf = await readFile(file);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + headerLength;
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Buffer }>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    out.set(name, { dtype: t.dtype, shape: t.shape, bytes: buf.subarray(base + t.data_offsets[0], base + t.data_offsets[1]) });
  }
  return out;
}

describe('edit and extract share one decompose', async () => {
  const dir = await makeTempDir('lf-lowrank-agree-');
  after(() => rm(dir, { recursive: true, force: true }));
  const pair = llamaPair();
  const modelA = join(dir, 'a');
  const modelB = join(dir, 'b');
  await writeModelFolder(modelA, pair.a);
  await writeModelFolder(modelB, pair.b);

  it('edit --rank r with an identity edit (--scale 0:1) writes the factors extract --rank r writes, byte for byte', async () => {
    const rank = '4';
    const seed = '7';
    const extracted = join(dir, 'extracted');
    const edited = join(dir, 'edited');
    const ex = await runCli(['extract', '--model-a', modelA, '--model-b', modelB, '--rank', rank, '--seed', seed, '--out', extracted, '--quiet']);
    assert.equal(ex.code, 0, ex.stderr);
    const ed = await runCli(['edit', '--model-a', modelA, '--model-b', modelB, '--rank', rank, '--seed', seed, '--scale', '0:1', '--out', edited, '--quiet']);
    assert.equal(ed.code, 0, ed.stderr);

    const want = await rawTensors(join(extracted, 'adapter_model.safetensors'));
    const got = await rawTensors(join(edited, 'adapter_model.safetensors'));
    // 7 modules × 2 layers, lora_A and lora_B each
    assert.equal(want.size, 7 * LAYERS * 2);
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (const [name, w] of want) {
      const g = got.get(name)!;
      assert.equal(g.dtype, w.dtype, name);
      assert.deepEqual(g.shape, w.shape, name);
      assert.ok(g.bytes.equals(w.bytes), `${name}: the factors differ`);
    }
    const wantConfig = JSON.parse(await readFile(join(extracted, 'adapter_config.json'), 'utf8'));
    const gotConfig = JSON.parse(await readFile(join(edited, 'adapter_config.json'), 'utf8'));
    assert.equal(gotConfig.r, wantConfig.r);
    assert.equal(gotConfig.lora_alpha, wantConfig.lora_alpha);
    assert.deepEqual(gotConfig.rank_pattern ?? {}, wantConfig.rank_pattern ?? {});
    assert.deepEqual(gotConfig.alpha_pattern ?? {}, wantConfig.alpha_pattern ?? {});
  });

  it('edit refuses a fixed rank a tensor cannot hold, naming the tensor, as extract does, and writes nothing', async () => {
    const backend = await getBackend();
    const out = join(dir, 'too-big');
    // k_proj / v_proj are 24 × 48: rank 30 fits the other tensors but not them
    await assert.rejects(
      editDelta({ backend, modelA, modelB, rank: 30, out, edit: { scale: new Map([[0, 1]]) } }),
      /--rank 30 is more than tensor "model\.layers\.0\.self_attn\.k_proj\.weight" \(shape \[24, 48\]\) can hold: at most 24\. Lower --rank, or leave the tensor out with --include/,
    );
    await assert.rejects(access(out), /ENOENT/);
    await assert.rejects(
      extractLora({ modelA, modelB, out: join(dir, 'too-big-extract'), policy: { mode: 'rank', rank: 30 } }),
      /--rank 30 is more than tensor "model\.layers\.\d\.self_attn\.[kv]_proj\.weight" \(shape \[24, 48\]\)/,
    );
  });
});
