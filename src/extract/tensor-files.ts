/**
 * Which .safetensors file of a checkpoint holds a tensor, so that errors about a tensor's values or
 * dtype point at the file to fix (a sharded checkpoint has many).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Checkpoint } from '../io/checkpoint.js';

export type TensorFileOf = (tensor: string) => string;

export async function tensorFileResolver(ckpt: Checkpoint): Promise<TensorFileOf> {
  if (ckpt.files.length === 1) return () => ckpt.files[0];
  // openCheckpoint has already validated the index; only the weight map is needed here
  const index = JSON.parse(await readFile(join(ckpt.dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
  return (tensor) => join(ckpt.dir, index.weight_map[tensor]);
}
