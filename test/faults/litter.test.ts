/**
 * Nothing of ours may litter the user's machine: a run leaves $TMPDIR as it found it and prints
 * no warning of onnxruntime's telemetry (which, left on, writes mat-debug-<pid>.log and .ses into
 * $TMPDIR and a device id under ~/.cache, and when HOME is not writable warns and drops a
 * `:memory:.ses` into the working directory).
 */
import assert from 'node:assert/strict';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli.js';
import { makeFaultCorpus, type FaultCorpus } from './corpus.js';

describe('a run leaves no litter', () => {
  let c: FaultCorpus;
  before(async () => {
    c = await makeFaultCorpus();
  });
  after(() => c.remove());

  it('$TMPDIR and the working directory stay empty, no telemetry warning (HOME not writable)', async () => {
    const tmp = join(c.root, 'tmpdir');
    const cwd = join(c.root, 'cwd');
    await mkdir(tmp);
    await mkdir(cwd);
    const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp, HOME: c.file, XDG_CACHE_HOME: join(c.file, 'cache') };
    delete env['ORT_DISABLE_TELEMETRY'];
    // an SVD merge runs GEMMs on onnxruntime
    const r = await runCli(['merge-adapters', '--method', 'svd', '--adapter', c.adapter, '--adapter', c.adapter, '--out', join(c.root, 'merged'), '--quiet'], { env, cwd });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /telemetry|onnxruntime/i);
    // tsx's transpile cache exists only when running from source (bin/loraforge.js without dist/)
    assert.deepEqual((await readdir(tmp)).filter((n) => !n.startsWith('tsx-')), []);
    assert.deepEqual(await readdir(cwd), []);
  });
});
