/**
 * The tokenizer on tinyfam's real Llama (Mistral-7B SentencePiece-BPE) and Qwen (byte-level BPE)
 * tokenizers, against the token streams and greedy ids its PyTorch references were computed on.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { loadTokenizer, type Tokenizer } from '../../src/tokenizer/tokenizer.js';
import { TINYFAM, tinyfamLines, tinyfamReference, type TinyfamReference } from '../helpers/tinyfam.js';

const WINDOW = 128;

/** The README's stream: every sentence encoded without special tokens, each followed by the EOS. */
function stream(tok: Tokenizer, lines: string[]): number[] {
  const out: number[] = [];
  for (const line of lines) out.push(...tok.encode(line), tok.eosId);
  return out;
}

const families = [
  { model: 'llama-base', family: 'llama' as const, vocabSize: 32000, bosId: 1, addBos: true, eosId: 2, stopIds: [2] },
  { model: 'qwen-base', family: 'qwen' as const, vocabSize: 151669, bosId: undefined, addBos: false, eosId: 151643, stopIds: [151643, 151645] },
];

for (const f of families) {
  describe(`tinyfam ${f.model}`, () => {
    let tok: Tokenizer;
    let ref: TinyfamReference;
    before(async () => {
      tok = await loadTokenizer(join(TINYFAM, f.model));
      ref = await tinyfamReference();
    });

    test('special ids and their sources', () => {
      assert.equal(tok.vocabSize, f.vocabSize);
      assert.equal(tok.bosId, f.bosId);
      assert.equal(tok.addBos, f.addBos);
      assert.equal(tok.eosId, f.eosId);
      // the model's EOS (generation_config.json), not tokenizer_config.json's <|im_end|> for qwen
      assert.equal(tok.sources.eosId, 'generation_config.json eos_token_id');
      assert.deepEqual(tok.stopIds, f.stopIds);
    });

    test('the eval-a.txt stream and its first window match reference.json', async () => {
      const expected = ref.perplexity['eval-a.txt']![f.family];
      const ids = stream(tok, await tinyfamLines('eval-a.txt'));
      assert.equal(ids.length, expected.stream_tokens);
      assert.equal(Math.floor(ids.length / WINDOW), expected.windows);
      const window = ids.slice(0, WINDOW);
      assert.deepEqual(f.addBos ? [tok.bosId!, ...window] : window, expected.first_window_ids);
    });

    test('greedy input ids of every prompt, and decoding of the greedy outputs', async () => {
      const greedy = ref.greedy.models[f.model]!;
      assert.deepEqual(await tinyfamLines('prompts.txt'), ref.greedy.prompts);
      assert.equal(greedy.length, ref.greedy.prompts.length);
      for (const g of greedy) {
        // BOS first where the tokenizer adds one: exactly the references' input
        assert.deepEqual(tok.encode(g.prompt, { addSpecialTokens: true }), g.input_ids, g.prompt);
        assert.equal(tok.decode(g.new_ids), g.text, g.prompt);
        assert.equal(tok.decode([...g.input_ids, ...g.new_ids], { skipSpecialTokens: true }), g.full_text, g.prompt);
      }
      // the outputs cross sentence ends, so the EOS text shows up when special tokens are kept
      assert.ok(greedy.some((g) => g.text.includes(f.family === 'llama' ? '</s>' : '<|endoftext|>')));
    });
  });
}
