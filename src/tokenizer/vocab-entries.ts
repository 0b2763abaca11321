/** The regular vocabulary of a parsed tokenizer.json, for code that matches tokens by their strings. */
import { InputError } from '../errors.js';

/**
 * `model.vocab` as [token, id] pairs: a token → id map for BPE, WordPiece and WordLevel, a list of
 * [piece, score] for Unigram (the id being the position). Added tokens live elsewhere
 * (`added_tokens`) and are not included.
 */
export function vocabEntries(json: Record<string, unknown>, file: string): Array<[string, number]> {
  const model = json['model'] as Record<string, unknown> | undefined;
  const vocab = model?.['vocab'];
  if (Array.isArray(vocab)) return vocab.map((e, i) => [String((e as unknown[])[0]), i]);
  if (vocab && typeof vocab === 'object') return Object.entries(vocab as Record<string, number>);
  throw new InputError(`${file}: no model.vocab in tokenizer.json; restore the file from the model's release`, { file });
}
