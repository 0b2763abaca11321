/**
 * Every JSON file loraforge reads (config.json, adapter_config.json, tokenizer files, indexes)
 * goes through here, so a truncated or hand-broken file is reported with its path — JSON.parse
 * alone says only "Unexpected end of JSON input".
 */
import { readInputText } from './inputs.js';

/** Thrown when a file is readable but is not JSON; `path` names the file. */
export class JsonFileError extends Error {
  constructor(readonly path: string, detail: string) {
    super(`${path}: not valid JSON (${detail}): the file is damaged or cut short; restore or regenerate it`);
  }
}

/** Parses `text` read from `path`, naming the file on a syntax error. */
export function parseJsonText(path: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new JsonFileError(path, (err as Error).message);
  }
}

/**
 * Reads and parses a user's JSON file, noting it as an input of the run (io/inputs.ts). A read
 * failure is rethrown as the OS error with `path` attached (readFile on a folder reports no path
 * of its own), for describeOsError to explain.
 */
export async function readJsonFile(path: string): Promise<unknown> {
  return parseJsonText(path, await readInputText(path));
}

/** readJsonFile, or undefined when there is no such file (or a path component is not a folder). */
export async function readJsonFileIfPresent(path: string): Promise<unknown> {
  try {
    return await readJsonFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}
