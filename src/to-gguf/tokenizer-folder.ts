/**
 * Tokenizer metadata for a GGUF model built from a Hugging Face model folder, following the
 * choices llama.cpp's convert_hf_to_gguf.py makes for Llama-family models:
 *
 * 1. `tokenizer.model` (SentencePiece) → `tokenizer.ggml.model = "llama"` with the pieces' own
 *    scores and types (the converter's _create_vocab_sentencepiece);
 * 2. else, for `llama` only, a `tokenizer.json` BPE with byte fallback (a Llama-2 style fast
 *    tokenizer) → "llama" with the placeholder scores gguf-py's LlamaHfVocab writes;
 * 3. else a byte-level BPE `tokenizer.json` → `tokenizer.ggml.model = "gpt2"` with merges. Its
 *    `tokenizer.ggml.pre` names llama.cpp's pre-tokenizer; the converter finds it by hashing the
 *    output of the real Hugging Face tokenizer, which we cannot run, so we recognise the
 *    pre-tokenizer's regex instead and refuse unknown ones (with a pointer to --vocab-from).
 *
 * Special token ids, add_bos/add_eos and the chat template come from tokenizer_config.json,
 * tokenizer.json and config.json the way gguf-py's SpecialVocab reads them (the common paths).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GgufValueType, kvArray, kvBool, kvString, kvU32, type GgufKv } from '../io/gguf.js';
import { ggufFacts, type GgufArch } from '../arch/index.js';
import type { TokenizerKvs } from './tokenizer-gguf.js';
import { readJsonFileIfPresent } from '../io/json-file.js';
import { readInputBytes, readInputText } from '../io/inputs.js';
import { tokenContent } from '../tokenizer/special-tokens.js';

/** GGUF token types (gguf-py TokenType; SentencePiece uses the same numbers). */
export enum TokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

type Json = Record<string, unknown>;

async function readJsonIfPresent(path: string): Promise<Json | undefined> {
  return (await readJsonFileIfPresent(path)) as Json | undefined;
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isFile(), () => false);
}

const SPIECE_UNDERLINE = '\u2581';

/** The converter's does_token_look_special: added tokens that should be CONTROL even if not flagged special. */
export function looksSpecial(token: string): boolean {
  return (
    ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(token) ||
    (token.startsWith('<|') && token.endsWith('|>')) ||
    (token.startsWith('<\uff5c') && token.endsWith('\uff5c>')) ||
    (token.startsWith('<unused') && token.endsWith('>'))
  );
}

// ---------------------------------------------------------------------------------------------
// SentencePiece tokenizer.model (a protobuf ModelProto; we need only its repeated `pieces`)
// ---------------------------------------------------------------------------------------------

export interface SentencePiece {
  piece: string;
  score: number;
  /** sentencepiece_model.proto Type: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6. */
  type: number;
}

class ProtoReader {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    readonly where: string,
  ) {}
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  varint(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.buf.length) throw new Error(`${this.where}: truncated protobuf varint (not a SentencePiece model?)`);
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
      if (shift > 63) throw new Error(`${this.where}: malformed protobuf varint (not a SentencePiece model?)`);
    }
  }
  bytes(n: number): Buffer {
    if (this.pos + n > this.buf.length) throw new Error(`${this.where}: truncated protobuf field (not a SentencePiece model?)`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  skip(wireType: number): void {
    switch (wireType) {
      case 0: this.varint(); return;
      case 1: this.bytes(8); return;
      case 2: this.bytes(this.varint()); return;
      case 5: this.bytes(4); return;
      default: throw new Error(`${this.where}: unsupported protobuf wire type ${wireType} (not a SentencePiece model?)`);
    }
  }
}

function parsePiece(buf: Buffer, where: string): SentencePiece {
  const r = new ProtoReader(buf, where);
  const out: SentencePiece = { piece: '', score: 0, type: TokenType.NORMAL };
  while (!r.done) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (field === 1 && wire === 2) out.piece = r.bytes(r.varint()).toString('utf8');
    else if (field === 2 && wire === 5) out.score = r.bytes(4).readFloatLE(0);
    else if (field === 3 && wire === 0) out.type = r.varint();
    else r.skip(wire);
  }
  return out;
}

