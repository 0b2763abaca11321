/**
 * The command spine: inputs → plan → atomic output → sink → per-item loop with progress → report.
 * A command supplies what is its own (what it opens, its plan, its sink, its per-item operation and
 * its report); the spine does, once for all of them, what each used to repeat: tracking inputs,
 * refusing an output that overlaps one, closing every input whatever happens, writing the output
 * under a temporary name that becomes the destination only on success, reading the next item
 * while the current one is worked on, and reporting progress.
 *
 * On it: apply, convert, edit (both flows), edora-init, extract, merge, merge-adapters, to-gguf.
 * Not on it, and why (one line per command):
 * - spectrum: adapterSpectrum/deltaSpectrum compute a result and write nothing; writeSpectrumOutputs writes it afterwards from that result, with no inputs to open and no items (withAtomicOutput).
 * - demo: it has no inputs; it generates its model pair into two sinks at once and then calls extractLora, which is on the spine.
 * - inspect: it writes no output.
 */
import { assertNotInput, withAtomicSink, type AtomicTarget } from '../io/atomic.js';
import { withInputTracking } from '../io/inputs.js';
import type { OnProgress } from '../progress.js';
import { prefetch, type ReadAhead } from './prefetch.js';

export interface Closable {
  close(): Promise<void>;
}

/** Registers an opened input to be closed when the run ends; returns it. */
export type Keep = <C extends Closable>(resource: C) => C;

/** What a plan has to offer the loop: the items, each named for progress events. */
export interface Plan {
  readonly items: readonly { readonly name: string }[];
}

export interface Planned<R, P> {
  readonly res: R;
  readonly plan: P;
}

export interface Writing<R, P, S> extends Planned<R, P> {
  readonly sink: S;
  /** where the sink was opened: the temporary output folder (becomes `output.dir` on success, for side files), or the output file */
  readonly tmpPath: string;
}

type Item<P extends Plan> = P['items'][number];

/** The output: a folder, or a single file whose sink renames its own temporary into place (io/atomic.ts AtomicTarget). */
type Output<R, P, S> = ({ dir: string; /** replace a non-empty `dir` */ overwrite?: boolean } | { file: string }) & {
  /** Opens the sink in the temporary folder, or at the output file. */
  sink(path: string, ctx: Planned<R, P>): Promise<S>;
};

/** How items' values are read: one by one, ahead of the loop, or by the command's own reader. */
type Reading<R, P extends Plan, V> =
  | {
      /** Reads what one item needs; runs ahead of `each` (one item, unless `readAhead` says more). */
      load(item: Item<P>, ctx: Planned<R, P>): Promise<V>;
      readAhead?: ReadAhead<Item<P>>;
      stream?: never;
    }
  | {
      /**
       * The command's own reader (a reader thread with its read-ahead): yields each item's value in
       * item order, once the sink is open. Returning early must release what it holds.
       */
      stream(ctx: Planned<R, P>): AsyncIterable<V>;
      load?: never;
      readAhead?: never;
    };

export type RunParams<R, P extends Plan, V, S extends { abort(): Promise<void> }, Row, T> = Reading<R, P, V> & {
  /**
   * The paths the caller names as inputs: an output that is, lies in or contains one is refused
   * before anything is opened. Whatever is read later is checked again when the output is made.
   */
  inputs: readonly string[];
  /** Opens the inputs, passing each to `keep` as soon as it is open. */
  open(keep: Keep): Promise<R>;
  plan(res: R): P | Promise<P>;
  output: Output<R, P, S>;
  /** The per-item operation; its rows reach `finish` in item order. */
  each(item: Item<P>, value: V, ctx: Writing<R, P, S>): Promise<Row>;
  /**
   * The next item's value is awaited while this item's operation still runs (its write, say):
   * operations still run one at a time and in item order, and progress follows each one's end.
   */
  overlap?: boolean;
  /** Finishes the sink, writes side files and returns the report; the output is committed after it. */
  finish(rows: Row[], ctx: Writing<R, P, S>): Promise<T>;
  /** called after each item */
  onProgress?: OnProgress;
};

/** The items with their values, in item order. */
async function* valuesOf<R, P extends Plan, V>(reading: Reading<R, P, V>, planned: Planned<R, P>): AsyncGenerator<{ item: Item<P>; value: V; index: number }> {
  if (reading.stream === undefined) {
    const load = reading.load;
    yield* prefetch(planned.plan.items, (item) => load(item, planned), reading.readAhead);
    return;
  }
  let index = 0;
  for await (const value of reading.stream(planned)) {
    yield { item: planned.plan.items[index], value, index };
    index++;
  }
}

/** Runs one command through the spine; see RunParams. */
export function runCommand<R, P extends Plan, V, S extends { abort(): Promise<void> }, Row, T>(params: RunParams<R, P, V, S, Row, T>): Promise<T> {
  return withInputTracking(async () => {
    const { output } = params;
    const target: AtomicTarget = 'dir' in output ? { dir: output.dir, overwrite: output.overwrite } : { file: output.file };
    assertNotInput('dir' in target ? target.dir : target.file, [...params.inputs]);
    const opened: Closable[] = [];
    try {
      const res = await params.open((resource) => {
        opened.push(resource);
        return resource;
      });
      const plan = await params.plan(res);
      const planned: Planned<R, P> = { res, plan };
      return await withAtomicSink(
        target,
        (path) => output.sink(path, planned),
        async (sink, tmpPath) => {
          const ctx: Writing<R, P, S> = { res, plan, sink, tmpPath };
          const rows: Row[] = [];
          const total = plan.items.length;
          let running: Promise<void> | undefined;
          try {
            for await (const { item, value, index } of valuesOf(params, planned)) {
              await running;
              const step = params.each(item, value, ctx).then((row) => {
                rows.push(row);
                params.onProgress?.({ index, total, name: item.name });
              });
              running = params.overlap ? step : undefined;
              if (running) running.catch(() => {}); // surfaced when awaited, at the next item or below
              else await step;
            }
            await running;
          } finally {
            // the sink may be aborted next: no operation may still be writing to it
            if (running) await running.catch(() => undefined);
          }
          return params.finish(rows, ctx);
        },
      );
    } finally {
      // Inputs are only read: by now the output is committed or removed, and a failing close
      // neither hides the run's own error nor undoes a finished run.
      for (const resource of opened) await resource.close().catch(() => undefined);
    }
  });
}
