/**
 * All-or-nothing outputs: everything is written under a temporary name beside the destination and
 * renamed into place only when complete, so an interrupted run never leaves a half-written model
 * or adapter where a user (or a loader) would take it for a finished one. Renames within one
 * directory are atomic on POSIX file systems, which is why temporaries are siblings of the target.
 */
import { realpathSync } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm, rmdir, unlink } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { inputsSoFar } from './inputs.js';
import { withPath } from './os-error.js';
import { newTemporary, releaseTemporary, REPLACED_TAG, sweepStaleTemporaries } from './temporaries.js';
import { UsageError } from '../errors.js';

export interface AtomicDir {
  /** Write everything here; it becomes `finalDir` on commit(). */
  readonly tmpPath: string;
  /** Moves the temporary directory into place (replacing an old one only when `overwrite`). */
  commit(): Promise<void>;
  /** Removes the temporary directory; a no-op after commit() or a previous abort(). */
  abort(): Promise<void>;
}

type PathKind = 'missing' | 'empty-dir' | 'dir' | 'other';

async function pathKind(path: string): Promise<PathKind> {
  try {
    const st = await lstat(path);
    if (!st.isDirectory()) return 'other';
    return (await readdir(path)).length === 0 ? 'empty-dir' : 'dir';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    throw err;
  }
}

function refuseExisting(finalDir: string, kind: PathKind, overwrite: boolean): void {
  if (kind === 'other') {
    throw new Error(`${finalDir} exists and is not a directory: choose another output path or remove it`);
  }
  if (kind === 'dir' && !overwrite) {
    throw new Error(`${finalDir} already exists and is not empty: choose another output path or pass --force to replace it`);
  }
}

/**
 * Prepares an output directory written in a sibling temporary directory and moved into place by
 * commit(). Refuses early (before any work is done) when `finalDir` is a non-empty directory and
 * `overwrite` is not set, and checks again at commit time in case it appeared meanwhile.
 */
export async function atomicOutputDir(finalDir: string, opts: { overwrite?: boolean } = {}): Promise<AtomicDir> {
  const target = resolve(finalDir);
  const overwrite = opts.overwrite ?? false;
  assertNotAnInputSoFar(finalDir);
  // First, so that a previous output a dead run had moved aside is back before it is judged.
  await sweepStaleTemporaries(target);
  refuseExisting(target, await pathKind(target), overwrite);
  await mkdir(dirname(target), { recursive: true });
  const tmpPath = newTemporary(target);
  await mkdir(tmpPath);
  let state: 'open' | 'committed' | 'aborted' = 'open';

  return {
    tmpPath,
    async commit() {
      if (state !== 'open') throw new Error(`${target}: output was already ${state}`);
      // Inputs read while writing (side files, lazily opened sources) count too.
      assertNotAnInputSoFar(finalDir);
      const kind = await pathKind(target);
      refuseExisting(target, kind, overwrite);
      if (kind === 'empty-dir') await rmdir(target);
      if (kind !== 'dir') {
        await rename(tmpPath, target);
        releaseTemporary(tmpPath);
        state = 'committed';
        return;
      }
      // Replace: move the old directory aside first so that at every instant `target` is either
      // the complete old output or the complete new one.
      const old = newTemporary(target, REPLACED_TAG);
      await rename(target, old);
      try {
        await rename(tmpPath, target);
        releaseTemporary(tmpPath);
      } catch (err) {
        await rename(old, target);
        releaseTemporary(old);
        throw err;
      }
      state = 'committed';
      await rm(old, { recursive: true, force: true });
      releaseTemporary(old);
    },
    async abort() {
      if (state !== 'open') return;
      state = 'aborted';
      await rm(tmpPath, { recursive: true, force: true });
      releaseTemporary(tmpPath);
    },
  };
}

/**
 * The one way a command writes its output folder: `write` fills the temporary folder it is given;
 * when it returns, the folder is moved into place; when anything throws (commit included), the
 * temporary folder is removed, so a failed run leaves nothing under `finalDir`.
 */
