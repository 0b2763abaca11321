/**
 * Operating-system errors (ENOENT, EACCES, ENOSPC, …) as one line a user can act on: the path they
 * gave (never our hidden temporaries), what happened and what to do. Node's own message names the
 * syscall and, for writes, the temporary beside the target (see temporaries.ts), which means
 * nothing to the person who typed --out.
 */
import { lstatSync, readlinkSync } from 'node:fs';
import { dirname, join, parse } from 'node:path';
import { targetNameOf } from './temporaries.js';

/**
 * The path the user knows for `path`: the first component that is one of our temporaries becomes
 * its target and whatever lay inside it is dropped (a shard inside a temporary output folder is,
 * to the user, that output folder).
 */
export function userPath(path: string): string {
  const { root } = parse(path);
  const parts = path.slice(root.length).split(/[\\/]/);
  for (let i = 0; i < parts.length; i++) {
    const target = targetNameOf(parts[i]!);
    if (target !== undefined) return join(root, ...parts.slice(0, i), target);
  }
  return path;
}

/** Node's error from a syscall; `dest` is set by two-path calls (rename, copyFile, link). */
export type OsError = NodeJS.ErrnoException & { dest?: string };

/** An error from the file system or another syscall: Node gives it a string `code` like "ENOENT". */
export function isOsError(err: unknown): err is OsError {
  return err instanceof Error && typeof (err as OsError).code === 'string' && typeof (err as OsError).syscall === 'string';
}

/**
 * Gives an OS error that lacks a path (readFile on a folder reports only `EISDIR … read`) the
 * path it happened on, so describeOsError can name it. Returns `err` for rethrowing.
 */
export function withPath(err: unknown, path: string): unknown {
  if (isOsError(err) && err.path === undefined) err.path = path;
  return err;
}

/** Syscalls that only write: a failure there is about the output. */
const WRITE_SYSCALLS = new Set(['mkdir', 'rename', 'unlink', 'rmdir', 'write', 'writev', 'fsync', 'fdatasync', 'ftruncate', 'copyfile', 'symlink', 'close']);

function isDanglingLink(path: string): string | undefined {
  try {
    return lstatSync(path).isSymbolicLink() ? readlinkSync(path) : undefined;
  } catch {
    return undefined;
  }
}

export interface OsErrorContext {
  /** The command's --out, named when the error carries no path (a failed write on an open file). */
  out?: string;
}

/**
 * One line for an OS error, or undefined when `err` is not one (it is then already ours and
 * worded for the user).
 */
export function describeOsError(err: unknown, ctx: OsErrorContext = {}): string | undefined {
  if (!isOsError(err)) return undefined;
  const raw = err.path ?? err.dest;
  const tempInvolved = raw !== undefined && userPath(raw) !== raw;
  // A rename from a temporary reports the temporary as path and the target as dest.
  const target = err.syscall === 'rename' && err.dest !== undefined && tempInvolved ? err.dest : raw;
  const path = target !== undefined ? userPath(target) : ctx.out;
  const writing = tempInvolved || WRITE_SYSCALLS.has(err.syscall!);
  // without any path the sentence stands alone ("no space left …")
  const at = path !== undefined ? `${path}: ` : '';
  switch (err.code) {
    case 'ENOENT': {
      if (writing && raw !== undefined) return `${at}cannot be created: ${dirname(path!)} does not exist or takes no new entries: choose another path`;
      const link = raw !== undefined ? isDanglingLink(raw) : undefined;
      if (link !== undefined) return `${at}a symbolic link to ${link}, which does not exist: fix the link or give the real path`;
      return `${at}no such file or folder: check the path`;
    }
    case 'ENOTDIR':
      return `${at}part of this path is a file, not a folder: check the path`;
    case 'EISDIR':
      return writing
        ? `${at}is a folder where a file must be written: remove it or choose another path`
        : `${at}is a folder where a file was expected: give the file's path`;
    case 'ELOOP':
      return `${at}too many levels of symbolic links (a link pointing back at itself?): fix the link or give the real path`;
    case 'EROFS':
      return `${at}the file system is read-only: choose a path on a writable disk`;
    case 'EACCES':
    case 'EPERM':
      return writing
        ? `${at}permission denied when writing: choose a path you can write to`
        : `${at}permission denied: check its permissions or choose another path`;
    case 'ENOSPC':
      return `${at}no space left on the device while writing: free some space or choose a path on another disk`;
    case 'EDQUOT':
      return `${at}disk quota exceeded while writing: free some space or choose a path on another disk`;
    case 'EFBIG':
      return `${at}the file is too large for this file system (FAT32 stops at 4 GB?): choose a path on another disk`;
    case 'EEXIST':
      return `${at}already exists: remove it or choose another path`;
    case 'ENOTEMPTY':
      return `${at}a folder that is not empty is in the way: remove it or choose another path`;
    case 'ENAMETOOLONG':
      return `${at}the path is too long: choose a shorter one`;
    case 'EMFILE':
    case 'ENFILE':
      return `${at}too many open files: raise the limit (ulimit -n) and run again`;
    case 'EIO':
      return `${at}input/output error from the disk: check the device (dmesg) and run again`;
    case 'EBUSY':
      return `${at}busy (in use by another program or a mount point): close it or choose another path`;
    case 'EXDEV':
      return `${at}cannot move the finished output across file systems: choose a path on one disk`;
    default: {
      // Node's wording is "CODE: what happened, syscall 'path'": keep what happened, drop the rest.
      const what = /^\w+: (.*?)(?:, \w+(?: '.*)?)?$/.exec(err.message)?.[1] ?? err.message;
      return `${at}${what} (${err.code})`;
    }
  }
}
