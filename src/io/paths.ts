/** Existence checks with one rule for what counts as "not there". */
import { lstat, stat } from 'node:fs/promises';

/**
 * Whether something is at `path`. As an `input` symbolic links are followed (a dangling link is
 * no input); as an `output` the entry itself counts (writing there would still replace the link).
 * Only "no such entry" answers false: any other failure (no permission, an I/O error) is thrown,
 * so the user hears it instead of it passing for a missing file.
 */
export async function pathExists(path: string, as: 'input' | 'output'): Promise<boolean> {
  try {
    await (as === 'input' ? stat(path) : lstat(path));
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw err;
  }
}
