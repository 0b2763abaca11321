/**
 * The model-pair reader thread: reads and decodes tensor pairs and forms Δ while the main thread
 * runs the GEMMs of the previous pair. Arrays travel by transfer (no copies) and come back as
 * recycle notices, so a few buffers serve the whole model.
 */
import { BufferPool } from '../pipeline/buffer-pool.js';
import { serveRequests } from '../pipeline/worker-rpc.js';
import { arraysOf, PairReader, type LoadedPair, type PairRequest } from './load-pair.js';

/** A notice: arrays of earlier pairs, handed back for reuse. */
export type PairRecycle = Float32Array[];

const pool = new BufferPool();
const reader = new PairReader(pool);
serveRequests<PairRequest, LoadedPair, PairRecycle>({
  request: (request) => reader.load(request),
  transfer: (pair) => arraysOf(pair).map((a) => a.buffer as ArrayBuffer),
  notice: (arrays) => arrays.forEach((a) => pool.release(a)),
  close: () => reader.close(),
});
