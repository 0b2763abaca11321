/** The shards a `*.safetensors.index.json` names, narrowed to those holding a wanted tensor. */
import { InputError } from '../../errors.js';
import { parseJsonText } from '../json-file.js';

export function isSafetensorsIndex(path: string): boolean {
  return path.endsWith('.safetensors.index.json');
}

/**
 * Repo paths of the shards holding a tensor `tensors` accepts (all of them without it). Shard
 * names in the index are relative to the index's own folder.
 */
export function shardsFor(indexPath: string, text: string, tensors?: (name: string) => boolean): string[] {
  let weightMap: unknown;
  try {
    weightMap = (parseJsonText(indexPath, text) as { weight_map?: unknown }).weight_map;
  } catch {
    weightMap = undefined;
  }
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new InputError(`${indexPath}: no "weight_map" object in this safetensors index: the repo's index is corrupt`, { file: indexPath });
  }
  const folder = indexPath.includes('/') ? indexPath.slice(0, indexPath.lastIndexOf('/') + 1) : '';
  const shards = new Set<string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || shard.includes('..') || shard.startsWith('/')) {
      throw new InputError(`${indexPath}: tensor ${name} maps to ${JSON.stringify(shard)}, not a shard file name: the repo's index is corrupt`, { file: indexPath, tensor: name });
    }
    if (tensors === undefined || tensors(name)) shards.add(folder + shard);
  }
  return [...shards].sort();
}