/** The pieces of a SentencePiece `tokenizer.model`, in id order. */
export function parseSentencePieceModel(buf: Buffer, where: string): SentencePiece[] {
  const r = new ProtoReader(buf, where);
  const pieces: SentencePiece[] = [];
  while (!r.done) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (field === 1 && wire === 2) pieces.push(parsePiece(r.bytes(r.varint()), where));
    else r.skip(wire);
  }
  if (pieces.length === 0) throw new Error(`${where}: no pieces found; is this a SentencePiece model?`);
  return pieces;
}

// ---------------------------------------------------------------------------------------------
// Vocabularies
// ---------------------------------------------------------------------------------------------

interface Vocab {
  model: 'llama' | 'gpt2';
  pre: string;
  tokens: string[];
  scores?: number[];
  types: number[];
  /** SpecialVocab's n_vocab: special ids at or past it are dropped (undefined: no check). */
  nVocab: number | undefined;
  loadMerges: boolean;
  source: string;
}

interface AddedToken {
  id: number;
  content: string;
  special?: boolean;
  normalized?: boolean;
}

function configVocabSize(h: Json): number | undefined {
  const v = h['vocab_size'];
  return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : undefined;
}

/** The converter's _create_vocab_sentencepiece (tokens padded to config vocab_size). */
async function sentencePieceVocab(dir: string, h: Json): Promise<Vocab> {
  const path = join(dir, 'tokenizer.model');
  const pieces = parseSentencePieceModel(await readInputBytes(path), path);
  const vocabSize = configVocabSize(h) ?? pieces.length;
  const tokens = Array.from({ length: vocabSize }, (_, i) => `[PAD${i}]`);
  const scores = new Array<number>(vocabSize).fill(-10000);
  const types = new Array<number>(vocabSize).fill(TokenType.UNUSED);
  for (let id = 0; id < Math.min(pieces.length, vocabSize); id++) {
    const p = pieces[id]!;
    tokens[id] = p.piece;
    scores[id] = p.score;
    // sentencepiece's IsUnknown/IsControl/IsUnused/IsByte; user-defined pieces count as normal
    types[id] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.UNUSED, TokenType.BYTE].includes(p.type) ? p.type : TokenType.NORMAL;
  }
  const addedTokens = await readJsonIfPresent(join(dir, 'added_tokens.json'));
  for (const [content, id] of Object.entries(addedTokens ?? {})) {
    if (typeof id !== 'number' || id >= vocabSize) continue;
    tokens[id] = content;
    scores[id] = -1000;
    types[id] = TokenType.USER_DEFINED;
  }
  const tokenizerConfig = await readJsonIfPresent(join(dir, 'tokenizer_config.json'));
  const decoder = (tokenizerConfig?.['added_tokens_decoder'] ?? {}) as Record<string, { content: string; special?: boolean }>;
  for (const [key, data] of Object.entries(decoder)) {
    const id = Number(key);
    if (!Number.isInteger(id) || id >= vocabSize) continue;
    let token = data.content;
    if (data.special || looksSpecial(token)) types[id] = TokenType.CONTROL;
    else {
      token = token.replaceAll(SPIECE_UNDERLINE, ' ');
      types[id] = TokenType.USER_DEFINED;
    }
    scores[id] = -1000;
    tokens[id] = token;
  }
  return { model: 'llama', pre: 'default', tokens, scores, types, nVocab: tokens.length, loadMerges: false, source: path };
}

function addedTokensOf(tokenizer: Json): AddedToken[] {
  const added = tokenizer['added_tokens'];
  return Array.isArray(added) ? (added as AddedToken[]) : [];
}

function bpeModel(tokenizer: Json): Json {
  return (tokenizer['model'] ?? {}) as Json;
}

