import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempFolders } from '../helpers/synthetic.js';
import { OutputIsInputError } from '../../src/io/atomic.js';
import { noteInput } from '../../src/io/inputs.js';
import { runCommand, type Keep } from '../../src/pipeline/run.js';
import { prefetch } from '../../src/pipeline/prefetch.js';
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
  it('a file output: refused when it is an input, its sink opened at the file itself and aborted on failure', async () => {
    const input = await inputWith('file-in', 'a,bb');
    await assert.rejects(
      runCommand({ inputs: [input], open: async () => 0, plan: () => ({ items: [] }), output: { file: input, sink: lineSink }, load: async () => 0, each: async () => 0, finish: async () => 0 }),
      OutputIsInputError,
    );
    const file = join(await fresh('file-out'), 'out.gguf');
    let at: string | undefined;
    let sink: Awaited<ReturnType<typeof lineSink>> | undefined;
    const run = runCommand({
      inputs: [input],
      open: async () => 0,
      plan: () => ({ items: [{ name: 'a' }, { name: 'bb' }] }),
      output: {
        file,
        sink: async (path) => {
          at = path;
          sink = await lineSink(join(path, '..'));
          return sink;
        },
      },
      load: async (item) => item.name,
      each: async (item) => {
        if (item.name === 'bb') throw new Error('failed at bb');
      },
      finish: async () => 0,
    });
    await assert.rejects(run, /failed at bb/);
    assert.equal(at, file);
    assert.equal(sink!.aborted, true);
  });

  it("a stream: the command's own reader yields the values, given to each in item order", async () => {
    const input = await inputWith('stream-in', 'a');
    const out = join(await fresh('stream'), 'out');
    let released = false;
    const rows = await runCommand({
      inputs: [input],
      open: async () => 0,
      plan: () => ({ items: [{ name: 'a' }, { name: 'b' }, { name: 'c' }] }),
      output: { dir: out, sink: lineSink },
      stream: async function* ({ plan }) {
        try {
          for (const item of plan.items) yield item.name.repeat(2);
        } finally {
          released = true;
        }
      },
      each: async (item, value) => `${item.name}:${value}`,
      finish: async (rows, { sink }) => {
        await sink.finish();
        return rows;
      },
    });
    assert.deepEqual(rows, ['a:aa', 'b:bb', 'c:cc']);
    assert.equal(released, true);
  });

  it('overlap: the next value is read while an operation runs; operations stay one at a time, rows and progress in order; a failure waits for the running one', async () => {
    const input = await inputWith('overlap-in', 'a');
    const log: string[] = [];
    const events: ProgressEvent[] = [];
    const overlapped = (out: string, failAt?: string) =>
      runCommand({
        inputs: [input],
        open: async () => 0,
        plan: () => ({ items: ['a', 'b', 'c'].map((name) => ({ name })) }),
        output: { dir: out, sink: lineSink },
        load: async (item) => {
          log.push(`load ${item.name}`);
          if (item.name === failAt) throw new Error(`cannot read ${item.name}`);
          return item.name;
        },
        overlap: true,
        each: async (item) => {
          log.push(`start ${item.name}`);
          await new Promise((r) => setTimeout(r, 5));
          log.push(`end ${item.name}`);
          return item.name;
        },
        finish: async (rows, { sink }) => {
          await sink.finish();
          return rows;
        },
        onProgress: (e) => events.push(e),
      });
    assert.deepEqual(await overlapped(join(await fresh('overlap'), 'out')), ['a', 'b', 'c']);
    assert.deepEqual(log, ['load a', 'load b', 'start a', 'load c', 'end a', 'start b', 'end b', 'start c', 'end c']);
    assert.deepEqual(events.map((e) => e.name), ['a', 'b', 'c']);
    log.length = 0;
    await assert.rejects(overlapped(join(await fresh('overlap-fail'), 'out'), 'c'), /cannot read c/);
    assert.deepEqual(log.slice(-2), ['start b', 'end b'], 'the running operation ends before the run fails');
  });
});

describe('prefetch', () => {
  it('loads beyond the next item only within the byte budget, and waits for loads in flight when stopped early', async () => {
    const items = [{ n: 'a', bytes: 10 }, { n: 'b', bytes: 10 }, { n: 'c', bytes: 10 }, { n: 'd', bytes: 1 }];
    let inFlight = 0;
    let most = 0;
    let settled = 0;
    const load = async (x: (typeof items)[number]) => {
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, 5));
      inFlight--;
      settled++;
      return x.n;
    };
    const seen: string[] = [];
    for await (const { value } of prefetch(items, load, { depth: 3, budget: { bytes: 15, cost: (x) => x.bytes } })) seen.push(value);
    assert.deepEqual(seen, ['a', 'b', 'c', 'd']);
    assert.equal(most, 2, 'a third 10-byte load would pass the 15-byte budget');
    settled = 0;
    for await (const { value } of prefetch(items, load, { depth: 3 })) if (value === 'a') break;
    assert.equal(settled, 4, 'every load started has finished when the loop is left');
  });
});
