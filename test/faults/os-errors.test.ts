/**
 * OS errors reach the user as one line: their path (never our hidden temporaries), what happened,
 * what to do. Real conditions where a root-run test can make them, synthetic errors otherwise.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { describeOsError, userPath } from '../../src/io/os-error.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { makeFaultCorpus, type FaultCorpus } from './corpus.js';

function osError(code: string, syscall: string, message: string, path?: string, dest?: string): NodeJS.ErrnoException {
  const err = Object.assign(new Error(`${code}: ${message}, ${syscall}${path ? ` '${path}'` : ''}`), { code, syscall }) as NodeJS.ErrnoException & { dest?: string };
  if (path !== undefined) err.path = path;
  if (dest !== undefined) err.dest = dest;
  return err;
}

/** One clean line on stderr, exit 1, no Node error code or syscall wording, no temporary names. */
function assertExplained(r: CliResult, pattern: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, pattern);
  assert.doesNotMatch(r.stderr, /\bE[A-Z]{2,}\b|lstat|\.tmp-\d+|at .*\.ts:/, r.stderr);
}

describe('describeOsError (synthetic errors)', () => {
  it('maps temporaries back to the user’s target', () => {
    assert.equal(userPath('/data/.out.tmp-123-0a1b2c3d4e5f'), '/data/out');
    assert.equal(userPath('/data/.x.gguf.tmp-9-cd12a0c8'), '/data/x.gguf');
    assert.equal(userPath('/data/.out.tmp-123-0a1b2c/.model.part0.tmp-123-ff00/shard'), '/data/out');
    assert.equal(userPath('/data/.hidden/file'), '/data/.hidden/file');
  });

  it('ENOSPC on an open file names --out and says what to do', () => {
    const line = describeOsError(osError('ENOSPC', 'write', 'no space left on device'), { out: './merged' });
    assert.equal(line, './merged: no space left on the device while writing: free some space or choose a path on another disk');
  });

  it('EROFS and EACCES name the target, not the temporary', () => {
    const rofs = describeOsError(osError('EROFS', 'mkdir', 'read-only file system', '/mnt/ro/.out.tmp-77-abcdef012345'));
    assert.equal(rofs, '/mnt/ro/out: the file system is read-only: choose a path on a writable disk');
    const acces = describeOsError(osError('EACCES', 'open', 'permission denied', '/srv/.a.gguf.tmp-77-abcd0123'));
    assert.equal(acces, '/srv/a.gguf: permission denied when writing: choose a path you can write to');
    const read = describeOsError(osError('EACCES', 'open', 'permission denied', '/srv/model.safetensors'));
    assert.equal(read, '/srv/model.safetensors: permission denied: check its permissions or choose another path');
  });

  it('a rename onto a folder names the destination', () => {
    const line = describeOsError(osError('EISDIR', 'rename', 'illegal operation on a directory', '.x.gguf.tmp-1-abcd0123', 'x.gguf'));
    assert.equal(line, 'x.gguf: is a folder where a file must be written: remove it or choose another path');
  });

  it('unknown codes keep Node’s words without the syscall; non-OS errors are left alone', () => {
    assert.equal(describeOsError(osError('ESTALE', 'read', 'stale file handle', '/nfs/a')), '/nfs/a: stale file handle (ESTALE)');
    assert.equal(describeOsError(new Error('a: not valid JSON')), undefined);
  });
});

describe('OS errors through the CLI (real conditions)', () => {
  let c: FaultCorpus;
  before(async () => {
    c = await makeFaultCorpus();
  });
  after(() => c.remove());

  const mergeTo = (out: string) => runCli(['merge-adapters', '--method', 'linear', '--adapter', c.adapter, '--adapter', c.adapter, '--out', out, '--quiet']);

  it('--out under a regular file (ENOTDIR)', async () => {
    assertExplained(await mergeTo(join(c.file, 'sub')), /file\/sub: part of this path is a file, not a folder: check the path$/m);
  });

  it('--out through a symlink loop (ELOOP), and an input that is one', async () => {
    assertExplained(await mergeTo(join(c.loop, 'x')), /loop1: too many levels of symbolic links .*: fix the link or give the real path$/m);
    assertExplained(await runCli(['inspect', c.loop]), /loop1: too many levels of symbolic links/);
  });

  it('an input that is a dangling symlink', async () => {
    assertExplained(await runCli(['inspect', c.dangling]), /dangling: a symbolic link to .*nowhere, which does not exist: fix the link or give the real path$/m);
  });

  it('a folder where a file is read (EISDIR) is named', async () => {
    const bad = join(c.root, 'dir-config');
    mkdirSync(join(bad, 'adapter_config.json'), { recursive: true });
    assertExplained(await runCli(['inspect', bad]), /dir-config\/adapter_config\.json: is a folder where a file was expected/);
  });

  it('a write refused by the kernel names --out, not the temporary (EACCES/EPERM on /sys)', async () => {
    assertExplained(await mergeTo('/sys/kernel/loraforge-test-out'), /^loraforge: \/sys\/kernel\/loraforge-test-out: permission denied when writing: choose a path you can write to$/m);
  });

  it('to-gguf creates a missing parent folder like the other commands', async () => {
    const out = join(c.root, 'new', 'sub', 'x.gguf');
    const r = await runCli(['to-gguf', '--model', c.model, '--vocab-from', c.vocab, '--out', out, '--quiet', '--dtype', 'f32']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(out));
  });

  it('to-gguf --force onto a folder is refused before any work, naming --out', async () => {
    const out = join(c.root, 'folder.gguf');
    mkdirSync(join(out, 'keep'), { recursive: true });
    const r = await runCli(['to-gguf', '--model', c.model, '--vocab-from', c.vocab, '--out', out, '--force', '--quiet']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--out .*folder\.gguf is a folder; to-gguf writes one \.gguf file: give a file path/);
    assert.ok(existsSync(join(out, 'keep')));
  });
});
