/**
 * Which ids a model folder's tokenizer adds and stops at: BOS (and whether encoding prefixes it),
 * the EOS that separates texts in a stream, and the ids that end a generation. The answers are
 * spread over four files that disagree in real releases, so each comes with the place it was read.
 */
import { InputError } from '../errors.js';

export type Json = Record<string, unknown>;

/** The JSON files of a model folder that say something about special tokens (absent ones undefined). */
export interface TokenizerFiles {
  folder: string;
  tokenizer: Json;
  tokenizerConfig?: Json;
  config?: Json;
  generationConfig?: Json;
}

export interface SpecialTokens {
  bosId?: number;
  addBos: boolean;
  eosId: number;
  stopIds: number[];
  /** Where each answer came from, e.g. "generation_config.json eos_token_id" (stop: one per stopIds entry). */
  sources: { bosId?: string; addBos: string; eosId: string; stopIds: string[] };
}

/** tokenizer_config.json writes a token as its text or as an AddedToken object with `content`. */
export function tokenContent(entry: unknown): string | undefined {
  if (typeof entry === 'string') return entry;
  if (typeof entry === 'object' && entry !== null && typeof (entry as Json)['content'] === 'string') return (entry as Json)['content'] as string;
  return undefined;
}

/** A config's `*_token_id`: one id, a list of ids (Llama-3 instruct's eos), or none. */
function idsOf(value: unknown): number[] {
  const list = Array.isArray(value) ? value : [value];
  return list.filter((v): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0);
}

/** The post-processor's template for one sequence (TemplateProcessing, possibly inside a Sequence). */
function singleTemplate(tokenizer: Json): { first?: string; specialIds: Map<string, number> } | undefined {
  const post = tokenizer['post_processor'] as Json | null | undefined;
  if (!post) return undefined;
  const steps = post['type'] === 'Sequence' ? ((post['processors'] as Json[] | undefined) ?? []) : [post];
  const template = steps.find((p) => p['type'] === 'TemplateProcessing');
  if (!template) return undefined;
  const specialIds = new Map<string, number>();
  for (const [name, t] of Object.entries((template['special_tokens'] ?? {}) as Record<string, Json>)) {
    const id = idsOf(t['ids'])[0];
    if (id !== undefined) specialIds.set(name, id);
  }
  const head = ((template['single'] ?? []) as Json[])[0];
  const first = ((head?.['SpecialToken'] ?? undefined) as Json | undefined)?.['id'];
  return { first: typeof first === 'string' ? first : undefined, specialIds };
}

/**
 * Resolves BOS, EOS and the stop ids; `idOf` maps a token's text to its id in this tokenizer.
 *
 * EOS rule: the stream separator is the model's own EOS — generation_config.json `eos_token_id`,
 * else config.json's, else tokenizer_config.json's `eos_token` (the first id where a file lists
 * several). The tokenizer config comes last because chat releases point it at the chat turn's end
 * while the model was pretrained with another separator: qwen-base's tokenizer_config declares
 * `<|im_end|>` (151645), its config and the pretraining stream use `<|endoftext|>` (151643), and
 * the tinyfam references use 151643. A generation stops at any of them (a chat model ends its turn
 * with `<|im_end|>`), so stopIds is the union, in that order.
 *
 * BOS: tokenizer_config.json `bos_token`, else the post-processor's leading special token, else
 * the configs' `bos_token_id`. Whether encoding adds it: tokenizer_config.json `add_bos_token`
 * when set (transformers rebuilds Llama's post-processor from it), else whether the post-processor
 * template starts with a special token.
 */
export function resolveSpecialTokens(files: TokenizerFiles, idOf: (token: string) => number | undefined): SpecialTokens {
  const { tokenizer, tokenizerConfig: tc = {}, config = {}, generationConfig = {} } = files;

  const stopIds: number[] = [];
  const stopSources: string[] = [];
  const candidates: Array<[string, number[]]> = [
    ['generation_config.json eos_token_id', idsOf(generationConfig['eos_token_id'])],
    ['config.json eos_token_id', idsOf(config['eos_token_id'])],
  ];
  const eosText = tokenContent(tc['eos_token']);
  const eosTextId = eosText === undefined ? undefined : idOf(eosText);
  if (eosTextId !== undefined) candidates.push([`tokenizer_config.json eos_token ${JSON.stringify(eosText)}`, [eosTextId]]);
  for (const [source, ids] of candidates) {
    for (const id of ids) {
      if (stopIds.includes(id)) continue;
      stopIds.push(id);
      stopSources.push(source);
    }
  }
  if (stopIds.length === 0) {
    throw new InputError(
      `${files.folder}: no end-of-sequence token: neither generation_config.json nor config.json has eos_token_id, and tokenizer_config.json names no eos_token in the vocabulary; add the model's eos_token_id to config.json`,
      { file: files.folder },
    );
  }

  const template = singleTemplate(tokenizer);
  let bosId: number | undefined;
  let bosSource: string | undefined;
  const bosText = tokenContent(tc['bos_token']);
  const bosTextId = bosText === undefined ? undefined : idOf(bosText);
  const templateBos = template?.first === undefined ? undefined : (template.specialIds.get(template.first) ?? idOf(template.first));
  const configBos = idsOf(generationConfig['bos_token_id'])[0] ?? idsOf(config['bos_token_id'])[0];
  if (bosTextId !== undefined) [bosId, bosSource] = [bosTextId, `tokenizer_config.json bos_token ${JSON.stringify(bosText)}`];
  else if (templateBos !== undefined) [bosId, bosSource] = [templateBos, 'tokenizer.json post_processor'];
  else if (configBos !== undefined) [bosId, bosSource] = [configBos, 'config bos_token_id'];

  let addBos: boolean;
  let addBosSource: string;
  if (typeof tc['add_bos_token'] === 'boolean') [addBos, addBosSource] = [tc['add_bos_token'], 'tokenizer_config.json add_bos_token'];
  else if (template) [addBos, addBosSource] = [template.first !== undefined, 'tokenizer.json post_processor'];
  else [addBos, addBosSource] = [false, 'no add_bos_token and no template post-processor'];
  if (addBos && bosId === undefined) {
    throw new InputError(
      `${files.folder}: tokenizer_config.json asks for a BOS token (add_bos_token) but no file names one; set bos_token in tokenizer_config.json or bos_token_id in config.json`,
      { file: files.folder },
    );
  }

  return {
    bosId,
    addBos,
    eosId: stopIds[0]!,
    stopIds,
    sources: { bosId: bosSource, addBos: addBosSource, eosId: stopSources[0]!, stopIds: stopSources },
  };
}
