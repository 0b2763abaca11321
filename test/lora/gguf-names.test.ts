import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ggufArchFromConfig,
  hfModuleToGguf,
  hfToGgufTensorName,
  needsQkPermute,
  permuteQkRows,
  qkPermuteHeadCount,
} from '../../src/lora/gguf-names.js';

describe('ggufArchFromConfig', () => {
  it('maps config.json architectures the way llama.cpp registers them', () => {
    const cases: Array<[string, string]> = [
      ['LlamaForCausalLM', 'llama'],
      ['MistralForCausalLM', 'llama'],
      ['MixtralForCausalLM', 'llama'],
      ['Qwen2ForCausalLM', 'qwen2'],
      ['Qwen3ForCausalLM', 'qwen3'],
      ['Gemma2ForCausalLM', 'gemma2'],
    ];
    for (const [hf, gguf] of cases) assert.equal(ggufArchFromConfig({ architectures: [hf], model_type: 'ignored' }), gguf, hf);
  });

  it('prefers text_config.architectures and falls back to model_type', () => {
    assert.equal(ggufArchFromConfig({ architectures: ['SomeVLM'], text_config: { architectures: ['Qwen2ForCausalLM'] } }), 'qwen2');
    assert.equal(ggufArchFromConfig({ model_type: 'mistral' }), 'llama');
    assert.equal(ggufArchFromConfig({ model_type: 'gemma2' }), 'gemma2');
  });

  it('names the unknown architecture and lists the supported ones', () => {
    assert.throws(
      () => ggufArchFromConfig({ architectures: ['Phi3ForCausalLM'] }),
      (e: Error) => /"Phi3ForCausalLM"/.test(e.message) && /LlamaForCausalLM/.test(e.message) && /Gemma2ForCausalLM/.test(e.message),
    );
    assert.throws(() => ggufArchFromConfig({ model_type: 'gpt2' }), /"gpt2".*supported: LlamaForCausalLM/);
    assert.throws(() => ggufArchFromConfig({}), /cannot tell the architecture/);
  });
});

