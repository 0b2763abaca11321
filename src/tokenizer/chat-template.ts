/**
 * A model's chat template, rendered with @huggingface/jinja the way transformers'
 * apply_chat_template does: `messages`, `add_generation_prompt` and the tokenizer's special
 * tokens as text (bos_token, eos_token, … from tokenizer_config.json — the tokenizer's, not the
 * model's stream EOS; templates write them into the prompt).
 */
import { Template } from '@huggingface/jinja';
import { InputError } from '../errors.js';
import { tokenContent, type Json } from './special-tokens.js';

export interface ChatMessage {
  role: string;
  content: string;
}

/** Where a folder's template lives: its text and the file it was read from. */
export interface ChatTemplateSource {
  text: string;
  file: string;
}

/** tokenizer_config.json holds one template, or a list of named ones of which transformers uses "default". */
export function pickChatTemplate(value: unknown, file: string): ChatTemplateSource | undefined {
  if (typeof value === 'string') return { text: value, file };
  if (!Array.isArray(value)) return undefined;
  const named = value as Json[];
  const chosen = named.find((t) => t['name'] === 'default');
  if (chosen && typeof chosen['template'] === 'string') return { text: chosen['template'], file };
  const names = named.map((t) => String(t['name'])).join(', ');
  throw new InputError(`${file}: chat_template lists named templates (${names}) but none called "default"; rename the one to use to "default"`, { file });
}

const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'];

/** A renderer for `source`, parsed once; a template jinja cannot parse or run is the folder's fault. */
export function chatTemplateRenderer(source: ChatTemplateSource, tokenizerConfig: Json): (messages: ChatMessage[], addGenerationPrompt: boolean) => string {
  let template: Template;
  try {
    template = new Template(source.text);
  } catch (err) {
    throw new InputError(`${source.file}: the chat template cannot be parsed (${(err as Error).message}); fix or remove it`, { file: source.file });
  }
  // only the tokens the config sets, as transformers passes its special_tokens_map
  const specials: Record<string, unknown> = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const text = tokenContent(tokenizerConfig[key]);
    if (text !== undefined) specials[key] = text;
  }
  const additional = tokenizerConfig['additional_special_tokens'];
  if (Array.isArray(additional)) specials['additional_special_tokens'] = additional.map(tokenContent).filter((t) => t !== undefined);
  return (messages, addGenerationPrompt) => {
    try {
      return template.render({ ...specials, messages, add_generation_prompt: addGenerationPrompt });
    } catch (err) {
      throw new InputError(`${source.file}: the chat template failed on these messages (${(err as Error).message})`, { file: source.file });
    }
  };
}
