/**
 * The command spine: inputs → plan → atomic output → sink → per-item loop with progress → report.
 * A command supplies what is its own (what it opens, its plan, its sink, its per-item operation and
 * its report); the spine does, once for all of them, what each used to repeat: tracking inputs,
 * refusing an output that overlaps one, closing every input whatever happens, writing the output
 * under a temporary name that becomes the destination only on success, reading the next item
 * while the current one is worked on, and reporting progress.
 */
import { assertNotInput, withAtomicSink } from '../io/atomic.js';
import { withInputTracking } from '../io/inputs.js';
import type { OnProgress } from '../progress.js';
import { prefetch } from './prefetch.js';

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
  /** the temporary output folder (becomes `output.dir` on success), for side files */
  readonly tmpPath: string;
}

export interface RunParams<R, P extends Plan, V, S extends { abort(): Promise<void> }, Row, T> {
  /**
   * The paths the caller names as inputs: an output that is, lies in or contains one is refused
   * before anything is opened. Whatever is read later is checked again when the output is made.
   */
  inputs: readonly string[];
  /** Opens the inputs, passing each to `keep` as soon as it is open. */
  open(keep: Keep): Promise<R>;
  plan(res: R): P | Promise<P>;
  output: {
    dir: string;
    /** replace a non-empty `dir` */
    overwrite?: boolean;
    sink(tmpPath: string, ctx: Planned<R, P>): Promise<S>;
  };
  /** Reads what one item needs; runs one item ahead of `each`. */
  load(item: P['items'][number], ctx: Planned<R, P>): Promise<V>;
  /** The per-item operation; its rows reach `finish` in item order. */
  each(item: P['items'][number], value: V, ctx: Writing<R, P, S>): Promise<Row>;
  /** Finishes the sink, writes side files and returns the report; the output is committed after it. */
  finish(rows: Row[], ctx: Writing<R, P, S>): Promise<T>;
  /** called after each item */
  onProgress?: OnProgress;
}

/** Runs one command through the spine; see RunParams. */
export function runCommand<R, P extends Plan, V, S extends { abort(): Promise<void> }, Row, T>(params: RunParams<R, P, V, S, Row, T>): Promise<T> {
  return withInputTracking(async () => {
    const { output } = params;
    assertNotInput(output.dir, [...params.inputs]);
    const opened: Closable[] = [];
    try {
      const res = await params.open((resource) => {
        opened.push(resource);
        return resource;
      });
      const plan = await params.plan(res);
      const planned: Planned<R, P> = { res, plan };
      return await withAtomicSink(
        output.dir,
        { overwrite: output.overwrite },
        (tmpPath) => output.sink(tmpPath, planned),
        async (sink, tmpPath) => {
          const ctx: Writing<R, P, S> = { res, plan, sink, tmpPath };
          const rows: Row[] = [];
          const total = plan.items.length;
          for await (const { item, value, index } of prefetch(plan.items, (item) => params.load(item, planned))) {
            rows.push(await params.each(item, value, ctx));
            params.onProgress?.({ index, total, name: item.name });
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