describe('HF → GGUF tensor names', () => {
  const common: Array<[string, string]> = [
    ['model.embed_tokens.weight', 'token_embd.weight'],
    ['model.norm.weight', 'output_norm.weight'],
    ['model.layers.0.self_attn.q_proj.weight', 'blk.0.attn_q.weight'],
    ['model.layers.1.self_attn.k_proj.weight', 'blk.1.attn_k.weight'],
    ['model.layers.12.self_attn.v_proj.weight', 'blk.12.attn_v.weight'],
    ['model.layers.31.self_attn.o_proj.weight', 'blk.31.attn_output.weight'],
    ['model.layers.2.mlp.gate_proj.weight', 'blk.2.ffn_gate.weight'],
    ['model.layers.2.mlp.up_proj.weight', 'blk.2.ffn_up.weight'],
    ['model.layers.2.mlp.down_proj.weight', 'blk.2.ffn_down.weight'],
    ['model.layers.5.input_layernorm.weight', 'blk.5.attn_norm.weight'],
  ];

  it('llama / mistral', () => {
    for (const [hf, g] of common) assert.equal(hfToGgufTensorName('llama', hf), g, hf);
    assert.equal(hfToGgufTensorName('llama', 'lm_head.weight'), 'output.weight');
    assert.equal(hfToGgufTensorName('llama', 'model.layers.5.post_attention_layernorm.weight'), 'blk.5.ffn_norm.weight');
    assert.equal(hfToGgufTensorName('llama', 'model.layers.3.block_sparse_moe.gate.weight'), 'blk.3.ffn_gate_inp.weight');
    // Per-expert Mixtral weights are stacked into one 3-D tensor by the converter: no 1:1 name.
    assert.equal(hfToGgufTensorName('llama', 'model.layers.3.block_sparse_moe.experts.0.w1.weight'), undefined);
    assert.equal(hfToGgufTensorName('llama', 'model.layers.0.self_attn.q_norm.weight'), undefined);
  });

  it('qwen2 (with biases)', () => {
    for (const [hf, g] of common) assert.equal(hfToGgufTensorName('qwen2', hf), g, hf);
    assert.equal(hfToGgufTensorName('qwen2', 'model.layers.4.self_attn.q_proj.bias'), 'blk.4.attn_q.bias');
    assert.equal(hfToGgufTensorName('qwen2', 'model.layers.4.self_attn.k_proj.bias'), 'blk.4.attn_k.bias');
    assert.equal(hfToGgufTensorName('qwen2', 'model.layers.4.self_attn.v_proj.bias'), 'blk.4.attn_v.bias');
    assert.equal(hfToGgufTensorName('qwen2', 'model.layers.4.post_attention_layernorm.weight'), 'blk.4.ffn_norm.weight');
    assert.equal(hfToGgufTensorName('qwen2', 'lm_head.weight'), 'output.weight');
  });

  it('qwen3 (q/k norms)', () => {
    for (const [hf, g] of common) assert.equal(hfToGgufTensorName('qwen3', hf), g, hf);
    assert.equal(hfToGgufTensorName('qwen3', 'model.layers.7.self_attn.q_norm.weight'), 'blk.7.attn_q_norm.weight');
    assert.equal(hfToGgufTensorName('qwen3', 'model.layers.7.self_attn.k_norm.weight'), 'blk.7.attn_k_norm.weight');
    assert.equal(hfToGgufTensorName('qwen3', 'model.layers.7.post_attention_layernorm.weight'), 'blk.7.ffn_norm.weight');
  });

  it('gemma2 (sandwich norms, no output tensor)', () => {
    for (const [hf, g] of common) assert.equal(hfToGgufTensorName('gemma2', hf), g, hf);
    assert.equal(hfToGgufTensorName('gemma2', 'model.layers.0.post_attention_layernorm.weight'), 'blk.0.post_attention_norm.weight');
    assert.equal(hfToGgufTensorName('gemma2', 'model.layers.0.pre_feedforward_layernorm.weight'), 'blk.0.ffn_norm.weight');
    assert.equal(hfToGgufTensorName('gemma2', 'model.layers.0.post_feedforward_layernorm.weight'), 'blk.0.post_ffw_norm.weight');
    assert.equal(hfToGgufTensorName('gemma2', 'lm_head.weight'), undefined);
    assert.equal(hfToGgufTensorName('llama', 'model.layers.0.pre_feedforward_layernorm.weight'), undefined);
  });

  it('module paths without suffix, and names llama.cpp does not have', () => {
    assert.equal(hfModuleToGguf('llama', 'model.layers.10.self_attn.o_proj'), 'blk.10.attn_output');
    assert.equal(hfModuleToGguf('gemma2', 'model.embed_tokens'), 'token_embd');
    assert.equal(hfModuleToGguf('qwen2', 'lm_head'), 'output');
    for (const bad of [
      'model.layers.01.self_attn.q_proj.weight',
      'model.layers.x.self_attn.q_proj.weight',
      'model.layers.0.self_attn.rotary_emb.inv_freq',
      'model.layers.0.self_attn.q_proj',
      'base_model.model.model.layers.0.self_attn.q_proj.weight',
      'model.layers.0.self_attn.q_proj.lora_A.weight',
    ]) {
      assert.equal(hfToGgufTensorName('llama', bad), undefined, bad);
    }
  });

  it('rejects an unsupported arch by name', () => {
    assert.throws(() => hfModuleToGguf('phi3', 'lm_head'), /"phi3".*llama, qwen2, qwen3, qwen3moe, gemma2/);
    assert.throws(() => needsQkPermute('falcon'), /"falcon"/);
  });
});

/** Row-major N-d array helpers, written generically so the permutation is checked independently. */
function stridesOf(shape: number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) s[d] = s[d + 1]! * shape[d + 1]!;
  return s;
}
/** numpy: a.reshape(shape).swapaxes(ax0, ax1), materialised row-major. */
function swapaxes(data: Float32Array, shape: number[], ax0: number, ax1: number): Float32Array {
  const inStrides = stridesOf(shape);
  const outShape = [...shape];
  [outShape[ax0], outShape[ax1]] = [shape[ax1]!, shape[ax0]!];
  const outStrides = stridesOf(outShape);
  const out = new Float32Array(data.length);
  for (let o = 0; o < data.length; o++) {
    let rem = o;
    let src = 0;
    for (let d = 0; d < outShape.length; d++) {
      const idx = Math.floor(rem / outStrides[d]!);
      rem -= idx * outStrides[d]!;
      const inAxis = d === ax0 ? ax1 : d === ax1 ? ax0 : d;
      src += idx * inStrides[inAxis]!;
    }
    out[o] = data[src]!;
  }
  return out;
}
function llamaPermuteReference(data: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  return swapaxes(data, [nHead, 2, rows / nHead / 2, cols], 1, 2);
}

