/**
 * Chat templates rendered with @huggingface/jinja as transformers renders them. The expected
 * strings are derived by reading the templates (qwen-base's is Qwen3's: a past assistant turn
 * after the last user message gets an empty <think> block; a system message opens the prompt).
 */
import assert from 'node:assert/strict';
import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { InputError } from '../../src/errors.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { tempFolders } from '../helpers/synthetic.js';
import { TINYFAM } from '../helpers/tinyfam.js';

const fresh = tempFolders('loraforge-chat-template-');

describe('applyChatTemplate', () => {
  test("qwen-base's template on two-message conversations", async () => {
    const tok = await loadTokenizer(join(TINYFAM, 'qwen-base'));
    const chat = tok.applyChatTemplate(
      [
        { role: 'user', content: 'Hello' },
        { role: 'assistant', content: 'Hi there' },
      ],
      { addGenerationPrompt: false },
    );
    assert.equal(chat, '<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHi there<|im_end|>\n');
    const prompt = tok.applyChatTemplate(
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hello' },
      ],
      { addGenerationPrompt: true },
    );
    assert.equal(prompt, '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n');
    // the markers are single added tokens: <|im_start|> 151644, <|im_end|> 151645
    assert.deepEqual(tok.encode(prompt).slice(0, 2), [151644, 8948]);
    assert.ok(tok.encode(prompt).includes(151645));
  });

  test('a chat_template.jinja beside the tokenizer, with bos_token and eos_token as the tokenizer config names them', async () => {
    const dir = await fresh('jinja');
    await copyFile(join(TINYFAM, 'llama-base', 'tokenizer.json'), join(dir, 'tokenizer.json'));
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: { content: '</s>' }, add_bos_token: true }));
    await writeFile(join(dir, 'chat_template.jinja'), '{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}');
    const tok = await loadTokenizer(dir);
    assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true }), '<s>[user] Hi</s>[assistant]');
    assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: false }), '<s>[user] Hi</s>');
  });

  test('a folder without a template: an InputError naming the folder', async () => {
    const folder = join(TINYFAM, 'llama-base');
    const tok = await loadTokenizer(folder);
    assert.throws(() => tok.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true }), (err: Error) => {
      assert.ok(err instanceof InputError);
      assert.match(err.message, /llama-base: the tokenizer has no chat template/);
      return true;
    });
  });
});
