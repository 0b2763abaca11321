import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADAPTER_FILES, inFolder, MODEL_FILES } from '../../../src/io/hub/index.js';

describe('file choice', () => {
  it('MODEL_FILES takes config, tokenizer, safetensors and small side files, never pickles or other formats', () => {
    const yes = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'tokenizer.model', 'vocab.json', 'merges.txt',
      'added_tokens.json', 'special_tokens_map.json', 'chat_template.jinja', 'chat_template.json', 'model.safetensors.index.json',
      'model-00001-of-00002.safetensors', 'LICENSE', 'LICENSE.txt', 'README.md', 'modeling_x.py', 'tool_use.jinja'];
    const no = ['pytorch_model.bin', 'pytorch_model.bin.index.json', 'model.pth', 'model.pt', 'model.gguf', 'onnx/model.onnx', 'model.onnx',
      'consolidated.safetensors', 'original/consolidated.00.pth', 'sub/config.json', '.gitattributes', 'flax_model.msgpack'];
    for (const p of yes) assert.ok(MODEL_FILES(p), p);
    for (const p of no) assert.ok(!MODEL_FILES(p), p);
  });

  it('ADAPTER_FILES takes a PEFT folder; inFolder moves a choice into a subfolder', () => {
    assert.ok(ADAPTER_FILES('adapter_config.json') && ADAPTER_FILES('adapter_model.safetensors') && !ADAPTER_FILES('adapter_model.bin'));
    const sub = inFolder('loras/math', ADAPTER_FILES);
    assert.ok(sub('loras/math/adapter_model.safetensors'));
    assert.ok(!sub('adapter_model.safetensors') && !sub('loras/mathx/adapter_config.json'));
  });
});
