/**
 * Where merge arithmetic runs. Decoding inputs and encoding outputs keep the main thread busy, and
 * V8 spends a few nanoseconds per entry and pass on the arithmetic (more, per tensor, than the
 * I/O), so large tensors are merged by a small pool of worker threads while the main thread reads
 * and writes their neighbours. Small tensors, and any run where no worker can start, are merged
 * on the main thread: same code, same result.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startWorker } from '../pipeline/worker-thread.js';
import { BufferPool } from '../pipeline/buffer-pool.js';
import type { MergeMethodDef, TensorContext } from './methods.js';
import { runMethod } from './run-method.js';
import type { WorkerJob, WorkerReply } from './worker.js';

/** Tensors below this many entries are merged inline: the hand-off would cost more than it saves. */
const MIN_WORKER_ENTRIES = 1 << 18;

/** More workers than this gain nothing: the main thread's reading and writing becomes the limit. */
const MAX_WORKERS = 4;

export interface Compute {
  /** The pool input arrays must come from (shared memory when workers may be used). */
  readonly pool: BufferPool;
  /** How many merges are worth having in flight at once. */
  readonly concurrency: number;
  /** Starts what merging `contexts` will need (workers load while the first inputs are read). */
  prepare(contexts: readonly TensorContext[]): void;
  /** Merges in place; resolves to the input array holding the result. */
  merge(context: TensorContext, inputs: Float32Array[]): Promise<Float32Array>;
  close(): Promise<void>;
}

class InlineCompute implements Compute {
  readonly pool: BufferPool;
  readonly concurrency: number = 1;

  constructor(
    protected readonly method: MergeMethodDef,
    protected readonly seed: number,
    shared: boolean,
  ) {
    this.pool = new BufferPool(shared);
  }

  prepare(_contexts: readonly TensorContext[]): void {}

  async merge(context: TensorContext, inputs: Float32Array[]): Promise<Float32Array> {
    return inputs[runMethod(this.method, context, inputs, this.seed, this.pool)];
  }

  async close(): Promise<void> {}
}

interface Job {
  message: WorkerJob;
  resolve(index: number): void;
  reject(err: Error): void;
}

/** Large tensors go to the first idle worker (started on demand), or wait for one. */
class WorkerCompute extends InlineCompute {
  override readonly concurrency: number;
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private starting = 0;
  private cannotStart = false;
  private closed = false;
  private readonly queue: Job[] = [];
  private readonly running = new Map<Worker, Job>();
  private nextId = 0;
  private failure?: Error;

  constructor(method: MergeMethodDef, seed: number, workers: number) {
    super(method, seed, true);
    this.concurrency = workers;
  }

  /** Starts one more worker; after a failed start, no more are tried. */
  private async grow(): Promise<void> {
    this.starting++;
    const worker = await startWorker(import.meta.url, 'worker');
    this.starting--;
    if (worker && this.closed) {
      await worker.terminate();
      return;
    }
    if (!worker) {
      this.cannotStart = true;
      this.drainInline();
      return;
    }
    worker.on('message', (m: WorkerReply) => this.settle(worker, m));
    worker.on('error', (err) => this.fail(err));
    worker.on('exit', (code) => this.fail(new Error(`a merge worker exited unexpectedly (code ${code})`)));
    this.workers.push(worker);
    this.dispatch(worker);
  }

  /** When no worker runs or is starting, queued jobs are merged on this thread. */
  private drainInline(): void {
    if (this.workers.length > 0 || this.starting > 0) return;
    for (const job of this.queue.splice(0)) {
      try {
        job.resolve(runMethod(this.method, job.message.context, job.message.inputs, this.seed, this.pool));
      } catch (err) {
        job.reject(err as Error);
      }
    }
  }

  private settle(worker: Worker, m: WorkerReply): void {
    if ('ready' in m) return;
    const job = this.running.get(worker);
    this.running.delete(worker);
    if ('error' in m) job?.reject(new Error(m.error));
    else job?.resolve(m.output);
    this.dispatch(worker);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const job of [...this.running.values(), ...this.queue]) job.reject(err);
    this.running.clear();
    this.queue.length = 0;
  }

  /** Gives `worker` the next queued job, or marks it idle. */
  private dispatch(worker: Worker): void {
    const job = this.queue.shift();
    if (!job) {
      this.idle.push(worker);
      return;
    }
    this.running.set(worker, job);
    worker.postMessage(job.message);
  }

  override prepare(contexts: readonly TensorContext[]): void {
    const large = contexts.filter((c) => c.numel >= MIN_WORKER_ENTRIES).length;
    while (!this.cannotStart && this.workers.length + this.starting < Math.min(large, this.concurrency)) void this.grow();
  }

  override async merge(context: TensorContext, inputs: Float32Array[]): Promise<Float32Array> {
    if (this.failure) throw this.failure;
    const noWorker = this.cannotStart && this.workers.length === 0 && this.starting === 0;
    if (context.numel < MIN_WORKER_ENTRIES || noWorker) return super.merge(context, inputs);
    // another worker only when neither an idle one nor one still starting will take this job
    const waiting = this.queue.length + 1 > this.idle.length + this.starting;
    if (waiting && !this.cannotStart && this.workers.length + this.starting < this.concurrency) void this.grow();
    const index = await new Promise<number>((resolve, reject) => {
      this.queue.push({ message: { id: this.nextId++, method: this.method.name, context, inputs, seed: this.seed }, resolve, reject });
      const worker = this.idle.pop();
      if (worker) this.dispatch(worker);
    });
    return inputs[index];
  }

  override async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.workers.map(async (w) => {
        w.removeAllListeners('exit');
        await w.terminate();
      }),
    );
  }
}
/** Workers (up to one per core, at most MAX_WORKERS) when there is more than one core, else inline. */
export function createCompute(method: MergeMethodDef, seed: number, opts: { worker?: boolean } = {}): Compute {
  const cores = availableParallelism();
  const useWorkers = (opts.worker ?? true) && cores > 1;
  return useWorkers ? new WorkerCompute(method, seed, Math.min(cores, MAX_WORKERS)) : new InlineCompute(method, seed, false);
}
