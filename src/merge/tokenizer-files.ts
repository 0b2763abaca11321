/**
 * The tokenizer files of a merge's output when the config asks for more than the donor's copy
 * (a tokenizer setting, or chat_template), as mergekit writes them with save_pretrained:
 *
 * - every tokenizer file comes from the tokenizer's own folder (base_model, or the model named by
 *   tokenizer_source), none from the donor;
 * - a vocabulary that was stripped or extended rewrites tokenizer.json (its added_tokens) and
 *   tokenizer_config.json's added_tokens_decoder; added_tokens.json, which would list stale ids, is left out;
 * - chat_template: "auto" takes the template most of the merged models use (the first of equally
 *   common ones), a built-in name (chat-templates.ts) that template, anything else is the template
 *   itself, as written; it goes into tokenizer_config.json and the chat_template.jinja / .json files
 *   that would override it are left out.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { readJsonFileIfPresent } from '../io/json-file.js';
import { pickChatTemplate } from '../tokenizer/chat-template.js';
import { builtinChatTemplate, checkChatTemplateSetting } from './chat-templates.js';
import type { Json, OutputVocab } from './vocab.js';

/** The files a tokenizer is saved as (transformers' names, the slow tokenizers' vocab files included). */
export const TOKENIZER_FILE = /^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|chat_template\.(json|jinja))$/;

const TEMPLATE_FILE = /^chat_template\.(json|jinja)$/;

export interface TokenizerFilesParams {
  vocab?: OutputVocab;
  chatTemplate?: { value: string; where: string };
  /** the donor model's folder (its tokenizer, when there is no tokenizer setting) */
  donor: string;
  /** the merged models' folders, for chat_template: auto */
  models: readonly string[];
}

export interface TokenizerFiles {
  /** files to write, by name */
  own: Record<string, string | Uint8Array>;
  /** donor files not to copy */
  skip?: (name: string) => boolean;
  notes: string[];
}

/** A folder's chat template (tokenizer_config.json, else chat_template.jinja / .json), trimmed. */
async function folderTemplate(folder: string): Promise<string | undefined> {
  const configFile = join(folder, 'tokenizer_config.json');
  const inConfig = pickChatTemplate(((await readJsonFileIfPresent(configFile)) as Json | undefined)?.chat_template, configFile);
  if (inConfig) return inConfig.text.trim();
  const jinja = await readFile(join(folder, 'chat_template.jinja'), 'utf8').catch(() => undefined);
  if (jinja !== undefined) return jinja.trim();
  const jsonFile = join(folder, 'chat_template.json');
  return pickChatTemplate(((await readJsonFileIfPresent(jsonFile)) as Json | undefined)?.chat_template, jsonFile)?.text.trim();
}

/** The template chat_template selects, or undefined (auto, and no model has one). */
async function chooseTemplate(value: string, where: string, models: readonly string[]): Promise<string | undefined> {
  if (value === 'auto') {
    const counts = new Map<string, number>();
    for (const m of models) {
      const t = await folderTemplate(m);
      if (t) counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    let best: string | undefined;
    for (const [t, n] of counts) if (best === undefined || n > (counts.get(best) as number)) best = t;
    return best;
  }
  checkChatTemplateSetting(value, where);
  return builtinChatTemplate(value) ?? value;
}


/** tokenizer_config.json's added_tokens_decoder, as transformers writes it from tokenizer.json's added_tokens. */
function addedTokensDecoder(json: Json): Json {
  const out: Json = {};
  const entries = [...((json.added_tokens as Json[] | undefined) ?? [])].sort((a, b) => Number(a.id) - Number(b.id));
  for (const e of entries) {
    out[String(e.id)] = { content: e.content, lstrip: e.lstrip ?? false, normalized: e.normalized ?? true, rstrip: e.rstrip ?? false, single_word: e.single_word ?? false, special: e.special ?? false };
  }
  return out;
}

/** What to write for the output's tokenizer; nothing when the donor's files are copied as they are. */
export async function tokenizerFiles(p: TokenizerFilesParams): Promise<TokenizerFiles> {
  const notes: string[] = [];
  if (!p.vocab && !p.chatTemplate) return { own: {}, notes };
  const template = p.chatTemplate ? await chooseTemplate(p.chatTemplate.value, p.chatTemplate.where, p.models) : undefined;
  if (p.chatTemplate?.value === 'auto' && template === undefined) notes.push('chat_template: auto found no chat template in the merged models; the tokenizer has none');
  const folder = p.vocab?.tokenizer.folder ?? p.donor;
  const own: Record<string, string | Uint8Array> = {};
  for (const entry of await readdir(folder, { withFileTypes: true })) {
    if (entry.isFile() && TOKENIZER_FILE.test(entry.name)) own[entry.name] = await readFile(join(folder, entry.name));
  }
  const changed = p.vocab?.changed ?? false;
  let config = p.vocab ? p.vocab.tokenizer.config : ((await readJsonFileIfPresent(join(folder, 'tokenizer_config.json'))) as Json | undefined);
  if (changed) {
    const json = p.vocab!.tokenizer.json;
    own['tokenizer.json'] = `${JSON.stringify(json, null, 2)}\n`;
    delete own['added_tokens.json'];
    config = { ...(config ?? { tokenizer_class: 'PreTrainedTokenizerFast' }), added_tokens_decoder: addedTokensDecoder(json) };
  }
  if (template !== undefined) {
    config = { ...(config ?? { tokenizer_class: 'PreTrainedTokenizerFast' }), chat_template: template };
    for (const name of Object.keys(own)) if (TEMPLATE_FILE.test(name)) delete own[name];
  }
  if (config && (changed || template !== undefined)) own['tokenizer_config.json'] = `${JSON.stringify(config, null, 2)}\n`;
  return { own, skip: (name) => TOKENIZER_FILE.test(name), notes };
}