/** gguf-py LlamaHfVocab's test for a Llama-2 style fast tokenizer (BPE + byte fallback). */
function isLlamaHfTokenizer(tokenizer: Json): boolean {
  const model = bpeModel(tokenizer);
  const decoder = (tokenizer['decoder'] ?? {}) as Json;
  return model['type'] === 'BPE' && model['byte_fallback'] === true && decoder['type'] === 'Sequence';
}

/** Token strings transformers lists as all_special_tokens: the *_token entries and additional_special_tokens. */
function specialTokenContents(tokenizerConfig: Json | undefined, added: AddedToken[]): Set<string> {
  if (!tokenizerConfig) return new Set(added.filter((t) => t.special).map((t) => t.content));
  const out = new Set<string>();
  for (const typ of ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask']) {
    const c = tokenContent(tokenizerConfig[`${typ}_token`]);
    if (c !== undefined) out.add(c);
  }
  const extra = tokenizerConfig['additional_special_tokens'];
  if (Array.isArray(extra)) for (const e of extra) {
    const c = tokenContent(e);
    if (c !== undefined) out.add(c);
  }
  return out;
}

/** gguf-py LlamaHfVocab: base vocabulary in id order, then added tokens past it; scores are a -1000 placeholder. */
function llamaHfVocab(path: string, tokenizer: Json, tokenizerConfig: Json | undefined): Vocab {
  const vocab = (bpeModel(tokenizer)['vocab'] ?? {}) as Record<string, number>;
  const base = Object.keys(vocab).length;
  const reverse = new Array<string | undefined>(base);
  for (const [tok, id] of Object.entries(vocab)) if (id < base) reverse[id] = tok;
  const added = addedTokensOf(tokenizer);
  const specialContents = specialTokenContents(tokenizerConfig, added);
  const idOf = new Map<string, number>([...Object.entries(vocab), ...added.map((t) => [t.content, t.id] as [string, number])]);
  const specialIds = new Set([...specialContents].map((c) => idOf.get(c)).filter((id): id is number => id !== undefined));
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < base; id++) {
    const tok = reverse[id];
    if (tok === undefined) throw new Error(`${path}: the vocabulary has no token with id ${id}; ids must be 0..${base - 1}`);
    tokens.push(tok);
    types.push(/^<0x[0-9A-Fa-f]{2}>$/.test(tok) ? TokenType.BYTE : specialIds.has(id) ? TokenType.CONTROL : TokenType.NORMAL);
  }
  for (const t of [...added].filter((a) => a.id >= base).sort((a, b) => a.id - b.id)) {
    tokens.push(t.content);
    types.push(specialContents.has(t.content) ? TokenType.CONTROL : TokenType.USER_DEFINED);
  }
  const scores = new Array<number>(tokens.length).fill(-1000);
  return { model: 'llama', pre: 'default', tokens, scores, types, nVocab: tokens.length, loadMerges: false, source: path };
}

/**
 * Byte-level BPE pre-tokenizer regexes (as tokenizer.json spells them) → the llama.cpp
 * `tokenizer.ggml.pre` that splits text the same way.
 */
const KNOWN_PRE_TOKENIZER_REGEX: ReadonlyArray<[regex: string, pre: string]> = [
  // Llama 3 (and the many models reusing its pre-tokenizer)
  [
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    'llama-bpe',
  ],
  // Qwen2 / Qwen2.5 / Qwen3: single digits
  [
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    'qwen2',
  ],
];

/** llama.cpp pre-tokenizer name for a byte-level BPE tokenizer.json, or undefined if not recognised. */
export function detectBpePre(tokenizer: Json): string | undefined {
  const pre = tokenizer['pre_tokenizer'] as Json | null | undefined;
  if (!pre) return undefined;
  if (pre['type'] === 'ByteLevel') return pre['use_regex'] === false ? undefined : 'gpt-2';
  if (pre['type'] !== 'Sequence' || !Array.isArray(pre['pretokenizers'])) return undefined;
  const parts = pre['pretokenizers'] as Json[];
  if (parts.length !== 2 || parts[0]!['type'] !== 'Split' || parts[1]!['type'] !== 'ByteLevel' || parts[1]!['use_regex'] !== false) return undefined;
  const regex = ((parts[0]!['pattern'] ?? {}) as Json)['Regex'];
  return KNOWN_PRE_TOKENIZER_REGEX.find(([r]) => r === regex)?.[1];
}

