import type { TensorInfo } from '../io/types.js';

/**
 * Rows [start, end) of a row-major tensor, described as a tensor of its own: a contiguous byte
 * range, so a fused weight (OpenCLIP's in_proj, q/k/v stacked) is read part by part, each part
 * no more than its own bytes. A location (`offset`) moves to the block's first byte.
 */
export function rowBlock<T extends TensorInfo & { offset?: number }>(t: T, [start, end]: readonly [number, number]): T {
  const rows = t.shape[0];
  if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start < end && end <= rows)) {
    throw new Error(`internal error: rows [${start}, ${end}) of "${t.name}" (${rows} rows); please report it`);
  }
  const rowBytes = t.bytes / rows;
  const block: T = { ...t, shape: [end - start, ...t.shape.slice(1)], bytes: (end - start) * rowBytes };
  if (t.offset !== undefined) block.offset = t.offset + start * rowBytes;
  return block;
}
