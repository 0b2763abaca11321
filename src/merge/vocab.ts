/**
 * The output vocabulary of a merge with a tokenizer setting (tokenizer_source / tokenizer:), the
 * way mergekit's tokenizer/build.py makes it, read from the models' tokenizer.json files:
 *
 * - base: base_model's tokenizer (the first model's without one), stripped of tokens whose id is
 *   not below its config.json vocab_size (they have no embedding row);
 * - union: base's vocabulary, then every other model's tokens base lacks, in config order: plain
 *   tokens first (as plain added tokens), then the added tokens (the first model's settings win);
 * - a model: that model's tokenizer as it is (it need not be one of the merged models);
 * - then each token of the tokens: block that the vocabulary lacks is added.
 *
 * For every merged model, a row map: output id → that model's id, or -1 when it lacks the token
 * (or its id has no row). mergekit orders the other models as a Python set does; config order is
 * used here, so the ids of added tokens are reproducible.
 */
import { join } from 'node:path';
import { InputError, UsageError } from '../errors.js';
import { readJsonFileIfPresent } from '../io/json-file.js';
import type { MergeConfig, ModelRef } from './config.js';
import type { OpenedModels } from './sources.js';
import { resolveModelPath } from './sources.js';
import { vocabEntries } from '../tokenizer/vocab-entries.js';

export type Json = Record<string, unknown>;

/** A model's tokenizer files, parsed, and the ids they give. */
export interface ModelTokenizer {
  folder: string;
  /** tokenizer.json */
  json: Json;
  /** tokenizer_config.json, special_tokens_map.json (absent: undefined) */
  config?: Json;
  specialMap?: Json;
  /** every token with its id, added tokens included (transformers' get_vocab) */
  vocab: Map<string, number>;
  /** added tokens by content: tokenizer.json's added_tokens entries */
  added: Map<string, Json>;
  /** ids at or above this have no embedding row (config.json vocab_size) */
  limit: number;
}

export interface OutputVocab {
  /** the tokenizer the output is written with (tokenizer-files.ts) */
  tokenizer: ModelTokenizer;
  /** tokens added to the source tokenizer, in id order (to write into tokenizer_config.json) */
  addedNow: Json[];
  /** tokenizer.json was changed (stripped or extended) and is written anew */
  changed: boolean;
  /** ids in the vocabulary (largest id + 1) */
  size: number;
  /** per opened model: output id → its id, or -1 */
  rows: Int32Array[];
  /** per opened model: its own token → id (base_model's stripped), for tokens: {kind: model_token, token} */
  vocabs: Array<Map<string, number>>;
  notes: string[];
}

const ADDED_DEFAULTS = { single_word: false, lstrip: false, rstrip: false, normalized: true, special: false };

/** Largest id + 1 (a loop: a spread of 150k ids overflows the call stack). */
function idCount(vocab: Map<string, number>): number {
  let n = 0;
  for (const id of vocab.values()) n = Math.max(n, id + 1);
  return n;
}

function configVocabSize(config: Json | undefined): number | undefined {
  const text = config?.text_config as Json | undefined;
  const v = text?.vocab_size ?? config?.vocab_size;
  return typeof v === 'number' && v > 0 ? v : undefined;
}

/** A model folder's tokenizer, or undefined when it has no tokenizer.json. */
async function readModelTokenizer(folder: string, config: Json | undefined): Promise<ModelTokenizer | undefined> {
  const file = join(folder, 'tokenizer.json');
  const json = (await readJsonFileIfPresent(file)) as Json | undefined;
  if (json === undefined) return undefined;
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new InputError(`${file}: expected a JSON object; restore the file from the model's release`, { file });
  const vocab = new Map(vocabEntries(json, file));
  const added = new Map<string, Json>();
  for (const entry of (json.added_tokens as Json[] | undefined) ?? []) {
    added.set(String(entry.content), entry);
    vocab.set(String(entry.content), Number(entry.id));
  }
  return {
    folder,
    json,
    config: (await readJsonFileIfPresent(join(folder, 'tokenizer_config.json'))) as Json | undefined,
    specialMap: (await readJsonFileIfPresent(join(folder, 'special_tokens_map.json'))) as Json | undefined,
    vocab,
    added,
    limit: configVocabSize(config) ?? vocab.size,
  };
}

/** mergekit's get_stripped_tokenizer: tokens whose id has no row are removed (BPE only). */
function stripped(tok: ModelTokenizer): { tok: ModelTokenizer; changed: boolean } {
  const unused = new Set([...tok.vocab].filter(([, id]) => id >= tok.limit).map(([t]) => t));
  if (unused.size === 0) return { tok, changed: false };
  const json = structuredClone(tok.json);
  const model = json.model as Json;
  if (model.type !== 'BPE') {
    throw new InputError(`${tok.folder}: the tokenizer has ${unused.size} token(s) at or above config.json's vocab_size ${tok.limit}, and only a BPE tokenizer can be stripped of them (its type is ${String(model.type)}); choose another tokenizer source`, { file: tok.folder });
  }
  json.added_tokens = ((json.added_tokens as Json[] | undefined) ?? []).filter((e) => Number(e.id) < tok.limit);
  const vocab = model.vocab as Record<string, number>;
  for (const t of unused) delete vocab[t];
  const keep = (m: unknown) => (Array.isArray(m) ? m : String(m).split(' ')).every((t) => !unused.has(String(t)));
  model.merges = ((model.merges as unknown[] | undefined) ?? []).filter(keep);
  const vocabMap = new Map([...tok.vocab].filter(([t]) => !unused.has(t)));
  const added = new Map([...tok.added].filter(([t]) => !unused.has(t)));
  return { tok: { ...tok, json, vocab: vocabMap, added }, changed: true };
}

