/**
 * mergekit's built-in chat templates (chat_template: <name>), in our own Jinja: each renders, for
 * system / user / assistant conversations with and without add_generation_prompt, the same prompt
 * as mergekit's file of that name (mergekit/_data/chat_templates/<name>.jinja) does under
 * transformers' apply_chat_template (trim_blocks and lstrip_blocks on). Ours keep all text inside
 * {{ }} so they render the same whatever those settings are (transformers, @huggingface/jinja, llama.cpp).
 */
import { UsageError } from '../errors.js';

/** ChatML: <|im_start|>role\ncontent<|im_end|>\n per message; no BOS. */
const CHATML =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * Llama 3 headers, BOS before the first message, content trimmed. mergekit's template ends every
 * <|eot_id|> with a newline (Meta's own does not); kept, so the prompts match mergekit's.
 */
const LLAMA3 =
  "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}" +
  "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/**
 * Alpaca: the last system message (trimmed) and a blank line, then "### Instruction:" (user),
 * "### Response:" (assistant), "### Input:" (user_context) sections separated by a blank line; other
 * roles print nothing. As mergekit's renders it, the generation prompt follows the last message with
 * no blank line ("…question### Response:\n"), and only when that message is not the assistant's.
 */
const ALPACA =
  "{% set systems = messages | selectattr('role', 'equalto', 'system') | list %}" +
  "{% if systems %}{{ (systems | last)['content'] | trim }}{% endif %}{{ '\\n\\n' }}" +
  '{% for message in messages %}' +
  "{% if message['role'] == 'user' %}{% set head = '### Instruction:\\n' %}" +
  "{% elif message['role'] == 'assistant' %}{% set head = '### Response:\\n' %}" +
  "{% elif message['role'] == 'user_context' %}{% set head = '### Input:\\n' %}" +
  "{% else %}{% set head = '' %}{% endif %}" +
  "{% if head %}{{ head + (message['content'] | trim) }}{% if not loop.last %}{{ '\\n\\n' }}{% endif %}{% endif %}" +
  '{% endfor %}' +
  "{% if add_generation_prompt and (messages | last)['role'] != 'assistant' %}{{ '### Response:\\n' }}{% endif %}";

/**
 * EXAONE's [|role|] markers: user turns end with a newline, the others with [|endofturn|]\n, and an
 * empty system turn comes first when the conversation has none. mergekit's file is indented, and
 * trim_blocks / lstrip_blocks do not strip the indent or line end around {{ }} lines, so its prompts
 * carry 4 or 8 spaces before each marker and an extra newline after each turn; reproduced here so a
 * merge's prompts match mergekit's (paste EXAONE's own template for the plain format).
 */
const EXAONE =
  '{% for message in messages %}' +
  "{% if loop.first and message['role'] != 'system' %}{{ '        [|system|][|endofturn|]\\n\\n' }}{% endif %}" +
  "{{ '    [|' + message['role'] + '|]' + message['content'] + '\\n' }}" +
  "{% if message['role'] == 'user' %}{{ '        \\n\\n' }}{% else %}{{ '        [|endofturn|]\\n\\n' }}{% endif %}" +
  '{% endfor %}' +
  "{% if add_generation_prompt %}{{ '    [|assistant|]\\n' }}{% endif %}";

/**
 * Mistral [INST]: BOS, then " [INST] user [/INST]" and " assistant</s>" turns; a first system message
 * goes before the first user message with a blank line. No generation prompt (the prompt already
 * ends with [/INST]); roles that do not alternate user/assistant are an error, as in mergekit's.
 */
const MISTRAL =
  "{% set system = none %}{% set turns = messages %}{% if messages and messages[0]['role'] == 'system' %}" +
  "{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}{% endif %}" +
  '{{ bos_token }}{% for message in turns %}' +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('the mistral template needs user and assistant turns in turn, after an optional first system message') }}{% endif %}" +
  "{% if message['role'] == 'user' %}{{ ' [INST] ' }}{% if loop.first and system is not none %}{{ system + '\\n\\n' }}{% endif %}{{ message['content'] + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}" +
  "{% else %}{{ raise_exception('the mistral template takes only user and assistant turns, after an optional first system message') }}{% endif %}" +
  '{% endfor %}';

const BUILTIN: Readonly<Record<string, string>> = { alpaca: ALPACA, chatml: CHATML, exaone: EXAONE, llama3: LLAMA3, mistral: MISTRAL };

/** The names chat_template accepts besides auto and a template, sorted. */
export const BUILTIN_CHAT_TEMPLATE_NAMES: readonly string[] = Object.keys(BUILTIN).sort();

/** The built-in template called `name`, or undefined. */
export function builtinChatTemplate(name: string): string | undefined {
  return Object.hasOwn(BUILTIN, name) ? BUILTIN[name] : undefined;
}

/**
 * Refuses a chat_template that is neither auto, a built-in name, nor template text (mergekit's
 * rule: text of at least 20 characters with a "{"), at its YAML line; checked when the config is
 * read, so a typo costs no merge.
 */
export function checkChatTemplateSetting(value: string, where: string): void {
  if (value === 'auto' || builtinChatTemplate(value) !== undefined) return;
  if (value.length < 20 || !value.includes('{')) {
    const shown = JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
    throw new UsageError(`${where}: unknown chat_template ${shown}: use auto, one of ${BUILTIN_CHAT_TEMPLATE_NAMES.join(', ')}, or a Jinja template (at least 20 characters with a "{")`);
  }
}