export async function withAtomicOutput<T>(finalDir: string, opts: { overwrite?: boolean }, write: (tmpPath: string) => Promise<T>): Promise<T> {
  const dir = await atomicOutputDir(finalDir, opts);
  try {
    const result = await write(dir.tmpPath);
    await dir.commit();
    return result;
  } catch (err) {
    await dir.abort();
    // A failed write on an open file (a full disk) carries no path: it was this output's.
    throw withPath(err, finalDir);
  }
}

/**
 * Where a command's output goes: a folder, written under a temporary name (withAtomicOutput), or
 * one file whose sink writes a temporary file beside it and renames it into place on finish()
 * itself (the GGUF writer), so it is opened at the file's own path.
 */
export type AtomicTarget = { dir: string; overwrite?: boolean } | { file: string };

/**
 * withAtomicOutput with a sink: opened in the temporary folder (a file target: at the file's
 * path), `write` adds to it and finishes it; on any failure the sink is aborted (closing its
 * files, removing its temporaries) before the folder is removed. Aborting a finished sink does
 * nothing, so `write` may go on writing side files after finish().
 */
export function withAtomicSink<S extends { abort(): Promise<void> }, T>(
  target: AtomicTarget,
  openSink: (path: string) => Promise<S>,
  write: (sink: S, path: string) => Promise<T>,
): Promise<T> {
  const fill = async (path: string) => {
    const sink = await openSink(path);
    try {
      return await write(sink, path);
    } catch (err) {
      await sink.abort();
      throw err;
    }
  };
  if ('dir' in target) return withAtomicOutput(target.dir, { overwrite: target.overwrite }, fill);
  // as withAtomicOutput: a failed write on an open file (a full disk) carries no path: it was this output's
  return fill(target.file).catch((err: unknown) => {
    throw withPath(err, target.file);
  });
}

/** Writes a whole file via a sibling temporary file, flushed to disk before the rename. */
export async function atomicWriteFile(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = newTemporary(path);
  try {
    const fh = await open(tmp, 'wx');
    try {
      await fh.writeFile(data);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  } finally {
    releaseTemporary(tmp);
  }
}

/** realpath of the longest existing prefix of `path`, with the missing rest appended. */
function realpathAllowMissing(path: string): string {
  const abs = resolve(path);
  const missing: string[] = [];
  let current = abs;
  for (;;) {
    try {
      return join(realpathSync(current), ...missing.reverse());
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const parent = dirname(current);
      if (parent === current) return abs;
      missing.push(basename(current));
      current = parent;
    }
  }
}

function isSameOrInside(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

/** An output that is, lies inside or contains an input: a mistake in the command, never attempted. */
export class OutputIsInputError extends UsageError {}

/**
 * Never overwrite an input: throws when `outPath` is one of `inputs`, lies inside one, or contains
 * one (an output directory replaced with --force would delete it). Symlinks are resolved, so
 * two spellings of the same place are caught.
 */
export function assertNotInput(outPath: string, inputs: string[]): void {
  const out = realpathAllowMissing(outPath);
  for (const input of inputs) {
    const inp = realpathAllowMissing(input);
    if (out === inp) {
      throw new OutputIsInputError(`output ${outPath} is the input ${input}: loraforge never overwrites an input; choose another output path`);
    }
    if (isSameOrInside(out, inp)) {
      throw new OutputIsInputError(`output ${outPath} is inside the input ${input}: loraforge never writes into an input; choose another output path`);
    }
    if (isSameOrInside(inp, out)) {
      throw new OutputIsInputError(`output ${outPath} contains the input ${input}: writing it could destroy the input; choose another output path`);
    }
  }
}

/** assertNotInput against everything the current run has read so far (io/inputs.ts). */
export function assertNotAnInputSoFar(outPath: string): void {
  assertNotInput(outPath, inputsSoFar());
}
