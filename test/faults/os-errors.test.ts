/**
 * OS errors reach the user as one line: their path (never our hidden temporaries), what happened,
 * what to do. Real conditions where a root-run test can make them, synthetic errors otherwise.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { convertToGguf } from '../../src/to-gguf/to-gguf.js';
import { inspectPath } from '../../src/inspect/inspect.js';
import { atomicOutputDir } from '../../src/io/atomic.js';
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

/** The one line the CLI prints for what `promise` rejects with. */
async function lineFor(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    const line = describeOsError(err);
    assert.ok(line, `not an OS error: ${(err as Error).message}`);
    return line;
  }
  assert.fail('expected a rejection');
}

describe('OS errors from the library (real conditions)', () => {
  let c: FaultCorpus;
  before(async () => {
    c = await makeFaultCorpus();
  });
  after(() => c.remove());

  it('an output under a regular file (ENOTDIR)', async () => {
    assert.match(await lineFor(atomicOutputDir(join(c.file, 'sub'))), /file\/sub: part of this path is a file, not a folder: check the path$/);
  });

  it('an input that is a symlink loop (ELOOP) or a dangling symlink', async () => {
    assert.match(await lineFor(inspectPath({ path: c.loop })), /loop1: too many levels of symbolic links .*: fix the link or give the real path$/);
    assert.match(await lineFor(inspectPath({ path: c.dangling })), /dangling: a symbolic link to .*nowhere, which does not exist: fix the link or give the real path$/);
  });

  it('a folder where a file is read (EISDIR) is named', async () => {
    const bad = join(c.root, 'dir-config');
    mkdirSync(join(bad, 'adapter_config.json'), { recursive: true });
    assert.match(await lineFor(inspectPath({ path: bad })), /dir-config\/adapter_config\.json: is a folder where a file was expected/);
  });

  it('a write the kernel refuses names the target, not the temporary (/sys: EPERM or EACCES even for root)', async () => {
    assert.equal(await lineFor(atomicOutputDir('/sys/kernel/loraforge-test-out')), '/sys/kernel/loraforge-test-out: permission denied when writing: choose a path you can write to');
  });

  it('to-gguf creates a missing parent folder like the other commands', async () => {
    const out = join(c.root, 'new', 'sub', 'x.gguf');
    await convertToGguf({ model: c.model, out, dtype: 'F32', vocabFrom: c.vocab });
    assert.ok(existsSync(out));
  });
});

describe('OS errors through the CLI', () => {
  let c: FaultCorpus;
  before(async () => {
    c = await makeFaultCorpus();
  });
  after(() => c.remove());

  it('one line, exit 1: --out under a regular file', async () => {
    const r = await runCli(['merge-adapters', '--method', 'linear', '--adapter', c.adapter, '--adapter', c.adapter, '--out', join(c.file, 'sub'), '--quiet']);
    assertExplained(r, /^loraforge: .*file\/sub: part of this path is a file, not a folder: check the path$/m);
  });

  it('one line, exit 1: an input that is a dangling symlink', async () => {
    assertExplained(await runCli(['inspect', c.dangling]), /^loraforge: .*dangling: a symbolic link to .*nowhere, which does not exist/m);
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