/** The converter's get_vocab_base + _set_vocab_gpt2 for a byte-level BPE tokenizer.json. */
function gpt2Vocab(path: string, tokenizer: Json, h: Json): Vocab {
  const pre = detectBpePre(tokenizer);
  if (pre === undefined) {
    throw new Error(
      `${path}: unrecognised BPE pre-tokenizer; llama.cpp identifies it by running the Hugging Face tokenizer, which loraforge cannot — pass --vocab-from with a GGUF of the same tokenizer (e.g. llama.cpp's models/ggml-vocab-*.gguf or any GGUF of this model family)`,
    );
  }
  const vocab = new Map<string, number>(Object.entries((bpeModel(tokenizer)['vocab'] ?? {}) as Record<string, number>));
  const added = addedTokensOf(tokenizer);
  for (const t of added) vocab.set(t.content, t.id);
  let maxId = -1;
  for (const id of vocab.values()) maxId = Math.max(maxId, id);
  const vocabSize = configVocabSize(h) ?? vocab.size;
  if (maxId >= vocabSize) throw new Error(`${path}: token id ${maxId} is not below config.json vocab_size ${vocabSize}`);
  const reverse = new Array<string | undefined>(vocabSize);
  for (const [tok, id] of vocab) reverse[id] = tok;
  const addedById = new Map(added.map((t) => [t.id, t]));
  const tokens: string[] = [];
  const types: number[] = [];
  for (let i = 0; i < vocabSize; i++) {
    let tok = reverse[i];
    if (tok === undefined) {
      tokens.push(`[PAD${i}]`);
      types.push(TokenType.UNUSED);
      continue;
    }
    const a = addedById.get(i);
    if (a && a.content === tok) {
      if (a.special || looksSpecial(tok)) types.push(TokenType.CONTROL);
      else {
        tok = tok.replaceAll(SPIECE_UNDERLINE, ' ');
        types.push(TokenType.USER_DEFINED);
      }
    } else types.push(TokenType.NORMAL);
    tokens.push(tok);
  }
  return { model: 'gpt2', pre, tokens, types, nVocab: undefined, loadMerges: true, source: path };
}

// ---------------------------------------------------------------------------------------------
// Special tokens (gguf-py SpecialVocab, the common paths)
// ---------------------------------------------------------------------------------------------

const SPECIAL_TYPES = ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'] as const;
/** GGUF keys of the special-token ids gguf-py writes (cls has none, "seperator" is spelled as in gguf-py). */
const SPECIAL_ID_KEYS: Readonly<Record<string, string>> = {
  bos: 'tokenizer.ggml.bos_token_id',
  eos: 'tokenizer.ggml.eos_token_id',
  unk: 'tokenizer.ggml.unknown_token_id',
  sep: 'tokenizer.ggml.seperator_token_id',
  pad: 'tokenizer.ggml.padding_token_id',
  mask: 'tokenizer.ggml.mask_token_id',
  eot: 'tokenizer.ggml.eot_token_id',
  eom: 'tokenizer.ggml.eom_token_id',
};
const ADD_TOKEN_KEYS: Readonly<Record<string, string>> = {
  bos: 'tokenizer.ggml.add_bos_token',
  eos: 'tokenizer.ggml.add_eos_token',
  sep: 'tokenizer.ggml.add_sep_token',
};

/** Merges as gguf-py stores them: "a b", with spaces inside a part shifted to U+0120+… as it does. */
function mergesOf(path: string, tokenizer: Json | undefined): string[] {
  const merges = tokenizer ? bpeModel(tokenizer)['merges'] : undefined;
  if (!Array.isArray(merges) || merges.length === 0) return [];
  if (typeof merges[0] === 'string') return merges as string[];
  if (Array.isArray(merges[0])) {
    return (merges as string[][]).map((pair) => pair.map((part) => part.replaceAll(' ', String.fromCharCode(' '.charCodeAt(0) + 256))).join(' '));
  }
  throw new Error(`${path}: unknown format of model.merges`);
}

