/**
 * The I/O floor without decoding: the checkpoints' .safetensors files read byte by byte into one
 * reused buffer (no f32 conversion, no allocation per tensor). Benches print it beside the
 * decoding read, since our JavaScript bf16 decoder runs at a third of the disk/page-cache speed.
 */
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';

const CHUNK = 8 << 20;

/** The .safetensors files of checkpoint folders, in name order. */
export async function safetensorsFiles(dirs: readonly string[]): Promise<string[]> {
  const files: string[] = [];
  for (const dir of dirs) for (const f of (await readdir(dir)).filter((n) => n.endsWith('.safetensors')).sort()) files.push(join(dir, f));
  return files;
}

/**
 * Reads every file in turn into one reused buffer; `onChunk` sees each chunk (a view valid only
 * until it returns) of the file at `index`, e.g. to write a copy.
 */
export async function plainRead(files: readonly string[], onChunk?: (index: number, chunk: Uint8Array) => Promise<void>): Promise<{ seconds: number; bytes: number }> {
  const buffer = Buffer.allocUnsafe(CHUNK);
  const t0 = performance.now();
  let bytes = 0;
  for (const [index, file] of files.entries()) {
    const fh = await open(file, 'r');
    try {
      for (;;) {
        const { bytesRead } = await fh.read(buffer, 0, CHUNK, null);
        if (bytesRead === 0) break;
        bytes += bytesRead;
        await onChunk?.(index, buffer.subarray(0, bytesRead));
      }
    } finally {
      await fh.close();
    }
  }
  return { seconds: (performance.now() - t0) / 1000, bytes };
}
