import assert from 'node:assert/strict';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gguf as hfGguf } from '@huggingface/gguf';
import { openGguf } from '../../src/io/gguf.js';
import { createRng } from '../../src/linalg/random.js';
import type { LoraModule } from '../../src/lora/adapter.js';
import { createGgufLoraWriter, ggufLoraTensors, hasTiedEmbeddings } from '../../src/lora/gguf-lora.js';
import type { Matrix } from '../../src/tensor/matrix.js';
import { makeTempDir } from '../helpers/synthetic.js';

const HIDDEN = 16;
const HEADS = 4;
const KV_HEADS = 2;
const HEAD_DIM = HIDDEN / HEADS;
const VOCAB = 40;
const FF = 24;
const LLAMA = {
  architectures: ['LlamaForCausalLM'],
  num_attention_heads: HEADS,
  num_key_value_heads: KV_HEADS,
  hidden_size: HIDDEN,
  tie_word_embeddings: false,
};
const QWEN2 = { ...LLAMA, architectures: ['Qwen2ForCausalLM'] };

function gaussian(rows: number, cols: number, seed: number): Matrix {
  const data = new Float32Array(rows * cols);
  createRng(seed).fillNormal(data);
  return { rows, cols, data };
}

function lora(name: string, out: number, inp: number, rank: number, alpha: number, seed: number, kind: LoraModule['kind'] = 'linear'): LoraModule {
  return { name, kind, A: gaussian(rank, inp, seed), B: gaussian(out, rank, seed + 1), alpha };
}

/** ΔW = s·B·A in f64, the PEFT definition (independent of the writer). */
function peftDelta(m: LoraModule, scaling: number): Float64Array {
  const { A, B } = m;
  const out = new Float64Array(B.rows * A.cols);
  for (let i = 0; i < B.rows; i++)
    for (let k = 0; k < A.rows; k++)
      for (let j = 0; j < A.cols; j++) out[i * A.cols + j]! += scaling * B.data[i * B.cols + k]! * A.data[k * A.cols + j]!;
  return out;
}

/** (rows × r)·(cols × r)ᵀ or (rows × r)·(r × cols), from raw arrays. */
function product(left: Float32Array, rows: number, r: number, right: Float32Array, cols: number, rightTransposed: boolean): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += left[i * r + k]! * (rightTransposed ? right[j * r + k]! : right[k * cols + j]!);
      out[i * cols + j] = s;
    }
  return out;
}

function assertClose(got: Float64Array, want: Float64Array, what: string, tol = 1e-5): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i]! - want[i]!) <= tol * Math.max(1, scale), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

/** Row i of the llama.cpp (GGUF) layout of a Q/K weight holds HF row srcRow(i). */
function hfRowOf(ggufRow: number, headRows: number): number {
  const h = Math.floor(ggufRow / headRows);
  const within = ggufRow % headRows;
  return h * headRows + (within % 2) * (headRows / 2) + Math.floor(within / 2);
}

