import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { detectBpePre, parseSentencePieceModel, tokenizerKvsFromFolder, TokenType } from '../../src/to-gguf/tokenizer-folder.js';
import { tokenizerKvsFromGguf } from '../../src/to-gguf/tokenizer-gguf.js';
import { createGgufSink, GgufValueType, kvArray, kvF32, kvString, kvU32, type GgufKv } from '../../src/io/gguf.js';
import { encodeSentencePieceModel } from '../helpers/llamacpp.js';
import { makeTempDir } from '../helpers/synthetic.js';

const LLAMA3_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function asMap(kvs: Array<[string, GgufKv]>): Map<string, unknown> {
  return new Map(kvs.map(([k, v]) => [k, v.value]));
}

let dir = '';
before(async () => {
  dir = await makeTempDir('loraforge-tokenizer-');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function folder(name: string, files: Record<string, string | Buffer | object>): Promise<string> {
  const d = join(dir, name);
  await mkdir(d, { recursive: true });
  for (const [f, content] of Object.entries(files)) {
    await writeFile(join(d, f), typeof content === 'string' || Buffer.isBuffer(content) ? content : JSON.stringify(content));
  }
  return d;
}

describe('SentencePiece tokenizer.model', () => {
  const pieces = [
    { piece: '<unk>', score: 0, type: 2 },
    { piece: '<s>', score: 0, type: 3 },
    { piece: '</s>', score: 0, type: 3 },
    { piece: '<0x0A>', score: 0, type: 6 },
    { piece: '▁the', score: -1.5, type: 1 },
    { piece: 'héllo', score: -2.25, type: 1 },
    { piece: '<custom>', score: 0, type: 4 },
    { piece: '<unused0>', score: 0, type: 5 },
  ];

  it('parses pieces, scores and types from the protobuf (skipping other fields)', () => {
    assert.deepEqual(parseSentencePieceModel(encodeSentencePieceModel(pieces), 'm'), pieces);
    assert.throws(() => parseSentencePieceModel(Buffer.from([0x0a, 0x05, 0x0a]), 'bad.model'), /bad\.model: truncated protobuf/);
  });

  it('becomes tokenizer.ggml.model "llama" as the converter builds it (padding, added tokens, special ids)', async () => {
    const d = await folder('spm', {
      'tokenizer.model': encodeSentencePieceModel(pieces),
      'added_tokens.json': { '<extra>': 8 },
      'tokenizer_config.json': {
        add_bos_token: true,
        add_eos_token: false,
        add_prefix_space: false,
        added_tokens_decoder: { '9': { content: '<|im_end|>', special: false }, '10': { content: 'my▁word', special: false } },
      },
    });
    const { kvs, tokenCount, source } = await tokenizerKvsFromFolder(d, 'llama', { vocab_size: 12, bos_token_id: 1, eos_token_id: 2 });
    const kv = asMap(kvs);
    assert.equal(tokenCount, 12);
    assert.equal(source, join(d, 'tokenizer.model'));
    assert.equal(kv.get('tokenizer.ggml.model'), 'llama');
    assert.equal(kv.get('tokenizer.ggml.pre'), 'default');
    assert.equal(kv.get('tokenizer.ggml.add_space_prefix'), false);
    assert.deepEqual(kv.get('tokenizer.ggml.tokens'), ['<unk>', '<s>', '</s>', '<0x0A>', '▁the', 'héllo', '<custom>', '<unused0>', '<extra>', '<|im_end|>', 'my word', '[PAD11]']);
    assert.deepEqual(kv.get('tokenizer.ggml.scores'), [0, 0, 0, 0, -1.5, -2.25, 0, 0, -1000, -1000, -1000, -10000]);
    const T = TokenType;
    // user-defined pieces count as normal in the converter; <|…|> looks special → control
    assert.deepEqual(kv.get('tokenizer.ggml.token_type'), [T.UNKNOWN, T.CONTROL, T.CONTROL, T.BYTE, T.NORMAL, T.NORMAL, T.NORMAL, T.UNUSED, T.USER_DEFINED, T.CONTROL, T.USER_DEFINED, T.UNUSED]);
    assert.equal(kv.get('tokenizer.ggml.bos_token_id'), 1);
    assert.equal(kv.get('tokenizer.ggml.eos_token_id'), 2);
    assert.equal(kv.get('tokenizer.ggml.add_bos_token'), true);
    assert.equal(kv.get('tokenizer.ggml.add_eos_token'), false);
    assert.equal(kvs.find(([k]) => k === 'tokenizer.ggml.scores')![1].type, GgufValueType.ARRAY);
  });

  it('gemma2: add_space_prefix is always false, written after the vocabulary (Gemma2Model.set_vocab)', async () => {
    const d = await folder('spm-gemma2', { 'tokenizer.model': encodeSentencePieceModel(pieces), 'tokenizer_config.json': { add_prefix_space: true } });
    const { kvs } = await tokenizerKvsFromFolder(d, 'gemma2', { vocab_size: 8 });
    const prefix = kvs.filter(([k]) => k === 'tokenizer.ggml.add_space_prefix');
    assert.deepEqual(prefix.map(([, v]) => v.value), [false]);
    assert.equal(kvs[kvs.length - 1]![0], 'tokenizer.ggml.add_space_prefix');
  });
});

describe('tokenizer.json', () => {
  const byteLevelVocab = { a: 0, b: 1, ab: 2, 'Ġ': 3, 'Ġa': 4 };

  it('recognises the Llama 3, Qwen2 and GPT-2 pre-tokenizers and nothing else', () => {
    const split = (regex: string) => ({
      pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: regex } }, { type: 'ByteLevel', use_regex: false }] },
    });
    assert.equal(detectBpePre(split(LLAMA3_REGEX)), 'llama-bpe');
    assert.equal(detectBpePre(split(LLAMA3_REGEX.replace('\\p{N}{1,3}', '\\p{N}'))), 'qwen2');
    assert.equal(detectBpePre({ pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, use_regex: true } }), 'gpt-2');
    assert.equal(detectBpePre(split(LLAMA3_REGEX.replace('{1,3}', '{1,2}'))), undefined);
    assert.equal(detectBpePre({ pre_tokenizer: null }), undefined);
  });

  it('byte-level BPE becomes "gpt2" with merges, padded ids and special tokens', async () => {
    const d = await folder('bpe', {
      'tokenizer.json': {
        added_tokens: [
          { id: 6, content: '<|begin_of_text|>', special: true, normalized: false },
          { id: 7, content: '<|eot|>', special: false, normalized: false },
          { id: 8, content: 'my▁tok', special: false, normalized: true },
        ],
        pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: LLAMA3_REGEX } }, { type: 'ByteLevel', use_regex: false }] },
        post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<|begin_of_text|>' } }, { Sequence: { id: 'A' } }] },
        model: { type: 'BPE', ignore_merges: true, vocab: byteLevelVocab, merges: [['a', 'b'], ['Ġ', 'a'], ['a b', 'b']] },
      },
      'tokenizer_config.json': { bos_token: '<|begin_of_text|>', eos_token: { content: '<|eot|>' }, chat_template: [{ name: 'default', template: 'D' }, { name: 'tool use', template: 'T' }] },
    });
    const { kvs, tokenCount } = await tokenizerKvsFromFolder(d, 'llama', { vocab_size: 10 });
    const kv = asMap(kvs);
    assert.equal(tokenCount, 10);
    assert.equal(kv.get('tokenizer.ggml.model'), 'gpt2');
    assert.equal(kv.get('tokenizer.ggml.pre'), 'llama-bpe');
    assert.deepEqual(kv.get('tokenizer.ggml.tokens'), ['a', 'b', 'ab', 'Ġ', 'Ġa', '[PAD5]', '<|begin_of_text|>', '<|eot|>', 'my tok', '[PAD9]']);
    const T = TokenType;
    assert.deepEqual(kv.get('tokenizer.ggml.token_type'), [T.NORMAL, T.NORMAL, T.NORMAL, T.NORMAL, T.NORMAL, T.UNUSED, T.CONTROL, T.CONTROL, T.USER_DEFINED, T.UNUSED]);
    assert.equal(kv.has('tokenizer.ggml.scores'), false);
    // pair-format merges are joined with a space; a space inside a part is shifted by 256 (→ 'Ġ')
    assert.deepEqual(kv.get('tokenizer.ggml.merges'), ['a b', 'Ġ a', 'aĠb b']);
    assert.equal(kv.get('tokenizer.ggml.bos_token_id'), 6);
    assert.equal(kv.get('tokenizer.ggml.eos_token_id'), 7);
    assert.equal(kv.get('tokenizer.ggml.add_bos_token'), true, 'the template starts with BOS');
    assert.equal(kv.get('tokenizer.chat_template'), 'D');
    assert.equal(kv.get('tokenizer.chat_template.tool_use'), 'T');
    assert.deepEqual(kv.get('tokenizer.chat_templates'), ['tool_use']);
  });

  it('a Llama-2 style BPE with byte fallback becomes "llama" with gguf-py LlamaHfVocab placeholders', async () => {
    const d = await folder('llama-hf', {
      'tokenizer.json': {
        added_tokens: [
          { id: 0, content: '<unk>', special: true },
          { id: 1, content: '<s>', special: true },
          { id: 5, content: '<pad>', special: true },
          { id: 6, content: '<new>', special: false },
        ],
        decoder: { type: 'Sequence', decoders: [] },
        model: { type: 'BPE', byte_fallback: true, vocab: { '<unk>': 0, '<s>': 1, '<0x41>': 2, '▁a': 3, b: 4 }, merges: ['▁ a'] },
      },
      'tokenizer_config.json': { bos_token: '<s>', unk_token: '<unk>', pad_token: '<pad>', add_bos_token: true },
    });
    const kv = asMap((await tokenizerKvsFromFolder(d, 'llama', { vocab_size: 7 })).kvs);
    assert.equal(kv.get('tokenizer.ggml.model'), 'llama');
    assert.deepEqual(kv.get('tokenizer.ggml.tokens'), ['<unk>', '<s>', '<0x41>', '▁a', 'b', '<pad>', '<new>']);
    const T = TokenType;
    assert.deepEqual(kv.get('tokenizer.ggml.token_type'), [T.CONTROL, T.CONTROL, T.BYTE, T.NORMAL, T.NORMAL, T.CONTROL, T.USER_DEFINED]);
    assert.deepEqual(kv.get('tokenizer.ggml.scores'), new Array(7).fill(-1000));
    assert.equal(kv.has('tokenizer.ggml.merges'), false);
    assert.equal(kv.get('tokenizer.ggml.bos_token_id'), 1);
    assert.equal(kv.get('tokenizer.ggml.padding_token_id'), 5);
    // the same tokenizer under a qwen2 config is read as byte-level BPE and its pre-tokenizer is unknown
    await assert.rejects(tokenizerKvsFromFolder(d, 'qwen2', { vocab_size: 7 }), /unrecognised BPE pre-tokenizer.*--vocab-from/);
  });

  it('refuses tokenizers it cannot describe, pointing at --vocab-from', async () => {
    const wordPiece = await folder('wp', { 'tokenizer.json': { model: { type: 'WordPiece', vocab: { a: 0 } } } });
    await assert.rejects(tokenizerKvsFromFolder(wordPiece, 'llama', {}), /WordPiece tokenizers are not supported.*--vocab-from/);
    const custom = await folder('custom', { 'tokenizer.json': { pre_tokenizer: { type: 'Whitespace' }, model: { type: 'BPE', vocab: { a: 0 }, merges: [] } } });
    await assert.rejects(tokenizerKvsFromFolder(custom, 'llama', {}), /unrecognised BPE pre-tokenizer/);
    const tooSmall = await folder('small', { 'tokenizer.json': { pre_tokenizer: { type: 'ByteLevel' }, model: { type: 'BPE', vocab: { a: 0, b: 5 }, merges: ['a b'] } } });
    await assert.rejects(tokenizerKvsFromFolder(tooSmall, 'qwen2', { vocab_size: 4 }), /token id 5 is not below config\.json vocab_size 4/);
  });
});

