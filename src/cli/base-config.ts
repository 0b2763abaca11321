import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { noteInput, readInputText } from '../io/inputs.js';
import { UsageError } from './errors.js';
import { parseJsonText } from '../io/json-file.js';

/**
 * --base-config: a config.json, or a model folder holding one. The path as given is an input of
 * the run (a folder named here is protected from --out as a whole, not only its config.json).
 */
export async function readBaseConfigFlag(path: string): Promise<Record<string, unknown>> {
  noteInput(path);
  const file = (await stat(path).catch(() => undefined))?.isDirectory() ? join(path, 'config.json') : path;
  let text: string;
  try {
    text = await readInputText(file);
  } catch {
    throw new UsageError(`--base-config ${path}: cannot read ${file}; pass the base model's config.json or its folder`);
  }
  try {
    return parseJsonText(file, text) as Record<string, unknown>;
  } catch (err) {
    throw new UsageError(`--base-config ${(err as Error).message}`);
  }
}