/** Appends `entry` as an added token (transformers' add_tokens): a no-op for an added token, the model's id for one of its vocabulary. */
function addToken(tok: ModelTokenizer, entry: Json, addedNow: Json[]): boolean {
  const content = String(entry.content);
  if (tok.added.has(content)) return false;
  const id = tok.vocab.get(content) ?? idCount(tok.vocab);
  const added = { ...ADDED_DEFAULTS, ...entry, id, content };
  (tok.json.added_tokens as Json[]).push(added);
  tok.added.set(content, added);
  tok.vocab.set(content, id);
  addedNow.push(added);
  return true;
}

/** mergekit's build_union_tokenizer over `toks` (base first). */
function union(base: ModelTokenizer, toks: ModelTokenizer[], notes: string[]): { tok: ModelTokenizer; addedNow: Json[] } {
  const plain = new Set<string>();
  const added = new Map<string, Json>();
  for (const tok of toks) {
    for (const [t, id] of tok.vocab) if (id < tok.limit && !tok.added.has(t)) plain.add(t);
    const byId = [...tok.added.values()].sort((a, b) => Number(a.id) - Number(b.id));
    for (const entry of byId) {
      if (Number(entry.id) >= tok.limit) continue;
      const first = added.get(String(entry.content));
      if (!first) added.set(String(entry.content), entry);
      else if (!sameSettings(first, entry)) notes.push(`token ${JSON.stringify(entry.content)} is added with different settings by ${tok.folder}; the first model's are used, as mergekit does`);
    }
  }
  const out: ModelTokenizer = { ...base, json: structuredClone(base.json), vocab: new Map(base.vocab), added: new Map(base.added) };
  out.json.added_tokens ??= [];
  const addedNow: Json[] = [];
  for (const t of plain) if (!added.has(t) && !base.vocab.has(t)) addToken(out, { content: t }, addedNow);
  for (const entry of added.values()) addToken(out, entry, addedNow);
  return { tok: out, addedNow };
}

function sameSettings(a: Json, b: Json): boolean {
  return ['content', 'single_word', 'lstrip', 'rstrip', 'normalized', 'special'].every((k) => a[k] === b[k]);
}

/** Resolves the tokenizer setting into the output vocabulary and each opened model's row map. */
export async function buildOutputVocab(config: MergeConfig, opened: OpenedModels, cwd: string): Promise<OutputVocab | undefined> {
  const spec = config.tokenizer;
  if (!spec) return undefined;
  const notes: string[] = [];
  const baseIndex = config.baseModel ? opened.indexOf(config.baseModel) : 0;
  const baseModel = opened.models[baseIndex];
  const own = await Promise.all(opened.models.map((m) => readModelTokenizer(m.path, m.checkpoint.config)));
  const baseTok = own[baseIndex];
  if (!baseTok) throw new UsageError(`${spec.where}: ${baseModel.path} has no tokenizer.json, and a tokenizer setting builds on base_model's (the first model's without base_model); copy tokenizer.json from its release`);
  own.forEach((t, i) => {
    if (!t) notes.push(`${opened.models[i].path} has no tokenizer.json: its vocabulary is taken to be base_model's, as mergekit does`);
  });
  const base = stripped(baseTok);
  const vocabs = own.map((t, i) => (i === baseIndex ? base.tok : (t ?? base.tok)));

  let tokenizer: ModelTokenizer;
  let addedNow: Json[] = [];
  let changed = base.changed;
  if (spec.source === 'base') tokenizer = base.tok;
  else if (spec.source === 'union') {
    const others = own.flatMap((t, i) => (t && i !== baseIndex ? [t] : []));
    ({ tok: tokenizer, addedNow } = union(base.tok, [base.tok, ...others], notes));
    changed ||= addedNow.length > 0;
  } else {
    tokenizer = await sourceTokenizer(spec.source, cwd);
    changed = false;
  }
  if (spec.tokens.size > 0) {
    tokenizer = { ...tokenizer, json: structuredClone(tokenizer.json), vocab: new Map(tokenizer.vocab), added: new Map(tokenizer.added) };
    tokenizer.json.added_tokens ??= [];
    for (const t of spec.tokens.keys()) if (!tokenizer.vocab.has(t) && addToken(tokenizer, { content: t }, addedNow)) changed = true;
  }
  const size = idCount(tokenizer.vocab);
  const rows = vocabs.map((v) => {
    const map = new Int32Array(size).fill(-1);
    for (const [t, id] of tokenizer.vocab) {
      const own = v.vocab.get(t);
      if (own !== undefined && own < v.limit) map[id] = own;
    }
    return map;
  });
  return { tokenizer, addedNow, changed, size, rows, vocabs: vocabs.map((v) => v.vocab), notes };
}

async function sourceTokenizer(ref: ModelRef, cwd: string): Promise<ModelTokenizer> {
  const folder = await resolveModelPath(ref, cwd);
  const config = (await readJsonFileIfPresent(join(folder, 'config.json'))) as Json | undefined;
  const tok = await readModelTokenizer(folder, config);
  if (!tok) throw new UsageError(`${ref.where}: ${folder} has no tokenizer.json to take the output's tokenizer from; copy it from the model's release`);
  return tok;
}
