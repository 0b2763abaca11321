/**
 * Where merges run. Decoding inputs, the merge arithmetic and encoding outputs each cost V8 a few
 * nanoseconds per entry and pass (more, per tensor, than the I/O), so a large tensor is read,
 * decoded and merged by one of a small pool of worker threads, while the main thread only encodes
 * and writes finished neighbours. Small tensors, and any run where no worker can start, are read
 * and merged on the main thread: same arithmetic, same result, bit for bit (bf16 and f16 widen to
 * f32 exactly, whichever decoder does it).
 */
import { availableParallelism } from 'node:os';
import type { Checkpoint } from '../io/checkpoint.js';
import type { TensorLocation } from '../io/types.js';
import { BufferPool } from '../pipeline/buffer-pool.js';
import { WorkerClient } from '../pipeline/worker-rpc.js';
import { startWorker } from '../pipeline/worker-thread.js';
import { AdaptedCheckpoint } from './adapted-source.js';
import type { MergeMethodDef, TensorContext } from './methods.js';
import { runMethod, scratchArrays } from './run-method.js';
import { readInShape, shapeNumel } from './shapes.js';
import { applyRowRemap, type RowRemap } from './embed-rows.js';
import type { MergeReply, MergeRequest } from './worker.js';

/** Tensors below this many entries are merged inline: the hand-off would cost more than it saves. */
const MIN_WORKER_ENTRIES = 1 << 18;

/** More workers than this gain nothing: the main thread's encoding and writing becomes the limit. */
const MAX_WORKERS = 4;

/** One input of an output tensor: a tensor of an opened checkpoint (or of a MODEL+ADAPTER view). */
export interface MergeInput {
  checkpoint: Checkpoint;
  tensor: string;
}

/** Where a worker can read the input, or null when no file holds its values (a tensor a LoRA adapter changes). */
function fileLocation(inp: MergeInput): TensorLocation | null {
  return inp.checkpoint instanceof AdaptedCheckpoint ? inp.checkpoint.fileLocation(inp.tensor) : inp.checkpoint.locate(inp.tensor);
}

export interface Compute {
  /** The pool result arrays come from; hand each back with `pool.release` once it is written. */
  readonly pool: BufferPool;
  /** How many merges are worth having in flight at once. */
  readonly concurrency: number;
  /** Starts what merging `contexts` will need (workers load while the first tensors are read). */
  prepare(contexts: readonly TensorContext[]): void;
  /** Reads (moving embedding rows by `remap`) and merges `inputs`; resolves to an array of `pool` holding the result. */
  merge(context: TensorContext, inputs: readonly MergeInput[], remap?: RowRemap): Promise<Float32Array>;
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

  async merge(context: TensorContext, inputs: readonly MergeInput[], remap?: RowRemap): Promise<Float32Array> {
    const arrays = inputs.map(() => this.pool.acquire(context.numel));
    try {
      if (remap) await this.readRemapped(context, inputs, remap, arrays);
      else await Promise.all(inputs.map((inp, i) => this.readInput(context, inp, arrays[i])));
      return this.keepResult(arrays, runMethod(this.method, context, arrays, this.seed, this.pool));
    } catch (err) {
      arrays.forEach((a) => this.pool.release(a));
      throw err;
    }
  }

  async close(): Promise<void> {}

  /** Reads one input, in the output's shape, into `into` (an array of `pool`). */
  protected readInput(context: TensorContext, inp: MergeInput, into: Float32Array): Promise<void> {
    return readInShape(inp.checkpoint.info(inp.tensor).shape, context.shape, into, this.pool, (out) => inp.checkpoint.readInto(inp.tensor, out));
  }

  private async readRemapped(context: TensorContext, inputs: readonly MergeInput[], remap: RowRemap, arrays: Float32Array[]): Promise<void> {
    const stored = inputs.map((inp) => this.pool.acquire(shapeNumel(inp.checkpoint.info(inp.tensor).shape)));
    try {
      await Promise.all(inputs.map((inp, i) => inp.checkpoint.readInto(inp.tensor, stored[i])));
      applyRowRemap(remap, context.shape[1], stored, arrays);
    } finally {
      stored.forEach((a) => this.pool.release(a));
    }
  }

  /** Hands back every input array but the one holding the result, and returns that one. */
  protected keepResult(arrays: readonly Float32Array[], index: number): Float32Array {
    arrays.forEach((a, i) => {
      if (i !== index) this.pool.release(a);
    });
    return arrays[index];
  }
}

interface Job {
  context: TensorContext;
  inputs: readonly MergeInput[];
  remap?: RowRemap;
  /** null: read on this thread (see dispatch) */
  locations: Array<TensorLocation | null>;
  resolve(out: Float32Array): void;
  reject(err: Error): void;
}

type MergeWorker = WorkerClient<MergeRequest, MergeReply>;

/**
 * Large tensors go to the first idle worker (started on demand), or wait for one. The worker reads
 * and decodes the inputs itself, into shared arrays of this thread's pool, so the main thread's
 * time goes to encoding and writing results.
 */