let dir = '';
before(async () => {
  dir = await makeTempDir('loraforge-gguf-lora-');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeAdapter(name: string, config: Record<string, unknown>, modules: LoraModule[], opts: { useRslora?: boolean; dtype?: 'F32' | 'F16' } = {}): Promise<string> {
  const path = join(dir, name);
  const sink = await createGgufLoraWriter(path, { config, ...opts });
  for (const m of modules) await sink.addModule(m);
  await sink.finish();
  return path;
}

describe('GGUF LoRA writer', () => {
  const modules = [
    lora('model.layers.0.self_attn.q_proj', HIDDEN, HIDDEN, 4, 8, 10),
    lora('model.layers.0.self_attn.k_proj', KV_HEADS * HEAD_DIM, HIDDEN, 2, 16, 20),
    lora('model.layers.1.mlp.down_proj', HIDDEN, FF, 3, 3, 30),
    lora('model.embed_tokens', VOCAB, HIDDEN, 5, 10, 40, 'embedding'),
    lora('lm_head', VOCAB, HIDDEN, 2, 1, 50),
  ];

  it('writes metadata and names/shapes llama.cpp and @huggingface/gguf read', async () => {
    const path = await writeAdapter('names.gguf', LLAMA, modules);
    const parsed = await hfGguf(path, { allowLocalFile: true });
    const meta = parsed.metadata as unknown as Record<string, unknown>;
    assert.equal(meta['general.architecture'], 'llama');
    assert.equal(meta['general.type'], 'adapter');
    assert.equal(meta['adapter.type'], 'lora');
    assert.equal(meta['adapter.lora.alpha'], 0);
    const dims = Object.fromEntries(parsed.tensorInfos.map((t) => [t.name, t.shape.map(Number)]));
    // ggml dims (innermost first): linear lora_a [in, r], lora_b [r, out]; token_embd flipped
    assert.deepEqual(dims, {
      'blk.0.attn_q.weight.lora_a': [HIDDEN, 4],
      'blk.0.attn_q.weight.lora_b': [4, HIDDEN],
      'blk.0.attn_k.weight.lora_a': [HIDDEN, 2],
      'blk.0.attn_k.weight.lora_b': [2, KV_HEADS * HEAD_DIM],
      'blk.1.ffn_down.weight.lora_a': [FF, 3],
      'blk.1.ffn_down.weight.lora_b': [3, HIDDEN],
      'token_embd.weight.lora_a': [5, VOCAB],
      'token_embd.weight.lora_b': [5, HIDDEN],
      'output.weight.lora_a': [HIDDEN, 2],
      'output.weight.lora_b': [2, VOCAB],
    });
    assert.ok(parsed.tensorInfos.every((t) => t.dtype === 0), 'F32 by default');
  });

  for (const useRslora of [false, true]) {
    it(`bakes each module's own scaling into lora_b and permutes Q/K rows (rsLoRA ${useRslora})`, async () => {
      const path = await writeAdapter(`math-${useRslora}.gguf`, LLAMA, modules, { useRslora });
      const file = await openGguf(path);
      try {
        for (const m of modules) {
          const r = m.A.rows;
          const s = useRslora ? m.alpha / Math.sqrt(r) : m.alpha / r;
          const want = peftDelta(m, s); // (out × in) in HF layout
          const gguf = { 'model.embed_tokens': 'token_embd', lm_head: 'output' }[m.name as 'lm_head'] ?? m.name.replace(/^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)$/, (_, l, _g, p) => `blk.${l}.${{ q_proj: 'attn_q', k_proj: 'attn_k', down_proj: 'ffn_down' }[p as 'q_proj']}`);
          const a = await file.read(`${gguf}.weight.lora_a`);
          const b = await file.read(`${gguf}.weight.lora_b`);
          const out = m.B.rows;
          const inp = m.A.cols;
          if (m.kind === 'embedding') {
            // llama.cpp's lookup: ΔE (vocab × hidden) = lora_a (vocab × r) · lora_b (hidden × r)ᵀ
            assertClose(product(a, out, r, b, inp, true), want, `${m.name} ΔE`);
            continue;
          }
          const got = product(b, out, r, a, inp, false); // lora_b · lora_a, GGUF row order
          const nHead = m.name.endsWith('q_proj') ? HEADS : m.name.endsWith('k_proj') ? KV_HEADS : undefined;
          const unpermuted = new Float64Array(got.length);
          for (let row = 0; row < out; row++) {
            const hfRow = nHead === undefined ? row : hfRowOf(row, out / nHead);
            unpermuted.set(got.subarray(row * inp, (row + 1) * inp), hfRow * inp);
          }
          assertClose(unpermuted, want, `${m.name} ΔW`);
          if (nHead !== undefined) {
            // and the permutation really moved rows (the check above would pass vacuously otherwise)
            assert.notDeepEqual(Array.from(got.subarray(0, 2 * inp)), Array.from(want.subarray(0, 2 * inp)));
          }
        }
      } finally {
        await file.close();
      }
    });
  }

  it('does not permute for qwen2 and writes its architecture', async () => {
    const q = lora('model.layers.0.self_attn.q_proj', HIDDEN, HIDDEN, 3, 6, 60);
    const path = await writeAdapter('qwen2.gguf', QWEN2, [q]);
    const file = await openGguf(path);
    try {
      assert.equal(file.kv.get('general.architecture'), 'qwen2');
      const got = product(await file.read('blk.0.attn_q.weight.lora_b'), HIDDEN, 3, await file.read('blk.0.attn_q.weight.lora_a'), HIDDEN, false);
      assertClose(got, peftDelta(q, 2), 'qwen2 q ΔW');
    } finally {
      await file.close();
    }
  });

  it('stores F16 when asked and folds an EDoRA-style latent without magnitude into B', async () => {
    const m = { ...lora('model.layers.0.mlp.up_proj', FF, HIDDEN, 3, 3, 70), latent: gaussian(3, 3, 71) };
    const path = await writeAdapter('f16.gguf', LLAMA, [m], { dtype: 'F16' });
    const parsed = await hfGguf(path, { allowLocalFile: true });
    assert.ok(parsed.tensorInfos.every((t) => t.dtype === 1), 'F16');
    const file = await openGguf(path);
    try {
      const got = product(await file.read('blk.0.ffn_up.weight.lora_b'), FF, 3, await file.read('blk.0.ffn_up.weight.lora_a'), HIDDEN, false);
      // B·R·A with R applied independently here
      const BR = { rows: FF, cols: 3, data: Float32Array.from(product(m.B.data, FF, 3, m.latent.data, 3, false)) };
      assertClose(got, peftDelta({ ...m, B: BR }, 1), 'B·R·A', 3e-3);
    } finally {
      await file.close();
    }
  });
});

describe('GGUF LoRA writer refuses what llama.cpp cannot apply', () => {
  const tied = { ...LLAMA, tie_word_embeddings: true };

  it('knows which models tie their embeddings', () => {
    assert.equal(hasTiedEmbeddings('llama', LLAMA), false);
    assert.equal(hasTiedEmbeddings('llama', tied), true);
    assert.equal(hasTiedEmbeddings('llama', { architectures: ['LlamaForCausalLM'] }), false, 'LlamaConfig defaults to untied');
    assert.equal(hasTiedEmbeddings('gemma2', { architectures: ['Gemma2ForCausalLM'] }), true, 'Gemma2 GGUFs have no output tensor');
  });

  it('rejects lm_head on a tied model (its GGUF has no output tensor)', () => {
    assert.throws(() => ggufLoraTensors(lora('lm_head', VOCAB, HIDDEN, 2, 2, 1), { config: tied }), /lm_head.*tie_word_embeddings.*no "output" tensor/s);
    assert.throws(() => ggufLoraTensors(lora('lm_head', VOCAB, HIDDEN, 2, 2, 1), { config: { architectures: ['Gemma2ForCausalLM'] } }), /lm_head/);
  });

  it('rejects a token_embd LoRA on a tied model (llama.cpp would apply it to the output projection too)', () => {
    assert.throws(() => ggufLoraTensors(lora('model.embed_tokens', VOCAB, HIDDEN, 2, 2, 1, 'embedding'), { config: tied }), /ties the embeddings to lm_head/);
  });

  it('rejects DoRA, unmapped modules and full tensors with actionable messages', async () => {
    const dora = { ...lora('model.layers.0.self_attn.v_proj', 8, HIDDEN, 2, 2, 1), magnitude: new Float32Array(8) };
    assert.throws(() => ggufLoraTensors(dora, { config: LLAMA }), /DoRA.*plain LoRA/);
    assert.throws(
      () => ggufLoraTensors(lora('model.layers.0.mlp.experts.0.w1', 8, HIDDEN, 2, 2, 1), { config: LLAMA }),
      /"model\.layers\.0\.mlp\.experts\.0\.w1" has no llama\.cpp tensor for architecture "llama"/,
    );
    const path = join(dir, 'full.gguf');
    const sink = await createGgufLoraWriter(path, { config: LLAMA });
    await assert.rejects(sink.addFull('model.norm.weight', [HIDDEN], new Float32Array(HIDDEN)), /modules_to_save.*--format peft/);
    await sink.abort();
  });

  it('leaves nothing behind on abort or when no module was added', async () => {
    const sub = join(dir, 'atomic');
    await (await import('node:fs/promises')).mkdir(sub);
    const aborted = await createGgufLoraWriter(join(sub, 'a.gguf'), { config: LLAMA });
    await aborted.addModule(lora('model.layers.0.self_attn.o_proj', HIDDEN, HIDDEN, 2, 2, 1));
    await aborted.abort();
    const empty = await createGgufLoraWriter(join(sub, 'b.gguf'), { config: LLAMA });
    await assert.rejects(empty.finish(), /no LoRA modules/);
    assert.deepEqual(await readdir(sub), []);
  });
});
