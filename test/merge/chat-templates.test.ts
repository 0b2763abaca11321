/**
 * chat_template: <name> — each built-in rendered with the project's renderer (@huggingface/jinja)
 * against prompts written out by hand from the format mergekit's template of that name renders
 * under transformers; and how tokenizerFiles resolves a name, a template given as text, and a typo.
 */
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UsageError } from '../../src/errors.js';
import { BUILTIN_CHAT_TEMPLATE_NAMES, builtinChatTemplate } from '../../src/merge/chat-templates.js';
import { tokenizerFiles } from '../../src/merge/tokenizer-files.js';
import { chatTemplateRenderer, type ChatMessage } from '../../src/tokenizer/chat-template.js';
import { makeTempDir } from '../helpers/synthetic.js';

const CHAT: ChatMessage[] = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello!' },
  { role: 'user', content: 'Bye' },
];
const NO_SYSTEM = CHAT.slice(1);

function render(name: string, messages: ChatMessage[], addGenerationPrompt: boolean): string {
  const text = builtinChatTemplate(name);
  assert.ok(text, name);
  return chatTemplateRenderer({ text, file: name }, { bos_token: '<s>', eos_token: '</s>' })(messages, addGenerationPrompt);
}

/** name → [messages, prompt without, prompt with the generation prompt] */
const EXPECTED: Record<string, Array<[ChatMessage[], string, string]>> = {
  chatml: [
    [
      CHAT,
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n',
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n',
    ],
  ],
  llama3: [
    [
      CHAT,
      '<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\n<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\n' +
        '<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>\n<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>\n',
      '<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\n<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\n' +
        '<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>\n<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>\n' +
        '<|start_header_id|>assistant<|end_header_id|>\n\n',
    ],
  ],
  alpaca: [
    [
      CHAT,
      'Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!\n\n### Instruction:\nBye',
      'Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello!\n\n### Instruction:\nBye### Response:\n',
    ],
    [
      [{ role: 'user', content: ' Sum these \n' }, { role: 'user_context', content: '1 2' }, { role: 'assistant', content: '3' }],
      '\n\n### Instruction:\nSum these\n\n### Input:\n1 2\n\n### Response:\n3',
      '\n\n### Instruction:\nSum these\n\n### Input:\n1 2\n\n### Response:\n3',
    ],
  ],
  exaone: [
    [
      CHAT,
      '    [|system|]Be brief.\n        [|endofturn|]\n\n    [|user|]Hi\n        \n\n    [|assistant|]Hello!\n        [|endofturn|]\n\n    [|user|]Bye\n        \n\n',
      '    [|system|]Be brief.\n        [|endofturn|]\n\n    [|user|]Hi\n        \n\n    [|assistant|]Hello!\n        [|endofturn|]\n\n    [|user|]Bye\n        \n\n    [|assistant|]\n',
    ],
    [
      NO_SYSTEM,
      '        [|system|][|endofturn|]\n\n    [|user|]Hi\n        \n\n    [|assistant|]Hello!\n        [|endofturn|]\n\n    [|user|]Bye\n        \n\n',
      '        [|system|][|endofturn|]\n\n    [|user|]Hi\n        \n\n    [|assistant|]Hello!\n        [|endofturn|]\n\n    [|user|]Bye\n        \n\n    [|assistant|]\n',
    ],
  ],
  mistral: [
    [CHAT, '<s> [INST] Be brief.\n\nHi [/INST] Hello!</s> [INST] Bye [/INST]', '<s> [INST] Be brief.\n\nHi [/INST] Hello!</s> [INST] Bye [/INST]'],
    [NO_SYSTEM, '<s> [INST] Hi [/INST] Hello!</s> [INST] Bye [/INST]', '<s> [INST] Hi [/INST] Hello!</s> [INST] Bye [/INST]'],
  ],
};

describe('built-in chat templates', () => {
  it('are the names mergekit ships', () => {
    assert.deepEqual(BUILTIN_CHAT_TEMPLATE_NAMES, ['alpaca', 'chatml', 'exaone', 'llama3', 'mistral']);
    assert.equal(builtinChatTemplate('toString'), undefined);
  });

  for (const name of BUILTIN_CHAT_TEMPLATE_NAMES) {
    it(`${name} renders mergekit's prompts, with and without add_generation_prompt`, () => {
      for (const [messages, without, withPrompt] of EXPECTED[name]) {
        assert.equal(render(name, messages, false), without);
        assert.equal(render(name, messages, true), withPrompt);
      }
    });
  }

  it('mistral refuses turns that do not alternate, as mergekit\'s does', () => {
    assert.throws(() => render('mistral', [CHAT[1], CHAT[3]], false), /alternate|in turn/);
  });
});

describe('tokenizerFiles: chat_template', () => {
  let donor: string;
  before(async () => {
    donor = await makeTempDir('loraforge-chat-tpl-');
    await writeFile(join(donor, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', chat_template: 'the donor template {{ messages }}' }));
    await writeFile(join(donor, 'chat_template.jinja'), 'the donor side file {{ messages }}');
  });
  after(() => rm(donor, { recursive: true, force: true }));

  const files = (value: string) => tokenizerFiles({ chatTemplate: { value, where: 'merge.yml:7' }, donor, models: [donor] });
  const written = async (value: string) => JSON.parse(String((await files(value)).own['tokenizer_config.json'])).chat_template;

  it('a built-in name writes that template into tokenizer_config.json and leaves the side file out', async () => {
    const out = await files('llama3');
    assert.equal(JSON.parse(String(out.own['tokenizer_config.json'])).chat_template, builtinChatTemplate('llama3'));
    assert.equal(JSON.parse(String(out.own['tokenizer_config.json'])).bos_token, '<s>');
    assert.equal(out.own['chat_template.jinja'], undefined);
  });

  it('a template given as text is written as it is', async () => {
    const text = '  {% for m in messages %}{{ m.content }}{% endfor %}\n';
    assert.equal(await written(text), text);
  });

  it('an unknown name, or text too short or without "{", is a usage error at the YAML line listing the names', async () => {
    for (const value of ['llama-3', 'ChatML', '{{ messages }}', 'a long sentence that has no braces']) {
      await assert.rejects(files(value), (err: Error) => {
        assert.ok(err instanceof UsageError, value);
        assert.match(err.message, /^merge\.yml:7: unknown chat_template ".*": use auto, one of alpaca, chatml, exaone, llama3, mistral, or a Jinja template/);
        return true;
      });
    }
  });
});