class WorkerCompute extends InlineCompute {
  override readonly concurrency: number;
  private readonly workers: MergeWorker[] = [];
  private readonly idle: MergeWorker[] = [];
  private starting = 0;
  private cannotStart = false;
  private closed = false;
  private readonly queue: Job[] = [];
  private readonly running = new Set<Job>();
  private failure?: Error;

  constructor(method: MergeMethodDef, seed: number, workers: number) {
    super(method, seed, true);
    this.concurrency = workers;
  }

  /** Starts one more worker; after a failed start, no more are tried. */
  private async grow(): Promise<void> {
    this.starting++;
    const thread = await startWorker(import.meta.url, 'worker');
    this.starting--;
    if (thread && this.closed) {
      await thread.terminate();
      return;
    }
    if (!thread) {
      this.cannotStart = true;
      this.drainInline();
      return;
    }
    const worker: MergeWorker = new WorkerClient(thread, 'a merge worker', (err) => this.fail(err));
    this.workers.push(worker);
    this.dispatch(worker);
  }

  /** When no worker runs or is starting, queued jobs are read and merged on this thread. */
  private drainInline(): void {
    if (this.workers.length > 0 || this.starting > 0) return;
    for (const job of this.queue.splice(0)) super.merge(job.context, job.inputs, job.remap).then(job.resolve, job.reject);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const job of [...this.running, ...this.queue]) job.reject(err);
    this.running.clear();
    this.queue.length = 0;
  }

  /** Gives `worker` the next queued job with arrays to read into, or marks it idle. */
  private dispatch(worker: MergeWorker): void {
    if (worker.failure) return;
    const job = this.queue.shift();
    if (!job) {
      this.idle.push(worker);
      return;
    }
    // arrays are taken only now, so a queued job holds no memory; the worker's scratch too, so
    // that no worker keeps working arrays of its own between tensors
    const arrays = job.inputs.map(() => this.pool.acquire(job.context.numel));
    const scratch = Array.from({ length: scratchArrays(this.method) }, () => this.pool.acquire(job.context.numel));
    this.running.add(job);
    // A tensor seen through a LoRA adapter (MODEL+ADAPTER) has no file location: it is read and
    // adapted here, into the shared array the worker would have filled, and the worker reads the
    // rest and merges. Applying the adapter in the worker instead would mean opening the adapter,
    // its variant checks (DoRA norms) and the GEMM backend in every worker; here the view is open
    // already, and memory is the same: the job's own arrays plus one update while it is applied.
    const adapted = job.locations.flatMap((loc, i) => (loc ? [] : [this.readInput(job.context, job.inputs[i], arrays[i])]));
    Promise.all(adapted).then(() => worker.request({ method: this.method.name, context: job.context, inputs: job.locations, arrays, scratch, seed: this.seed, remap: job.remap })).then(
      (output) => {
        this.running.delete(job);
        scratch.forEach((a) => this.pool.release(a));
        job.resolve(this.keepResult(arrays, output));
        this.dispatch(worker);
      },
      (err: Error) => {
        this.running.delete(job);
        [...arrays, ...scratch].forEach((a) => this.pool.release(a));
        job.reject(err);
        this.dispatch(worker);
      },
    );
  }

  override prepare(contexts: readonly TensorContext[]): void {
    const large = contexts.filter((c) => c.numel >= MIN_WORKER_ENTRIES).length;
    while (!this.cannotStart && this.workers.length + this.starting < Math.min(large, this.concurrency)) void this.grow();
  }

  override async merge(context: TensorContext, inputs: readonly MergeInput[], remap?: RowRemap): Promise<Float32Array> {
    if (this.failure) throw this.failure;
    const noWorker = this.cannotStart && this.workers.length === 0 && this.starting === 0;
    if (context.numel < MIN_WORKER_ENTRIES || noWorker) return super.merge(context, inputs, remap);
    const locations = inputs.map(fileLocation);
    // a tensor moved into the output vocabulary with an adapted input: read and merged here
    if (remap && locations.some((l) => l === null)) return super.merge(context, inputs, remap);
    // another worker only when neither an idle one nor one still starting will take this job
    const waiting = this.queue.length + 1 > this.idle.length + this.starting;
    if (waiting && !this.cannotStart && this.workers.length + this.starting < this.concurrency) void this.grow();
    return new Promise<Float32Array>((resolve, reject) => {
      this.queue.push({ context, inputs, remap, locations, resolve, reject });
      const worker = this.idle.pop();
      if (worker) this.dispatch(worker);
    });
  }

  /** Lets every live worker close its files and end (a job it is on finishes first). */
  override async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.close()));
  }
}

/** Workers (up to one per core, at most MAX_WORKERS) when there is more than one core, else inline. */
export function createCompute(method: MergeMethodDef, seed: number, opts: { worker?: boolean } = {}): Compute {
  const cores = availableParallelism();
  const useWorkers = (opts.worker ?? true) && cores > 1;
  return useWorkers ? new WorkerCompute(method, seed, Math.min(cores, MAX_WORKERS)) : new InlineCompute(method, seed, false);
}
