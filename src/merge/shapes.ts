/**
 * Inputs of one output tensor whose shapes differ, the way mergekit handles them (its
 * rectify_embed_sizes and get_task_vectors): fine-tunes that added a few tokens have more
 * embed_tokens / lm_head rows than their base, and a merge without a tokenizer setting still runs.
 *
 * - Embeddings (embed_tokens, lm_head and their other names) under a method that takes the common
 *   submatrix (linear, slerp, nuslerp, karcher, model_stock, arcee_fusion): the top-left block
 *   every input has is merged.
 * - Embeddings under a task-vector method: each model is cut down to base_model's shape, which
 *   only works for a model at least as large.
 * - Any other tensor: a task-vector method leaves the model out of that tensor (mergekit warns and
 *   goes on); every other method refuses.
 *
 * The planner decides here, once; the readers (compute.ts, worker.ts) then crop with cropTopLeft
 * while reading, so no method ever sees a shape other than the output's.
 */
import { isEmbeddingLike } from '../delta/targets.js';
import type { BufferPool } from '../pipeline/buffer-pool.js';

/** How a method's inputs may differ in shape (methods.ts); absent: they may not. */
export type ShapeMismatchRule = 'common-submatrix' | 'base-shape';

export interface InputShapes {
  tensor: string;
  method: string;
  rule: ShapeMismatchRule | undefined;
  /** stored shape of each input */
  shapes: ReadonlyArray<readonly number[]>;
  /** index of base_model among the inputs, when it is one */
  base: number | undefined;
  /** how to name each input in messages (a path) */
  labels: readonly string[];
  /** marked as an embedding (mergekit's is_embed); default: from the tensor's name */
  embedding?: boolean;
}

export interface ShapePlan {
  /** the output's shape, which every kept input is read as */
  shape: number[];
  /** indices of the inputs the merge uses, in order (a task-vector method drops mismatched non-embeddings) */
  keep: number[];
  /** inputs left out, for the report */
  dropped: number[];
  /** set when some input is cropped, for the report */
  cropped: boolean;
}

export const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);

export const shapeNumel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

const fmt = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

/** The output shape and the inputs used, or an error naming the tensor, both shapes and what to do. */
export function planInputShapes(p: InputShapes): ShapePlan {
  const { shapes } = p;
  const all = shapes.map((_, i) => i);
  const ref = p.base ?? 0;
  if (shapes.every((s) => sameShape(s, shapes[ref]))) return { shape: [...shapes[ref]], keep: all, dropped: [], cropped: false };
  const embedding = (p.embedding ?? isEmbeddingLike(p.tensor, shapes[ref])) && shapes.every((s) => s.length === 2);
  const odd = shapes.findIndex((s) => !sameShape(s, shapes[ref]));
  const mismatch = `tensor "${p.tensor}" has shape ${fmt(shapes[ref])} in ${p.labels[ref]} but ${fmt(shapes[odd])} in ${p.labels[odd]}`;
  if (p.rule === 'base-shape' && p.base !== undefined) {
    const base = shapes[p.base];
    if (!embedding) {
      // mergekit's get_task_vectors: "skipping <model>:<tensor> due to size mismatch"
      const keep = all.filter((i) => sameShape(shapes[i], base));
      return { shape: [...base], keep, dropped: all.filter((i) => !keep.includes(i)), cropped: false };
    }
    const small = shapes.findIndex((s) => s[0] < base[0] || s[1] < base[1]);
    if (small >= 0) {
      throw new Error(
        `embedding "${p.tensor}" has shape ${fmt(shapes[small])} in ${p.labels[small]}, smaller than base_model's ${fmt(base)}: ${p.method} cuts each model down to base_model's vocabulary, so base_model must have the fewest rows (choose the model with the smallest vocabulary as base_model)`,
      );
    }
    return { shape: [...base], keep: all, dropped: [], cropped: true };
  }
  if (p.rule === 'common-submatrix' && embedding) {
    const shape = [Math.min(...shapes.map((s) => s[0])), Math.min(...shapes.map((s) => s[1]))];
    return { shape, keep: all, dropped: [], cropped: true };
  }
  const only = p.rule === undefined ? `${p.method} needs every input in one shape` : 'only embeddings (embed_tokens, lm_head) are cut to a common shape';
  throw new Error(`${mismatch}: the models are not the same architecture and size (${only})`);
}

/** Copies the top-left `to` block of a row-major `from`-shaped 2-D tensor into `out` (to's size). */
export function cropTopLeft(src: Float32Array, from: readonly number[], out: Float32Array, to: readonly number[]): Float32Array {
  const [rows, cols] = to;
  for (let r = 0; r < rows; r++) out.set(src.subarray(r * from[1], r * from[1] + cols), r * cols);
  return out;
}

/**
 * Reads an input stored as `stored` into `out`, which has the output's `shape`: directly when the
 * two agree, else whole into a pooled array and then cropped (the planner allowed it: planInputShapes).
 * (Overloads: the main thread reads asynchronously, a worker synchronously.)
 */
export function readInShape(stored: readonly number[], shape: readonly number[], out: Float32Array, pool: BufferPool, read: (into: Float32Array) => Promise<unknown>): Promise<void>;
export function readInShape(stored: readonly number[], shape: readonly number[], out: Float32Array, pool: BufferPool, read: (into: Float32Array) => void): void;
export function readInShape(stored: readonly number[], shape: readonly number[], out: Float32Array, pool: BufferPool, read: (into: Float32Array) => unknown): void | Promise<void> {
  if (sameShape(stored, shape)) {
    const done = read(out);
    return done instanceof Promise ? done.then(() => undefined) : undefined;
  }
  const whole = pool.acquire(shapeNumel(stored));
  const crop = () => {
    cropTopLeft(whole, stored, out, shape);
    pool.release(whole);
  };
  const done = read(whole);
  return done instanceof Promise ? done.then(crop) : crop();
}
