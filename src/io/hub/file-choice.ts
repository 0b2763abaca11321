/**
 * Which repo files a command brings, shared by every command: predicates over paths relative to
 * the model's folder. Pickled and foreign weight formats are never chosen (loraforge reads only
 * safetensors; .bin is a pickle that would run code in Python and costs a second copy of the weights).
 */

/** Formats no command reads from a Hub repo. */
const NEVER = /\.(bin|pth|pt|gguf|onnx|onnx_data|msgpack|h5|ckpt)$/i;

const MODEL_NAMES = new Set([
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'tokenizer.model',
  'vocab.json',
  'vocab.txt',
  'merges.txt',
  'added_tokens.json',
  'special_tokens_map.json',
  'README.md',
]);

/**
 * A transformers model folder: config, generation config, tokenizer files, chat templates, the
 * weights in safetensors (downloadSnapshot narrows these to the shards the index names), and the
 * small side files a written model keeps (licence, model card, remote code, templates). Top level
 * only; `consolidated*` is Mistral's second copy of the same weights.
 */
export const MODEL_FILES = (path: string): boolean => {
  if (path.includes('/') || NEVER.test(path)) return false;
  if (MODEL_NAMES.has(path)) return true;
  if (path.startsWith('consolidated')) return false;
  return /^chat_template\./.test(path) || /^LICEN[CS]E/i.test(path) || /\.(py|jinja|safetensors|safetensors\.index\.json)$/.test(path);
};

/** A PEFT adapter folder. */
export const ADAPTER_FILES = (path: string): boolean =>
  path === 'adapter_config.json' || path === 'adapter_model.safetensors' || path === 'README.md';

/** `choose` applied inside a repo subfolder (an adapter in `org/name/sub`); paths stay relative to the repo root. */
export function inFolder(folder: string, choose: (path: string) => boolean): (path: string) => boolean {
  const prefix = folder.replace(/\/+$/, '') + '/';
  return (path) => path.startsWith(prefix) && choose(path.slice(prefix.length));
}
