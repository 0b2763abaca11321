import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FAMILIES, familyExpertLayout, familyOf, GGUF_ARCHS, ggufFacts, modelConfig, TO_GGUF_ARCHS } from '../../src/arch/index.js';
import { ggufHparamKvs } from '../../src/to-gguf/gguf-hparams.js';
import { ggufArchFromConfig, hfToGgufTensorName, needsQkPermute } from '../../src/lora/gguf-names.js';
import { hasTiedEmbeddings } from '../../src/lora/gguf-lora.js';

describe('family registry', () => {
  it('no two families claim one model_type or architecture', () => {
    const types = FAMILIES.flatMap((f) => f.modelTypes);
    const classes = FAMILIES.flatMap((f) => f.architectures);
    assert.equal(new Set(types).size, types.length);
    assert.equal(new Set(classes).size, classes.length);
  });

  it('finds every family by each of its architectures and model types', () => {
    for (const f of FAMILIES) {
      for (const a of f.architectures) assert.equal(familyOf(modelConfig({ architectures: [a] })), f, a);
      for (const t of f.modelTypes) assert.equal(familyOf(modelConfig({ model_type: t })), f, t);
    }
  });

  it('every GGUF family round-trips its names: each HF module has one GGUF name and back', () => {
    for (const f of FAMILIES) {
      if (!f.gguf) continue;
      const arch = f.gguf.arch;
      for (const a of f.architectures) assert.equal(ggufArchFromConfig({ architectures: [a] }), arch, a);
      for (const t of f.modelTypes) assert.equal(ggufArchFromConfig({ model_type: t }), arch, t);
      const forward = new Map<string, string>();
      for (const mod of Object.keys(f.gguf.blockNames)) {
        forward.set(`model.layers.7.${mod}.weight`, hfToGgufTensorName(arch, `model.layers.7.${mod}.weight`)!);
      }
      for (const mod of Object.keys(f.gguf.globalNames)) forward.set(`${mod}.weight`, hfToGgufTensorName(arch, `${mod}.weight`)!);
      const back = new Map([...forward].map(([hf, g]) => [g, hf]));
      assert.equal(back.size, forward.size, `${f.name}: two HF modules share a GGUF name`);
      for (const [g, hf] of back) {
        assert.ok(g.endsWith('.weight') && (g.startsWith('blk.7.') || !hf.includes('layers')), `${f.name}: ${hf} → ${g}`);
        assert.equal(forward.get(hf), g);
      }
    }
  });

  it('lists the GGUF archs, the to-gguf ones and their facts', () => {
    assert.deepEqual(GGUF_ARCHS, ['llama', 'qwen2', 'qwen3', 'qwen3moe', 'gemma2']);
    assert.deepEqual(TO_GGUF_ARCHS, ['llama', 'qwen2', 'qwen3', 'qwen3moe', 'gemma2']);
    assert.equal(ggufFacts('llama').llamaConverter, true);
    assert.equal(hasTiedEmbeddings('gemma2', {}), true);
    assert.equal(hasTiedEmbeddings('qwen2', {}), false);
  });

  it('gemma2: whole models (its own KV set) and GGUF LoRA names', () => {
    const base = { num_hidden_layers: 1, hidden_size: 8, num_attention_heads: 2, head_dim: 4, max_position_embeddings: 16, intermediate_size: 16, rms_norm_eps: 1e-6 };
    assert.ok(ggufHparamKvs('cfg', 'gemma2', base, 'F16').some(([k]) => k === 'gemma2.attn_logit_softcapping'));
    assert.equal(ggufFacts('gemma2').normWeightsPlusOne, true);
    assert.equal(hfToGgufTensorName('gemma2', 'model.layers.0.self_attn.q_proj.weight'), 'blk.0.attn_q.weight');
  });

  it('an unknown family gets the generic behaviour, or a refusal naming it where names are needed', () => {
    const phi3 = modelConfig({ architectures: ['Phi3ForCausalLM'], model_type: 'phi3' });
    assert.equal(familyOf(phi3), undefined);
    assert.equal(familyExpertLayout(phi3), 'out-in');
    assert.equal(familyExpertLayout(modelConfig({ model_type: 'gpt_oss' })), 'in-out');
    assert.throws(() => ggufFacts('phi3'), /"phi3" is not supported for name mapping; supported: llama, qwen2, qwen3, qwen3moe, gemma2/);
    assert.throws(() => needsQkPermute('phi3'), /"phi3"/);
    assert.throws(() => ggufArchFromConfig({ architectures: ['GptOssForCausalLM'] }), /"GptOssForCausalLM" has no GGUF name mapping/);
    assert.equal(hfToGgufTensorName('llama', 'constructor.weight'), undefined, 'no inherited object keys');
    assert.equal(hfToGgufTensorName('llama', 'model.layers.0.constructor.weight'), undefined);
  });
});
