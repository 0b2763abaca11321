import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempFolders } from '../helpers/synthetic.js';
import { assertNotInput, atomicOutputDir, atomicWriteFile, withAtomicOutput, withAtomicSink } from '../../src/io/atomic.js';
import { describeOsError } from '../../src/io/os-error.js';

const fresh = tempFolders('loraforge-atomic-');

describe('atomicOutputDir', () => {
  it('writes in a hidden sibling and moves it into place on commit', async () => {
    const parent = await fresh('commit');
    const out = join(parent, 'merged');
    const d = await atomicOutputDir(out);
    assert.match(d.tmpPath, /\/\.merged\.tmp-\d+-[0-9a-f]+$/);
    await writeFile(join(d.tmpPath, 'a.txt'), 'hello');
    assert.deepEqual(await readdir(parent), [d.tmpPath.split('/').pop()], 'nothing under the final name before commit');
    await d.commit();
    assert.deepEqual(await readdir(parent), ['merged']);
    assert.equal(await readFile(join(out, 'a.txt'), 'utf8'), 'hello');
    await assert.rejects(d.commit(), /already committed/);
    await d.abort(); // no-op after commit
    assert.equal(await readFile(join(out, 'a.txt'), 'utf8'), 'hello');
  });

  it('creates missing parent folders and accepts an existing empty directory', async () => {
    const parent = await fresh('parents');
    const empty = join(parent, 'empty');
    await mkdir(empty);
    const d1 = await atomicOutputDir(join(parent, 'x', 'y', 'out'));
    await d1.commit();
    const d2 = await atomicOutputDir(empty);
    await writeFile(join(d2.tmpPath, 'f'), '1');
    await d2.commit();
    assert.deepEqual(await readdir(empty), ['f']);
  });

  it('refuses a non-empty directory without overwrite, early and at commit', async () => {
    const parent = await fresh('refuse');
    const out = join(parent, 'out');
    await mkdir(out);
    await writeFile(join(out, 'old.txt'), 'old');
    await assert.rejects(atomicOutputDir(out), /already exists and is not empty.*--force/);
    const late = join(parent, 'late');
    const d = await atomicOutputDir(late);
    await mkdir(late);
    await writeFile(join(late, 'x'), 'someone else');
    await assert.rejects(d.commit(), /already exists and is not empty/);
    await d.abort();
    assert.deepEqual((await readdir(parent)).sort(), ['late', 'out']);
  });

  it('replaces the old directory with overwrite and leaves no leftovers', async () => {
    const parent = await fresh('overwrite');
    const out = join(parent, 'out');
    await mkdir(out);
    await writeFile(join(out, 'old.txt'), 'old');
    const d = await atomicOutputDir(out, { overwrite: true });
    await writeFile(join(d.tmpPath, 'new.txt'), 'new');
    await d.commit();
    assert.deepEqual(await readdir(parent), ['out']);
    assert.deepEqual(await readdir(out), ['new.txt']);
  });

  it('refuses a destination that is a file', async () => {
    const parent = await fresh('isfile');
    await writeFile(join(parent, 'out'), 'x');
    await assert.rejects(atomicOutputDir(join(parent, 'out'), { overwrite: true }), /not a directory/);
  });

  it('abort removes the temporary directory', async () => {
    const parent = await fresh('abort');
    const d = await atomicOutputDir(join(parent, 'out'));
    await writeFile(join(d.tmpPath, 'partial'), 'x');
    await d.abort();
    await d.abort();
    assert.deepEqual(await readdir(parent), []);
    await assert.rejects(d.commit(), /already aborted/);
  });
});

describe('withAtomicOutput (the one way commands write an output folder)', () => {
  it('commits what write put in the temporary folder and returns its result', async () => {
    const parent = await fresh('output-ok');
    const out = join(parent, 'out');
    const result = await withAtomicOutput(out, {}, async (tmpPath) => {
      await writeFile(join(tmpPath, 'report.json'), '{}');
      assert.deepEqual(await readdir(parent), [tmpPath.split('/').pop()], 'nothing under the final name before it returns');
      return 'done';
    });
    assert.equal(result, 'done');
    assert.deepEqual(await readdir(parent), ['out']);
    assert.equal(await readFile(join(out, 'report.json'), 'utf8'), '{}');
  });

  it('leaves nothing behind when write fails, and keeps an old output it was to replace', async () => {
    const parent = await fresh('output-fail');
    const out = join(parent, 'out');
    await mkdir(out);
    await writeFile(join(out, 'old'), 'old');
    const failing = withAtomicOutput(out, { overwrite: true }, async (tmpPath) => {
      await writeFile(join(tmpPath, 'half'), 'h');
      throw new Error('tensor "x" failed');
    });
    await assert.rejects(failing, /tensor "x" failed/);
    assert.deepEqual(await readdir(parent), ['out']);
    assert.deepEqual(await readdir(out), ['old']);
  });

  it('a write error with no path of its own (a full disk) is given the output, so the user hears where', async () => {
    const parent = await fresh('output-enospc');
    const out = join(parent, 'out');
    const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
    const failing = withAtomicOutput(out, {}, async () => {
      throw full;
    });
    await assert.rejects(failing, (err: NodeJS.ErrnoException) => {
      assert.equal(err.path, out);
      assert.equal(describeOsError(err), `${out}: no space left on the device while writing: free some space or choose a path on another disk`);
      return true;
    });
    assert.deepEqual(await readdir(parent), []);
  });
});

