import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempFolders } from '../helpers/synthetic.js';
import { OutputIsInputError } from '../../src/io/atomic.js';
import { noteInput } from '../../src/io/inputs.js';
import { runCommand, type Keep } from '../../src/pipeline/run.js';
import type { ProgressEvent } from '../../src/progress.js';

const fresh = tempFolders('loraforge-run-');

/** A sink writing one line per item into out.txt; `finished`/`aborted` record what happened to it. */
async function lineSink(tmpPath: string) {
  const lines: string[] = [];
  const sink = {
    finished: false,
    aborted: false,
    add(line: string) {
      lines.push(line);
    },
    async finish() {
      await writeFile(join(tmpPath, 'out.txt'), lines.join('\n'));
      sink.finished = true;
    },
    async abort() {
      sink.aborted = true;
    },
  };
  return sink;
}

interface Trial {
  input: string;
  out: string;
  /** the item whose operation throws */
  failAt?: string;
  /** a path noted as read while opening (a side file) */
  alsoReads?: string;
}

/** A toy command: one input holding item names; each item is written upper-cased. */
function toyCommand(t: Trial, log: string[], events: ProgressEvent[]) {
  const input = { closed: false, close: async () => void (input.closed = true) };
  let sink: Awaited<ReturnType<typeof lineSink>> | undefined;
  const run = runCommand({
    inputs: [t.input],
    open: async (keep: Keep) => {
      log.push('open');
      if (t.alsoReads) noteInput(t.alsoReads);
      const names = (await readFile(join(t.input, 'items.txt'), 'utf8')).split(',');
      return { file: keep(input), names };
    },
    plan: ({ names }) => {
      log.push('plan');
      return { items: names.map((name) => ({ name })) };
    },
    output: {
      dir: t.out,
      sink: async (tmpPath) => {
        log.push('sink');
        sink = await lineSink(tmpPath);
        return sink;
      },
    },
    load: async (item) => item.name.toUpperCase(),
    each: async (item, value, ctx) => {
      log.push(`each ${item.name}`);
      if (item.name === t.failAt) throw new Error(`failed at ${item.name}`);
      ctx.sink.add(value);
      return value.length;
    },
    finish: async (rows, { sink }) => {
      log.push('finish');
      await sink.finish();
      return { rows };
    },
    onProgress: (e) => events.push(e),
  });
  return { run, input, sink: () => sink };
}

async function inputWith(name: string, items: string): Promise<string> {
  const dir = await fresh(name);
  await writeFile(join(dir, 'items.txt'), items);
  return dir;
}

describe('runCommand', () => {
  it('runs open, plan, sink, each item in order with progress, finish; commits the output and closes the inputs', async () => {
    const input = await inputWith('ok-in', 'a,bb,ccc');
    const out = join(await fresh('ok'), 'out');
    const log: string[] = [];
    const events: ProgressEvent[] = [];
    const toy = toyCommand({ input, out }, log, events);
    assert.deepEqual(await toy.run, { rows: [1, 2, 3] });
    assert.deepEqual(log, ['open', 'plan', 'sink', 'each a', 'each bb', 'each ccc', 'finish']);
    assert.deepEqual(events, [
      { index: 0, total: 3, name: 'a' },
      { index: 1, total: 3, name: 'bb' },
      { index: 2, total: 3, name: 'ccc' },
    ]);
    assert.equal(await readFile(join(out, 'out.txt'), 'utf8'), 'A\nBB\nCCC');
    assert.equal(toy.input.closed, true);
    assert.equal(toy.sink()!.aborted, false);
  });

  it('on a failing item: aborts the sink, leaves nothing at the output, closes the inputs, and reports no later progress', async () => {
    const input = await inputWith('fail-in', 'a,bb,ccc');
    const parent = await fresh('fail-parent');
    const out = join(parent, 'out');
    const log: string[] = [];
    const events: ProgressEvent[] = [];
    const toy = toyCommand({ input, out, failAt: 'bb' }, log, events);
    await assert.rejects(toy.run, /failed at bb/);
    assert.deepEqual(log, ['open', 'plan', 'sink', 'each a', 'each bb']);
    assert.deepEqual(events, [{ index: 0, total: 3, name: 'a' }]);
    assert.deepEqual(await readdir(parent), [], 'neither the output nor its temporary folder is left');
    assert.equal(toy.input.closed, true);
    assert.equal(toy.sink()!.aborted, true);
  });

  it('closes what was opened when a plan fails, before any output is made', async () => {
    const input = await inputWith('plan-in', 'a');
    const parent = await fresh('plan-parent');
    const input2 = { closed: false, close: async () => void (input2.closed = true) };
    const run = runCommand({
      inputs: [input],
      open: async (keep) => ({ f: keep(input2) }),
      plan: (): { items: { name: string }[] } => {
        throw new Error('bad plan');
      },
      output: { dir: join(parent, 'out'), sink: lineSink },
      load: async () => 0,
      each: async () => 0,
      finish: async () => 0,
    });
    await assert.rejects(run, /bad plan/);
    assert.equal(input2.closed, true);
    assert.deepEqual(await readdir(parent), []);
  });

  it('refuses an output inside a named input before opening anything', async () => {
    const input = await inputWith('named-in', 'a');
    const log: string[] = [];
    const toy = toyCommand({ input, out: join(input, 'out') }, log, []);
    await assert.rejects(toy.run, OutputIsInputError);
    assert.deepEqual(log, []);
    assert.deepEqual(await readdir(input), ['items.txt']);
  });

  it('refuses an output overlapping a path read while opening, before any item runs, and closes the inputs', async () => {
    const input = await inputWith('read-in', 'a');
    const side = await fresh('side-file-folder');
    const log: string[] = [];
    const toy = toyCommand({ input, out: join(side, 'out'), alsoReads: side }, log, []);
    await assert.rejects(toy.run, OutputIsInputError);
    assert.deepEqual(log, ['open', 'plan']);
    assert.deepEqual(await readdir(side), []);
    assert.equal(toy.input.closed, true);
  });
});
