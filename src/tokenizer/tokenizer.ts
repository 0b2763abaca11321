/**
 * A model folder's Hugging Face tokenizer (tokenizer.json + tokenizer_config.json), run by
 * @huggingface/tokenizers — pure JS, the same package and version the tinyfam references were
 * tokenized with — plus the special ids and chat template the eval engine and compare need.
 */
import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { InputError } from '../errors.js';
import { readInputText } from '../io/inputs.js';
import { JsonFileError, parseJsonText } from '../io/json-file.js';
import { describeOsError, isOsError } from '../io/os-error.js';
import { chatTemplateRenderer, pickChatTemplate, type ChatMessage, type ChatTemplateSource } from './chat-template.js';
import { resolveSpecialTokens, type Json, type SpecialTokens } from './special-tokens.js';

export type { ChatMessage } from './chat-template.js';

export interface Tokenizer extends SpecialTokens {
  /**
   * Token ids of `text`. Special tokens written in the text (`<|im_end|>`) are matched either way;
   * `addSpecialTokens` only prefixes BOS where the tokenizer adds one (addBos). An EOS that a
   * config asks to append (add_eos_token) is never added: callers append eosId where they want it.
   */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  /** The tokenizer's id count, added tokens included (the model's vocab_size may be larger: padding rows). */
  vocabSize: number;
  /** The folder's chat template applied to `messages`; an InputError when the folder has none. */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt: boolean }): string;
}

async function isFolder(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isDirectory(), () => false);
}

/** A JSON input of the tokenizer, with an InputError naming it when it is broken; undefined when optional and absent. */
async function readJsonInput(path: string, required: boolean): Promise<Json | undefined> {
  let text: string;
  try {
    text = await readInputText(path);
  } catch (err) {
    const code = isOsError(err) ? err.code : undefined;
    if (!required && (code === 'ENOENT' || code === 'ENOTDIR')) return undefined;
    if (code === 'ENOENT' && !(await isFolder(dirname(path)))) {
      throw new InputError(`${dirname(path)}: no such model folder: check the path`, { file: dirname(path) });
    }
    if (code === 'ENOENT') {
      throw new InputError(
        `${path}: not found; the model's Hugging Face tokenizer is needed: copy tokenizer.json (and tokenizer_config.json) from the model's original release into the folder`,
        { file: path },
      );
    }
    throw new InputError(describeOsError(err) ?? `${path}: cannot be read (${(err as Error).message})`, { file: path });
  }
  let value: unknown;
  try {
    value = parseJsonText(path, text);
  } catch (err) {
    if (err instanceof JsonFileError) throw new InputError(err.message, { file: path });
    throw err;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InputError(`${path}: expected a JSON object; restore the file from the model's release`, { file: path });
  }
  return value as Json;
}

/** tokenizer_config.json's chat_template, else transformers' newer side files chat_template.jinja / chat_template.json. */
async function findChatTemplate(folder: string, tokenizerConfig: Json | undefined): Promise<ChatTemplateSource | undefined> {
  const inConfig = pickChatTemplate(tokenizerConfig?.['chat_template'], join(folder, 'tokenizer_config.json'));
  if (inConfig) return inConfig;
  const jinja = join(folder, 'chat_template.jinja');
  const text = await readInputText(jinja).catch((err: unknown) => {
    if (isOsError(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return undefined;
    throw err;
  });
  if (text !== undefined) return { text, file: jinja };
  const json = join(folder, 'chat_template.json');
  return pickChatTemplate((await readJsonInput(json, false))?.['chat_template'], json);
}

/** Loads the tokenizer of the model in `folder`; InputError when tokenizer.json is missing or unusable. */
export async function loadTokenizer(folder: string): Promise<Tokenizer> {
  const tokenizerPath = join(folder, 'tokenizer.json');
  const tokenizerJson = (await readJsonInput(tokenizerPath, true))!;
  const tokenizerConfig = await readJsonInput(join(folder, 'tokenizer_config.json'), false);
  const config = await readJsonInput(join(folder, 'config.json'), false);
  const generationConfig = await readJsonInput(join(folder, 'generation_config.json'), false);

  let hf: HfTokenizer;
  try {
    hf = new HfTokenizer(tokenizerJson, tokenizerConfig ?? {});
  } catch (err) {
    throw new InputError(`${tokenizerPath}: not a tokenizer @huggingface/tokenizers can load (${(err as Error).message}); restore the file from the model's release`, {
      file: tokenizerPath,
    });
  }
  let vocabSize = 0;
  for (const id of hf.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);
  const special = resolveSpecialTokens({ folder, tokenizer: tokenizerJson, tokenizerConfig, config, generationConfig }, (t) => hf.token_to_id(t));
  const template = await findChatTemplate(folder, tokenizerConfig);
  let render: ReturnType<typeof chatTemplateRenderer> | undefined;

  return {
    ...special,
    vocabSize,
    encode(text, opts = {}) {
      // the library's own add_special_tokens follows tokenizer.json's post-processor alone, while
      // transformers lets tokenizer_config.json's add_bos_token override it: BOS is added here
      const ids = hf.encode(text, { add_special_tokens: false }).ids;
      return opts.addSpecialTokens && special.addBos ? [special.bosId!, ...ids] : ids;
    },
    decode(ids, opts = {}) {
      return hf.decode(ids, { skip_special_tokens: opts.skipSpecialTokens ?? false });
    },
    applyChatTemplate(messages, opts) {
      if (!template) {
        throw new InputError(
          `${folder}: the tokenizer has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja): it is likely a base model; use plain prompts instead`,
          { file: folder },
        );
      }
      render ??= chatTemplateRenderer(template, tokenizerConfig ?? {});
      return render(messages, opts.addGenerationPrompt);
    },
  };
}