async function chatTemplateOf(dir: string, tokenizerConfig: Json): Promise<unknown> {
  if (tokenizerConfig['chat_template'] !== undefined) return tokenizerConfig['chat_template'];
  const jinja = join(dir, 'chat_template.jinja');
  if (await isFile(jinja)) return readInputText(jinja);
  return (await readJsonIfPresent(join(dir, 'chat_template.json')))?.['chat_template'];
}

function chatTemplateKvs(template: unknown): Array<[string, GgufKv]> {
  if (typeof template === 'string') return [['tokenizer.chat_template', kvString(template)]];
  if (!Array.isArray(template)) return [];
  const out: Array<[string, GgufKv]> = [];
  const names: string[] = [];
  let fallback: string | undefined;
  for (const choice of template as Json[]) {
    const name = String(choice['name'] ?? '').replace(/[^A-Za-z0-9]/g, '_');
    const body = choice['template'];
    if (!name || typeof body !== 'string') continue;
    if (name === 'default') fallback = body;
    else if (!names.includes(name)) {
      names.push(name);
      out.push([`tokenizer.chat_template.${name}`, kvString(body)]);
    }
  }
  if (names.length > 0) out.push(['tokenizer.chat_templates', kvArray(GgufValueType.STRING, names)]);
  if (fallback !== undefined) out.push(['tokenizer.chat_template', kvString(fallback)]);
  return out;
}

async function specialVocabKvs(dir: string, vocab: Vocab, tokenizer: Json | undefined, config: Json): Promise<Array<[string, GgufKv]>> {
  const ids = new Map<string, number>();
  const add = new Map<string, boolean>();
  const setId = (typ: string, id: unknown) => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || ids.has(typ)) return;
    if (vocab.nVocab === undefined || id < vocab.nVocab) ids.set(typ, id);
  };
  const kvs: Array<[string, GgufKv]> = [];
  if (vocab.loadMerges) {
    const merges = mergesOf(vocab.source, tokenizer);
    if (merges.length === 0) throw new Error(`${vocab.source}: a BPE tokenizer needs merges, and none were found`);
    kvs.push(['tokenizer.ggml.merges', kvArray(GgufValueType.STRING, merges)]);
  }
  const tokenizerConfig = await readJsonIfPresent(join(dir, 'tokenizer_config.json'));
  const added = tokenizer ? addedTokensOf(tokenizer) : [];
  // The post-processor tells whether BOS/EOS are added (simple templates only, as gguf-py reads them).
  const post = tokenizer?.['post_processor'] as Json | null | undefined;
  let specialBos = tokenContent(tokenizerConfig?.['bos_token']);
  let specialEos = tokenContent(tokenizerConfig?.['eos_token']);
  const specialCls = tokenContent(tokenizerConfig?.['cls_token']);
  for (const p of post ? ((post['processors'] as Json[] | undefined) ?? [post]) : []) {
    if (p['type'] === 'RobertaProcessing') {
      add.set('bos', true).set('eos', true).set('sep', true);
    } else if (p['type'] === 'TemplateProcessing') {
      const single = (p['single'] ?? []) as Json[];
      if (single.length <= 1) continue;
      const first = ((single[0]!['SpecialToken'] ?? {}) as Json)['id'] as string | undefined;
      if (first) {
        if (!tokenizerConfig) specialBos = first;
        add.set('bos', first === specialBos || first === specialCls);
      }
      const last = ((single[single.length - 1]!['SpecialToken'] ?? {}) as Json)['id'] as string | undefined;
      if (last) {
        if (!tokenizerConfig) specialEos = last;
        add.set('eos', last === specialEos);
      }
    }
  }
  if (tokenizerConfig) {
    const template = await chatTemplateOf(dir, tokenizerConfig);
    for (const typ of SPECIAL_TYPES) {
      const flag = tokenizerConfig[`add_${typ}_token`];
      if (typeof flag === 'boolean') add.set(typ, flag);
      const content = tokenContent(tokenizerConfig[`${typ}_token`]);
      if (content === undefined) continue;
      setId(typ, added.find((t) => t.content === content)?.id);
    }
    for (const typ of SPECIAL_TYPES) setId(typ, config[`${typ}_token_id`]);
    return [...kvs, ...idAndFlagKvs(ids, add), ...chatTemplateKvs(template)];
  }
  for (const typ of SPECIAL_TYPES) setId(typ, config[`${typ}_token_id`]);
  return [...kvs, ...idAndFlagKvs(ids, add)];
}

