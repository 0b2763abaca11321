/**
 * The demo models' tokenizer: a real byte-level BPE (GPT-2's byte alphabet and pre-tokenizer)
 * trained on a paragraph of text, written as Hugging Face's tokenizer.json + tokenizer_config.json,
 * so every command that needs a tokenizer (to-gguf, merge's tokenizer_source) runs on the demo's
 * models as on real ones. Tokens past the learned ones up to vocab_size are padding, as models
 * with rounded-up embeddings have (to-gguf names them [PADn]).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const CORPUS =
  'A LoRA adapter stores the change a fine-tune made to a model as two thin matrices per layer. ' +
  'Given the base model and the tuned model, the difference of their weights is decomposed by a truncated ' +
  'singular value decomposition, and the largest directions are kept: the rank says how many. ' +
  'Merging adapters adds their updates; editing one scales, keeps or removes its singular components. ' +
  "The spectrum of an update tells how much of it the first few directions hold, and where it's spread out. " +
  'Models are read tensor by tensor from safetensors files, so memory holds a few tensors whatever the size, ' +
  'and the outputs are written atomically: they appear only when everything succeeded. ' +
  'Quick brown foxes jump over lazy dogs; 0123456789 + - * / = ( ) [ ] { } < > , . : ; ! ? " # $ % & @ ^ _ ` | ~\n';

const BOS = '<|begin_of_text|>';
const EOS = '<|end_of_text|>';
/** GPT-2's pre-tokenizer (tokenizers' ByteLevel with use_regex), which to-gguf maps to llama.cpp's "gpt-2". */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's bytes_to_unicode: every byte as a printable character. */
function byteAlphabet(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let next = 256;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : next++));
}

/** Merges learned greedily (most frequent pair first, ties by the pair's text) until `count` or no pair is left. */
function learnMerges(words: Map<string, number>, count: number): Array<[string, string]> {
  const split = [...words].map(([w, n]) => ({ symbols: [...w], n }));
  const merges: Array<[string, string]> = [];
  while (merges.length < count) {
    const pairs = new Map<string, number>();
    for (const { symbols, n } of split) for (let i = 0; i + 1 < symbols.length; i++) pairs.set(`${symbols[i]} ${symbols[i + 1]}`, (pairs.get(`${symbols[i]} ${symbols[i + 1]}`) ?? 0) + n);
    let best: string | undefined;
    for (const [pair, n] of pairs) if (best === undefined || n > pairs.get(best)! || (n === pairs.get(best)! && pair < best)) best = pair;
    if (best === undefined) break;
    const [a, b] = best.split(' ') as [string, string];
    merges.push([a, b]);
    for (const w of split) {
      const out: string[] = [];
      for (let i = 0; i < w.symbols.length; i++) {
        if (w.symbols[i] === a && w.symbols[i + 1] === b) out.push(a + b), i++;
        else out.push(w.symbols[i]);
      }
      w.symbols = out;
    }
  }
  return merges;
}

/** Writes tokenizer.json and tokenizer_config.json for a model with `vocabSize` embedding rows. */
export async function writeDemoTokenizer(dir: string, vocabSize: number): Promise<void> {
  const alphabet = byteAlphabet();
  const words = new Map<string, number>();
  for (const [word] of CORPUS.matchAll(GPT2_SPLIT)) {
    const mapped = [...Buffer.from(word, 'utf8')].map((b) => alphabet[b]).join('');
    words.set(mapped, (words.get(mapped) ?? 0) + 1);
  }
  const merges = learnMerges(words, vocabSize - alphabet.length - 2);
  const vocab: Record<string, number> = {};
  for (const t of [...alphabet, ...merges.map(([a, b]) => a + b)]) vocab[t] ??= Object.keys(vocab).length;
  const special = (content: string, id: number) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const bosId = Object.keys(vocab).length;
  const added = [special(BOS, bosId), special(EOS, bosId + 1)];
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: BOS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: BOS, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: BOS, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { [BOS]: { id: BOS, ids: [bosId], tokens: [BOS] } },
    },
    decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges: merges.map(([a, b]) => `${a} ${b}`) },
  };
  const config = {
    added_tokens_decoder: Object.fromEntries(added.map(({ id, ...t }) => [String(id), t])),
    bos_token: BOS,
    eos_token: EOS,
    clean_up_tokenization_spaces: false,
    model_max_length: 2048,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer, null, 2) + '\n');
  await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
}
