/**
 * The one protocol between the main thread and our worker threads (the merge workers, the
 * extraction reader): a request carries an id and gets exactly one reply, its value or its error;
 * a notice is one-way (e.g. arrays handed back for reuse); `close` lets the worker finish what it
 * was asked, close its files and end. Arrays travel by transfer when the sender lists them.
 *
 * Errors cross as their message plus their own plain fields (a reader's `file` and `tensor`, the
 * class name), never their stack: what the user sees names the file and tensor either way.
 */
import { parentPort, type Transferable, type Worker } from 'node:worker_threads';
import type { ReadyMessage } from './worker-thread.js';

type ToWorker<Req, Note> = { kind: 'request'; id: number; body: Req } | { kind: 'notice'; body: Note } | { kind: 'close' };

/** An error as it crosses the thread. */
interface CrossedError {
  message: string;
  fields: Record<string, string | number | boolean>;
}

type FromWorker<Res> = { id: number; value: Res } | { id: number; error: CrossedError };

function crossing(err: unknown): CrossedError {
  if (!(err instanceof Error)) return { message: String(err), fields: {} };
  const fields: CrossedError['fields'] = {};
  for (const [key, value] of Object.entries(err)) {
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') fields[key] = value;
  }
  if (err.name !== 'Error') fields.name = err.name;
  return { message: err.message, fields };
}

function revived({ message, fields }: CrossedError): Error {
  return Object.assign(new Error(message), fields);
}

export interface WorkerHandlers<Req, Res, Note> {
  /** Answers one request (synchronously: a worker does one thing at a time, in order). */
  request(body: Req): Res;
  /** Buffers of a reply to move rather than copy. */
  transfer?(value: Res): Transferable[];
  notice?(body: Note): void;
  /** Closes files before the thread ends. */
  close(): void;
}

/** Worker side: answers the main thread's messages with `handlers`, then says it is ready. */
export function serveRequests<Req, Res, Note = never>(handlers: WorkerHandlers<Req, Res, Note>): void {
  const port = parentPort;
  if (!port) throw new Error('a loraforge worker module runs as a worker thread only');
  port.on('message', (m: ToWorker<Req, Note>) => {
    if (m.kind === 'notice') return handlers.notice?.(m.body);
    if (m.kind === 'close') {
      handlers.close();
      port.close();
      return;
    }
    let value: Res;
    try {
      value = handlers.request(m.body);
    } catch (err) {
      port.postMessage({ id: m.id, error: crossing(err) } satisfies FromWorker<Res>);
      return;
    }
    port.postMessage({ id: m.id, value } satisfies FromWorker<Res>, handlers.transfer?.(value) ?? []);
  });
  port.postMessage({ ready: true } satisfies ReadyMessage);
}

interface Pending<Res> {
  resolve(value: Res): void;
  reject(err: Error): void;
}

/**
 * Main-thread side over one started worker (pipeline/worker-thread.ts startWorker). `what` names
 * the thread in errors ("a merge worker"). When the thread fails (an uncaught error, or an exit
 * before close()), every pending and later request rejects with that error and `onFailure` hears it.
 */
export class WorkerClient<Req, Res, Note = never> {
  private readonly pending = new Map<number, Pending<Res>>();
  private readonly exited: Promise<void>;
  private nextId = 0;
  private closing = false;
  private failed?: Error;

  constructor(
    private readonly worker: Worker,
    private readonly what: string,
    private readonly onFailure?: (err: Error) => void,
  ) {
    this.exited = new Promise((resolve) => worker.once('exit', () => resolve()));
    worker.on('message', (m: FromWorker<Res> | ReadyMessage) => {
      if ('ready' in m) return;
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if ('error' in m) p?.reject(revived(m.error));
      else p?.resolve(m.value);
    });
    worker.on('error', (err) => this.fail(err));
    worker.on('exit', (code) => {
      if (!this.closing) this.fail(new Error(`${what} exited unexpectedly (code ${code})`));
    });
  }

  /** Why the thread can take no more requests, if it cannot. */
  get failure(): Error | undefined {
    return this.failed;
  }

  request(body: Req, transfer: readonly Transferable[] = []): Promise<Res> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise<Res>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ kind: 'request', id, body } satisfies ToWorker<Req, Note>, transfer);
    });
  }

  /** A one-way message; dropped once the thread has failed or closed. */
  notify(body: Note, transfer: readonly Transferable[] = []): void {
    if (!this.failed) this.worker.postMessage({ kind: 'notice', body } satisfies ToWorker<Req, Note>, transfer);
  }

  /** Lets the thread finish what it was asked and close its files; kills it if it already failed. */
  async close(): Promise<void> {
    if (this.closing) return this.exited;
    this.closing = true;
    if (this.failed) {
      await this.worker.terminate();
      return;
    }
    this.failed = new Error(`${this.what} was closed`);
    this.worker.postMessage({ kind: 'close' } satisfies ToWorker<Req, Note>);
    await this.exited;
  }

  private fail(err: Error): void {
    const first = !this.failed;
    this.failed ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    if (first) this.onFailure?.(err);
  }
}