describe('tokenizer metadata copied from a GGUF', () => {
  it('copies every tokenizer.* KV with its type and nothing else', async () => {
    const path = join(dir, 'vocab.gguf');
    const sink = await createGgufSink(path, {
      kv: [
        ['general.architecture', kvString('llama')],
        ['llama.block_count', kvU32(32)],
        ['tokenizer.ggml.model', kvString('llama')],
        ['tokenizer.ggml.tokens', kvArray(GgufValueType.STRING, ['<unk>', 'a', 'b'])],
        ['tokenizer.ggml.scores', kvArray(GgufValueType.FLOAT32, [0, -1, -2])],
        ['tokenizer.ggml.unknown_token_id', kvU32(0)],
        ['tokenizer.chat_template', kvString('{{x}}')],
        ['tokenizer.custom.f', kvF32(0.5)],
      ],
    });
    await sink.finish();
    const { kvs, tokenCount } = await tokenizerKvsFromGguf(path);
    assert.equal(tokenCount, 3);
    assert.deepEqual(kvs.map(([k, v]) => [k, v.type]), [
      ['tokenizer.ggml.model', GgufValueType.STRING],
      ['tokenizer.ggml.tokens', GgufValueType.ARRAY],
      ['tokenizer.ggml.scores', GgufValueType.ARRAY],
      ['tokenizer.ggml.unknown_token_id', GgufValueType.UINT32],
      ['tokenizer.chat_template', GgufValueType.STRING],
      ['tokenizer.custom.f', GgufValueType.FLOAT32],
    ]);

    const empty = join(dir, 'no-vocab.gguf');
    const s2 = await createGgufSink(empty, { kv: [['general.architecture', kvString('llama')]] });
    await s2.finish();
    await assert.rejects(tokenizerKvsFromGguf(empty), /no tokenizer\.ggml\.tokens.*--vocab-from needs/);
  });
});