function idAndFlagKvs(ids: Map<string, number>, add: Map<string, boolean>): Array<[string, GgufKv]> {
  const out: Array<[string, GgufKv]> = [];
  for (const [typ, id] of ids) if (SPECIAL_ID_KEYS[typ]) out.push([SPECIAL_ID_KEYS[typ]!, kvU32(id)]);
  for (const [typ, flag] of add) if (ADD_TOKEN_KEYS[typ]) out.push([ADD_TOKEN_KEYS[typ]!, kvBool(flag)]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------------

async function pickVocab(dir: string, arch: GgufArch, h: Json, tokenizer: Json | undefined, tokenizerConfig: Json | undefined): Promise<Vocab> {
  if (await isFile(join(dir, 'tokenizer.model'))) return sentencePieceVocab(dir, h);
  const path = join(dir, 'tokenizer.json');
  if (!tokenizer) {
    throw new Error(`${dir}: no tokenizer.model or tokenizer.json; pass --vocab-from with a GGUF that carries this model's tokenizer`);
  }
  const model = bpeModel(tokenizer);
  if (model['type'] !== 'BPE') {
    throw new Error(`${path}: ${String(model['type'])} tokenizers are not supported by to-gguf; pass --vocab-from with a GGUF of the same tokenizer`);
  }
  if (ggufFacts(arch).llamaConverter && isLlamaHfTokenizer(tokenizer)) return llamaHfVocab(path, tokenizer, tokenizerConfig);
  return gpt2Vocab(path, tokenizer, h);
}

/** Tokenizer KVs for the model folder `dir`, as convert_hf_to_gguf.py would write them for `arch`. */
export async function tokenizerKvsFromFolder(dir: string, arch: GgufArch, hparams: Json): Promise<TokenizerKvs> {
  const tokenizer = await readJsonIfPresent(join(dir, 'tokenizer.json'));
  const tokenizerConfig = await readJsonIfPresent(join(dir, 'tokenizer_config.json'));
  const vocab = await pickVocab(dir, arch, hparams, tokenizer, tokenizerConfig);
  const kvs: Array<[string, GgufKv]> = [];
  // LlamaModel.set_vocab writes add_space_prefix from tokenizer_config before the vocabulary
  const prefixSpace = tokenizerConfig?.['add_prefix_space'];
  if (ggufFacts(arch).llamaConverter && typeof prefixSpace === 'boolean') kvs.push(['tokenizer.ggml.add_space_prefix', kvBool(prefixSpace)]);
  kvs.push(['tokenizer.ggml.model', kvString(vocab.model)]);
  kvs.push(['tokenizer.ggml.pre', kvString(vocab.pre)]);
  kvs.push(['tokenizer.ggml.tokens', kvArray(GgufValueType.STRING, vocab.tokens)]);
  if (vocab.scores) kvs.push(['tokenizer.ggml.scores', kvArray(GgufValueType.FLOAT32, vocab.scores)]);
  kvs.push(['tokenizer.ggml.token_type', kvArray(GgufValueType.INT32, vocab.types)]);
  kvs.push(...(await specialVocabKvs(dir, vocab, tokenizer, hparams)));
  const fixedPrefix = ggufFacts(arch).addSpacePrefix;
  if (fixedPrefix !== undefined) kvs.push(['tokenizer.ggml.add_space_prefix', kvBool(fixedPrefix)]);
  return { kvs, tokenCount: vocab.tokens.length, source: vocab.source };
}
