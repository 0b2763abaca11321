/**
 * Temporaries never outlive their run: an interrupted command removes its own, and the next run
 * to the same target removes those of runs that died without a chance to (SIGKILL), touching only
 * names of our own shape whose process is gone.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { watch } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { newTemporary, releaseTemporary, sweepStaleTemporaries } from '../../src/io/temporaries.js';
import { REPO_ROOT } from '../helpers/cli.js';
import { llamaBase, writePair, type Tensors } from '../helpers/extract.js';
import { makeTempDir } from '../helpers/synthetic.js';

/** The pid of a process that has already exited. */
function deadPid(): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', '']);
    child.on('error', reject);
    child.on('exit', () => resolve(child.pid as number));
  });
}

describe('sweepStaleTemporaries', () => {
  let dir: string;
  before(async () => {
    dir = await makeTempDir('lf-temps-');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("removes a dead run's temporaries of the target, restores its moved-aside output, and leaves everything else", async () => {
    const dead = await deadPid();
    const target = join(dir, 'out');
    const entries = {
      deadTmp: `.out.tmp-${dead}-0123456789ab`,
      deadShard: `.out.part-0.data-${dead}-0123456789ab`,
      deadOld: `.out.old-${dead}-0123456789ab`,
      liveTmp: `.out.tmp-${process.pid}-0123456789ab`,
      otherTarget: `.output.tmp-${dead}-0123456789ab`,
      notOurs: `.out.tmp-backup`,
      userFile: 'out.tmp',
    };
    for (const name of Object.values(entries)) await mkdir(join(dir, name));
    await writeFile(join(dir, entries.deadOld, 'adapter_config.json'), '{}');

    const swept = await sweepStaleTemporaries(target);

    assert.deepEqual(swept.sort(), [entries.deadOld, entries.deadShard, entries.deadTmp].map((n) => join(dir, n)).sort());
    assert.deepEqual(
      (await readdir(dir)).sort(),
      ['out', entries.liveTmp, entries.otherTarget, entries.notOurs, entries.userFile].sort(),
      'only the dead run of this target was cleaned',
    );
    assert.equal(await readFile(join(target, 'adapter_config.json'), 'utf8'), '{}', 'the moved-aside output is back in place');
  });

  it('removes a moved-aside previous output when the new one made it into place', async () => {
    const dead = await deadPid();
    const target = join(dir, 'done');
    await mkdir(target);
    await mkdir(join(dir, `.done.old-${dead}-aaaaaaaaaaaa`));
    await sweepStaleTemporaries(target);
    assert.deepEqual((await readdir(dir)).filter((n) => n.includes('done')), ['done']);
  });

  it('is a no-op for a folder that does not exist yet', async () => {
    assert.deepEqual(await sweepStaleTemporaries(join(dir, 'missing', 'out')), []);
  });

  it('names temporaries so that the sweep recognises them', async () => {
    const target = join(dir, 'named');
    const t = newTemporary(target, 'part-3.data');
    releaseTemporary(t);
    assert.match(t, new RegExp(`/\\.named\\.part-3\\.data-${process.pid}-[0-9a-f]{12}$`));
  });
});

describe('an interrupted command leaves nothing behind', () => {
  let dir: string;
  let pair: { a: string; b: string };
  before(async () => {
    dir = await makeTempDir('lf-signal-');
    // Big enough that extraction takes a while after the output folder appears.
    const shape = { layers: 6, hidden: 384, intermediate: 1024, heads: 6, kvHeads: 2, vocab: 200 };
    const a = llamaBase(shape, 1);
    const b: Tensors = {};
    for (const [name, t] of Object.entries(a)) b[name] = { shape: t.shape, data: t.data.map((x, i) => x + (i % 7 === 0 ? 1e-2 : 0)) };
    pair = await writePair(dir, a, b, { dtype: 'F32' });
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const extractArgs = (out: string) => [join(REPO_ROOT, 'bin', 'loraforge.js'), 'extract', '--model-a', pair.a, '--model-b', pair.b, '--out', out, '--rank', '8', '--verify', '--quiet'];

  /** Starts extract into `parent/adapter` and sends `signal` as soon as its temporary output appears. */
  async function interrupt(parent: string, signal: NodeJS.Signals): Promise<{ diedOf: NodeJS.Signals | null; stderr: string }> {
    const child = spawn(process.execPath, extractArgs(join(parent, 'adapter')), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const sawTemp = new Promise<void>((resolve) => {
      const w = watch(parent, (_event, name) => {
        if (name?.startsWith('.adapter.tmp-')) {
          w.close();
          resolve();
        }
      });
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, sig) => resolve({ code, signal: sig })));
    const first = await Promise.race([sawTemp.then(() => 'temp' as const), exited.then(() => 'exit' as const)]);
    assert.equal(first, 'temp', `extract finished before it could be interrupted: ${stderr}`);
    child.kill(signal);
    return { diedOf: (await exited).signal, stderr };
  }

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} during extract: the temporary output is removed and the process dies of the signal`, async () => {
      const parent = join(dir, `runs-${signal}`);
      await mkdir(parent);
      const { diedOf, stderr } = await interrupt(parent, signal);
      assert.equal(diedOf, signal, stderr);
      assert.deepEqual(await readdir(parent), [], 'neither the output nor a temporary remains');
    });
  }

  it('after SIGKILL, the next run to the same output removes what the killed one left', async () => {
    const parent = join(dir, 'runs-SIGKILL');
    await mkdir(parent);
    await interrupt(parent, 'SIGKILL');
    const left = await readdir(parent);
    assert.equal(left.length, 1, 'a killed run cannot clean up');
    assert.match(left[0], /^\.adapter\.tmp-\d+-[0-9a-f]{12}$/);
    const rerun = spawn(process.execPath, extractArgs(join(parent, 'adapter')), { stdio: 'ignore' });
    assert.equal(await new Promise((resolve) => rerun.on('exit', resolve)), 0);
    assert.deepEqual(await readdir(parent), ['adapter']);
  });

  it("SIGINT during the demo removes its generated models from the temporary folder", async () => {
    const tmp = join(dir, 'demo-tmp');
    await mkdir(tmp);
    const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'loraforge.js'), 'demo', '--quiet'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, TMPDIR: tmp },
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, sig) => resolve(sig)));
    const sawModels = new Promise<void>((resolve) => {
      const w = watch(tmp, (_event, name) => {
        if (name?.startsWith('loraforge-demo-')) {
          w.close();
          resolve();
        }
      });
    });
    assert.equal(await Promise.race([sawModels.then(() => 'models'), exited.then(() => 'exit')]), 'models');
    child.kill('SIGINT');
    assert.equal(await exited, 'SIGINT');
    assert.deepEqual((await readdir(tmp)).filter((n) => n.startsWith('loraforge-demo-')), []);
  });
});

describe('atomicOutputDir after a run died mid-replacement', () => {
  it('puts the previous output back before judging the target, so --force is still needed to replace it', async () => {
    const { atomicOutputDir } = await import('../../src/io/atomic.js');
    const dir = await makeTempDir('lf-temps-old-');
    try {
      const dead = await deadPid();
      await mkdir(join(dir, `.out.old-${dead}-bbbbbbbbbbbb`));
      await writeFile(join(dir, `.out.old-${dead}-bbbbbbbbbbbb`, 'kept'), 'previous');
      await assert.rejects(atomicOutputDir(join(dir, 'out')), /already exists and is not empty/);
      assert.equal(await readFile(join(dir, 'out', 'kept'), 'utf8'), 'previous');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