describe('withAtomicSink', () => {
  /** A stand-in sink that writes one file into the output folder and records whether it was aborted. */
  function fileSink(tmpPath: string) {
    const sink = { tmpPath, aborted: false, abort: async () => void (sink.aborted = true) };
    return Promise.resolve(sink);
  }

  it('commits what the sink wrote and returns what write returned', async () => {
    const parent = await fresh('sink-ok');
    const out = join(parent, 'out');
    let opened: Awaited<ReturnType<typeof fileSink>> | undefined;
    const result = await withAtomicSink({ dir: out }, fileSink, async (sink, tmpPath) => {
      opened = sink;
      assert.equal(sink.tmpPath, tmpPath, 'the sink is opened in the temporary folder');
      await writeFile(join(tmpPath, 'weights'), 'w');
      return 42;
    });
    assert.equal(result, 42);
    assert.equal(opened?.aborted, false);
    assert.deepEqual(await readdir(parent), ['out']);
    assert.equal(await readFile(join(out, 'weights'), 'utf8'), 'w');
  });

  it('aborts the sink and leaves nothing behind when write fails', async () => {
    const parent = await fresh('sink-fail');
    let opened: Awaited<ReturnType<typeof fileSink>> | undefined;
    const failing = withAtomicSink({ dir: join(parent, 'out') }, fileSink, async (sink, tmpPath) => {
      opened = sink;
      await writeFile(join(tmpPath, 'partial'), 'x');
      throw new Error('tensor "x" is broken');
    });
    await assert.rejects(failing, /tensor "x" is broken/);
    assert.equal(opened?.aborted, true);
    assert.deepEqual(await readdir(parent), []);
  });

  it('removes the temporary folder when the sink cannot be opened', async () => {
    const parent = await fresh('sink-open-fail');
    const failing = withAtomicSink({ dir: join(parent, 'out') }, () => Promise.reject(new Error('no sink')), async () => 1);
    await assert.rejects(failing, /no sink/);
    assert.deepEqual(await readdir(parent), []);
  });

  it('refuses a non-empty folder without overwrite before opening the sink', async () => {
    const parent = await fresh('sink-busy');
    await mkdir(join(parent, 'out'));
    await writeFile(join(parent, 'out', 'keep'), 'k');
    let opened = false;
    const openSink = (tmpPath: string) => {
      opened = true;
      return fileSink(tmpPath);
    };
    const refused = withAtomicSink({ dir: join(parent, 'out') }, openSink, async () => 1);
    await assert.rejects(refused, /already exists and is not empty/);
    assert.equal(opened, false);
    assert.deepEqual(await readdir(join(parent, 'out')), ['keep']);
  });

  it('opens a file target\'s sink at the file itself, and aborts it (naming the file on an OS error) when write fails', async () => {
    const parent = await fresh('sink-file');
    const out = join(parent, 'model.gguf');
    let opened: Awaited<ReturnType<typeof fileSink>> | undefined;
    const failing = withAtomicSink({ file: out }, fileSink, async (sink, path) => {
      opened = sink;
      assert.equal(path, out);
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' });
    });
    await assert.rejects(failing, (err: Error) => {
      assert.equal(describeOsError(err), `${out}: no space left on the device while writing: free some space or choose a path on another disk`);
      return true;
    });
    assert.equal(opened?.tmpPath, out, 'the sink is opened at the file path');
    assert.equal(opened?.aborted, true);
  });
});

describe('atomicWriteFile', () => {
  it('writes and replaces a file without leaving temporaries', async () => {
    const parent = await fresh('writefile');
    const p = join(parent, 'config.json');
    await atomicWriteFile(p, '{"a":1}');
    await atomicWriteFile(p, Uint8Array.of(0x7b, 0x7d));
    assert.equal(await readFile(p, 'utf8'), '{}');
    assert.deepEqual(await readdir(parent), ['config.json']);
  });
  it('fails cleanly when the folder does not exist', async () => {
    await assert.rejects(atomicWriteFile(join(await fresh('missing'), 'nope', 'f'), 'x'), /ENOENT/);
  });
});

describe('assertNotInput', () => {
  it('refuses the input itself, a path inside it, and a folder containing it', async () => {
    const parent = await fresh('inputs');
    const model = join(parent, 'model');
    await mkdir(model);
    assert.throws(() => assertNotInput(model, [model]), /is the input/);
    assert.throws(() => assertNotInput(join(model, 'sub', 'out'), [model]), /inside the input/);
    assert.throws(() => assertNotInput(parent, ['/nonexistent-elsewhere', model]), /contains the input/);
    assert.throws(() => assertNotInput(join(parent, 'model', '..', 'model'), [model]), /is the input/);
    assert.throws(() => assertNotInput(join(model, '..out'), [model]), /inside the input/, 'a name starting with ".." is still inside');
  });
  it('sees through symlinks, also for output paths that do not exist yet', async () => {
    const parent = await fresh('links');
    const model = join(parent, 'model');
    await mkdir(model);
    await symlink(model, join(parent, 'alias'));
    assert.throws(() => assertNotInput(join(parent, 'alias'), [model]), /is the input/);
    assert.throws(() => assertNotInput(join(parent, 'alias', 'new', 'out'), [model]), /inside the input/);
    assert.throws(() => assertNotInput(join(model, 'x'), [join(parent, 'alias')]), /inside the input/);
  });
  it('accepts unrelated paths, including look-alike prefixes', async () => {
    const parent = await fresh('unrelated');
    const model = join(parent, 'model');
    await mkdir(model);
    assertNotInput(join(parent, 'model-merged'), [model]);
    assertNotInput(join(parent, '..model'), [model, join(parent, 'other')]);
  });
});
