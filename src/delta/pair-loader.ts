/**
 * Where the tensor pairs of two checkpoints are read (extract, spectrum, edit): on a worker thread
 * when one starts, so that reading, decoding and forming Δ overlap the GEMMs (onnxruntime's run()
 * keeps the main thread busy while it computes), else inline on the main thread.
 */
import type { Worker } from 'node:worker_threads';
import type { Checkpoint } from '../io/checkpoint.js';
import { BufferPool } from '../pipeline/buffer-pool.js';
import { WorkerClient } from '../pipeline/worker-rpc.js';
import { startWorker } from '../pipeline/worker-thread.js';
import { arraysOf, PairReader, type LoadedPair, type PairRequest } from './load-pair.js';
import type { PairRecycle } from './pair-worker.js';
import { rowBlock } from './row-block.js';

/** One tensor of the pair, by its name (the same in both checkpoints). */
export interface PairRead {
  name: string;
  /** only B's tensor is needed (default false): no Δ, B is returned, checked finite */
  onlyB?: boolean;
  /** B is needed afterwards as well as Δ (default false) */
  keepB?: boolean;
  /** only rows [start, end) of the tensor (one part of a fused weight) */
  rows?: readonly [number, number];
}

export interface PairLoader {
  load(read: PairRead): Promise<LoadedPair>;
  /** Hands a pair's arrays back for reuse; the caller must not touch them afterwards. */
  release(pair: LoadedPair): void;
  close(): Promise<void>;
}

function requestFor(read: PairRead, a: Checkpoint, b: Checkpoint): PairRequest {
  const locate = (c: Checkpoint) => (read.rows ? rowBlock(c.locate(read.name), read.rows) : c.locate(read.name));
  return { a: read.onlyB ? undefined : locate(a), b: locate(b), keepB: read.keepB === true };
}

class InlineLoader implements PairLoader {
  private readonly reader = new PairReader(new BufferPool());

  constructor(
    private readonly a: Checkpoint,
    private readonly b: Checkpoint,
  ) {}

  async load(read: PairRead): Promise<LoadedPair> {
    return this.reader.load(requestFor(read, this.a, this.b));
  }

  release(pair: LoadedPair): void {
    for (const x of arraysOf(pair)) this.reader.pool.release(x);
  }

  async close(): Promise<void> {
    this.reader.close();
  }
}

class WorkerLoader implements PairLoader {
  private readonly client: WorkerClient<PairRequest, LoadedPair, PairRecycle>;

  constructor(
    worker: Worker,
    private readonly a: Checkpoint,
    private readonly b: Checkpoint,
  ) {
    this.client = new WorkerClient(worker, 'the model-pair reader thread');
  }

  load(read: PairRead): Promise<LoadedPair> {
    return this.client.request(requestFor(read, this.a, this.b));
  }

  release(pair: LoadedPair): void {
    const arrays = arraysOf(pair);
    if (arrays.length) this.client.notify(arrays, arrays.map((x) => x.buffer as ArrayBuffer));
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

export interface PairLoaderStart {
  /** The loader for pairs of `a` and `b`: on the worker thread when it started, else inline. */
  open(a: Checkpoint, b: Checkpoint): Promise<PairLoader>;
  /** Ends the worker when open() was never called (nothing was read: no files to close). */
  cancel(): Promise<void>;
}

/**
 * Starts the reader thread now (unless `worker` is false), so that its start-up overlaps opening
 * and planning; the loader itself comes from open().
 */
export function startPairLoader(opts: { worker?: boolean } = {}): PairLoaderStart {
  const worker = opts.worker === false ? Promise.resolve(undefined) : startWorker(import.meta.url, 'pair-worker');
  let opened = false;
  return {
    async open(a, b) {
      opened = true;
      const w = await worker;
      return w ? new WorkerLoader(w, a, b) : new InlineLoader(a, b);
    },
    async cancel() {
      if (!opened) await (await worker)?.terminate();
    },
  };
}