function rowIds(rows: number, cols: number): Float32Array {
  return Float32Array.from({ length: rows * cols }, (_, k) => Math.floor(k / cols) * 1000 + (k % cols));
}

describe('Q/K permutation', () => {
  it('only llama permutes', () => {
    assert.equal(needsQkPermute('llama'), true);
    for (const a of ['qwen2', 'qwen3', 'gemma2']) assert.equal(needsQkPermute(a), false, a);
  });

  it('matches a known small case (2 heads of 4 rows)', () => {
    const out = permuteQkRows(Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]), 8, 1, 2);
    assert.deepEqual(Array.from(out), [0, 2, 1, 3, 4, 6, 5, 7]);
  });

  it('matches numpy reshape/swapaxes/reshape for several shapes', () => {
    for (const [rows, cols, nHead] of [
      [8, 3, 2],
      [64, 5, 4],
      [96, 7, 8],
      [128, 1, 32],
      [12, 2, 1],
    ] as const) {
      const data = rowIds(rows, cols);
      assert.deepEqual(permuteQkRows(data, rows, cols, nHead), llamaPermuteReference(data, rows, cols, nHead), `${rows}x${cols}/${nHead}`);
    }
  });

  it('is a row permutation with a working inverse', () => {
    const rows = 48;
    const cols = 3;
    const nHead = 4;
    const data = rowIds(rows, cols);
    const out = permuteQkRows(data, rows, cols, nHead);
    const seen = new Set<number>();
    for (let r = 0; r < rows; r++) {
      const id = out[r * cols]! / 1000;
      for (let c = 0; c < cols; c++) assert.equal(out[r * cols + c], id * 1000 + c, 'rows move whole');
      seen.add(id);
    }
    assert.equal(seen.size, rows);
    // Inverse: within each head, even rows go back to the first half, odd rows to the second.
    const d = rows / nHead;
    const back = new Float32Array(data.length);
    for (let r = 0; r < rows; r++) {
      const h = Math.floor(r / d);
      const k = r % d;
      const src = h * d + (k < d / 2 ? 2 * k : 2 * (k - d / 2) + 1);
      back.set(out.subarray(src * cols, src * cols + cols), r * cols);
    }
    assert.deepEqual(back, data);
  });

  it('permuting LoRA B rows equals permuting the rows of B·A', () => {
    const out = 16;
    const r = 3;
    const inF = 5;
    const nHead = 2;
    const B = Float32Array.from({ length: out * r }, (_, k) => Math.sin(k + 1));
    const A = Float32Array.from({ length: r * inF }, (_, k) => Math.cos(k + 2));
    const matmul = (x: Float32Array) => {
      const y = new Float32Array(out * inF);
      for (let i = 0; i < out; i++) for (let j = 0; j < inF; j++) {
        let s = 0;
        for (let k = 0; k < r; k++) s += x[i * r + k]! * A[k * inF + j]!;
        y[i * inF + j] = s;
      }
      return y;
    };
    assert.deepEqual(matmul(permuteQkRows(B, out, r, nHead)), permuteQkRows(matmul(B), out, inF, nHead));
  });

  it('rejects shapes that cannot be split into heads', () => {
    assert.throws(() => permuteQkRows(new Float32Array(12), 6, 2, 2), /6 rows cannot be split into 2 heads/);
    assert.throws(() => permuteQkRows(new Float32Array(5), 6, 1, 3), /5 values do not form a 6×1 matrix/);
  });

  it('picks the head count per module (GQA: k_proj uses num_key_value_heads)', () => {
    const config = { num_attention_heads: 32, num_key_value_heads: 8 };
    assert.equal(qkPermuteHeadCount('llama', config, 'model.layers.0.self_attn.q_proj'), 32);
    assert.equal(qkPermuteHeadCount('llama', config, 'model.layers.0.self_attn.k_proj'), 8);
    assert.equal(qkPermuteHeadCount('llama', config, 'model.layers.0.self_attn.v_proj'), undefined);
    assert.equal(qkPermuteHeadCount('qwen2', config, 'model.layers.0.self_attn.q_proj'), undefined);
    assert.equal(qkPermuteHeadCount('llama', { num_attention_heads: 12 }, 'model.layers.0.self_attn.k_proj'), 12);
    assert.throws(() => qkPermuteHeadCount('llama', {}, 'model.layers.0.self_attn.q_proj'), /num_attention_heads is missing/);
  });
});
