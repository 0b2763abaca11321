/**
 * Which EOS separates texts and which ids stop a generation, and where BOS comes from, over the
 * shapes real releases ship (the files disagree: chat tokenizer configs name the turn end as EOS).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InputError } from '../../src/errors.js';
import { resolveSpecialTokens, type TokenizerFiles } from '../../src/tokenizer/special-tokens.js';

const vocab: Record<string, number> = { '<s>': 1, '</s>': 2, '<|endoftext|>': 151643, '<|im_end|>': 151645, '<|eot_id|>': 128009 };
const idOf = (t: string) => vocab[t];
const llamaTemplate = {
  type: 'TemplateProcessing',
  single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
  special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
};
const files = (f: Partial<TokenizerFiles>): TokenizerFiles => ({ folder: '/m', tokenizer: {}, ...f });

describe('resolveSpecialTokens', () => {
  test("EOS: the model's own (config.json) over tokenizer_config.json's chat-turn end; both stop a generation", () => {
    const s = resolveSpecialTokens(files({ config: { eos_token_id: 151643 }, tokenizerConfig: { eos_token: '<|im_end|>', bos_token: null } }), idOf);
    assert.equal(s.eosId, 151643);
    assert.equal(s.sources.eosId, 'config.json eos_token_id');
    assert.deepEqual(s.stopIds, [151643, 151645]);
    assert.deepEqual(s.sources.stopIds, ['config.json eos_token_id', 'tokenizer_config.json eos_token "<|im_end|>"']);
    assert.equal(s.bosId, undefined);
    assert.equal(s.addBos, false);
  });

  test('EOS: generation_config.json first, its first id when it lists several; duplicates stop once', () => {
    const s = resolveSpecialTokens(
      files({ generationConfig: { eos_token_id: [128001, 128009] }, config: { eos_token_id: 128009 }, tokenizerConfig: { eos_token: { content: '<|eot_id|>' } } }),
      idOf,
    );
    assert.equal(s.eosId, 128001);
    assert.equal(s.sources.eosId, 'generation_config.json eos_token_id');
    assert.deepEqual(s.stopIds, [128001, 128009]);
  });

  test("EOS: tokenizer_config.json's when no config gives one; none at all is an InputError", () => {
    assert.equal(resolveSpecialTokens(files({ tokenizerConfig: { eos_token: '</s>' } }), idOf).eosId, 2);
    assert.throws(() => resolveSpecialTokens(files({ tokenizerConfig: { eos_token: '<nope>' } }), idOf), (err: Error) => {
      assert.ok(err instanceof InputError);
      assert.match(err.message, /^\/m: no end-of-sequence token: .*add the model's eos_token_id to config\.json$/);
      return true;
    });
  });

  test('BOS from the post-processor template when no config says otherwise', () => {
    const s = resolveSpecialTokens(files({ tokenizer: { post_processor: { type: 'Sequence', processors: [{ type: 'ByteLevel' }, llamaTemplate] } }, config: { eos_token_id: 2 } }), idOf);
    assert.equal(s.bosId, 1);
    assert.equal(s.addBos, true);
    assert.deepEqual([s.sources.bosId, s.sources.addBos], ['tokenizer.json post_processor', 'tokenizer.json post_processor']);
  });

  test("tokenizer_config.json's add_bos_token overrides the post-processor, both ways", () => {
    const off = resolveSpecialTokens(files({ tokenizer: { post_processor: llamaTemplate }, config: { eos_token_id: 2 }, tokenizerConfig: { add_bos_token: false } }), idOf);
    assert.equal(off.addBos, false);
    assert.equal(off.bosId, 1);
    const on = resolveSpecialTokens(files({ config: { eos_token_id: 2, bos_token_id: 1 }, tokenizerConfig: { add_bos_token: true } }), idOf);
    assert.deepEqual([on.addBos, on.bosId, on.sources.bosId], [true, 1, 'config bos_token_id']);
    assert.throws(() => resolveSpecialTokens(files({ config: { eos_token_id: 2 }, tokenizerConfig: { add_bos_token: true } }), idOf), InputError);
  });
});
