/**
 * The differences of a model pair as spectrum and edit consume them, read through the one pair
 * reader extract uses (pair-loader.ts: a worker thread, WASM SIMD for BF16, and its finite-value
 * guard: NaN/±Inf in either model and differences that overflow f32 are refused, naming the file
 * and tensor).
 */
import type { Checkpoint } from '../io/checkpoint.js';
import { prefetch } from '../pipeline/prefetch.js';
import { sumSquares } from '../tensor/matrix.js';
import type { DeltaStats } from './delta.js';
import type { LoadedPair } from './load-pair.js';
import { startPairLoader } from './pair-loader.js';

export interface PairDifference<T> {
  item: T;
  /** Δ = W_B − W_A; valid until the next difference is asked for (its buffer is then reused) */
  delta: Float32Array;
  stats: DeltaStats;
  /** ‖Δ‖²_F of each of the item's equal consecutive blocks (one per expert of a 3-D tensor) */
  energies: number[];
  index: number;
}

/** A tensor that is no target and differs: no spectrum, no LoRA, but a change worth seeing. */
export interface ChangedTensor {
  name: string;
  shape: number[];
  /** ‖b − a‖ / ‖a‖; null when a is all zeros */
  relChange: number | null;
}

/**
 * Below this many bytes to read, pairs are read on this thread: starting the reader thread (a few
 * tenths of a second of CPU when run from source) costs more than overlapping such reads saves.
 */
const THREAD_MIN_BYTES = 64 << 20;

function differenceOf(pair: LoadedPair, name: string): { delta: Float32Array; stats: DeltaStats } {
  if (!pair.delta || !pair.stats) throw new Error(`internal error: tensor "${name}" was read without model A's; please report it`);
  return { delta: pair.delta, stats: pair.stats };
}

/**
 * ‖Δ‖²_F per block. One block: the reader's sum of the exact (f64) differences; several: summed
 * from the stored f32 Δ, block by block, as extract sums each expert of a stack.
 */
function blockEnergies(delta: Float32Array, stats: DeltaStats, count: number): number[] {
  if (count === 1) return [stats.frobSq];
  const size = delta.length / count;
  return Array.from({ length: count }, (_, k) => sumSquares(delta.subarray(k * size, (k + 1) * size)));
}

/**
 * Reads every item's pair on the reader thread (inline for a small pair), up to `depth` items
 * ahead of the compute, and yields Δ = W_B − W_A with the energies of its `blocks(item)` blocks.
 */
export async function* streamDifferences<T extends { name: string }>(
  a: Checkpoint,
  b: Checkpoint,
  items: readonly T[],
  blocks: (item: T) => number,
  depth: number,
): AsyncGenerator<PairDifference<T>> {
  const bytes = items.reduce((n, x) => n + a.info(x.name).bytes + b.info(x.name).bytes, 0);
  const loader = await startPairLoader({ worker: bytes >= THREAD_MIN_BYTES }).open(a, b);
  try {
    for await (const { item, value, index } of prefetch(items, (x) => loader.load({ name: x.name }), { depth })) {
      const { delta, stats } = differenceOf(value, item.name);
      yield { item, delta, stats, energies: blockEnergies(delta, stats, blocks(item)), index };
      loader.release(value);
    }
  } finally {
    await loader.close();
  }
}

/**
 * The tensors among `tensors` that differ, with ‖b − a‖ / ‖a‖ (f64 sums). They are small (a norm,
 * a bias, a router), so they are read on this thread, after the matrices.
 */
export async function changedTensors(a: Checkpoint, b: Checkpoint, tensors: ReadonlyArray<{ name: string; shape: number[] }>): Promise<ChangedTensor[]> {
  const loader = await startPairLoader({ worker: false }).open(a, b);
  try {
    const changed: ChangedTensor[] = [];
    for (const t of tensors) {
      const pair = await loader.load({ name: t.name });
      const { stats } = differenceOf(pair, t.name);
      if (!stats.identical) changed.push({ name: t.name, shape: t.shape, relChange: stats.baseFrobSq > 0 ? Math.sqrt(stats.frobSq / stats.baseFrobSq) : null });
      loader.release(pair);
    }
    return changed;
  } finally {
    await loader.close();
  }
}
