/**
 * Overlaps I/O with compute: while the caller works on item i, item i+1 (up to `depth` ahead)
 * is already being loaded. Memory stays bounded at depth+1 loaded items, and lower with a byte
 * budget. Loads may finish in any order (worker threads); items are yielded in order.
 */
export interface ReadAhead<T> {
  /** items loaded ahead of the one being worked on (default 1) */
  depth?: number;
  /**
   * Bytes a loaded item holds, and how many may be loaded at once: beyond the first `always`
   * loads in flight (default 2: the next item and the one after it, taken on however large),
   * loads start only within `bytes`. `always: 1` keeps one large load in flight while the caller
   * works on the item before it, when memory matters more than a second load overlapping.
   */
  budget?: { bytes: number; cost(item: T): number; always?: number };
}

export async function* prefetch<T, R>(items: readonly T[], load: (item: T) => Promise<R>, ahead: ReadAhead<T> = {}): AsyncGenerator<{ item: T; value: R; index: number }> {
  const depth = ahead.depth ?? 1;
  const cost = ahead.budget?.cost ?? (() => 0);
  const always = Math.max(1, ahead.budget?.always ?? 2);
  const pending: Array<Promise<R>> = [];
  let pendingBytes = 0;
  let next = 0;
  const fill = () => {
    while (pending.length <= depth && next < items.length) {
      if (ahead.budget && pending.length >= always && pendingBytes + cost(items[next]) > ahead.budget.bytes) break;
      const p = load(items[next]);
      // a rejection is surfaced when awaited below; this keeps Node from flagging it as unhandled meanwhile
      p.catch(() => {});
      pending.push(p);
      pendingBytes += cost(items[next++]);
    }
  };
  try {
    for (let index = 0; index < items.length; index++) {
      fill();
      const value = await pending.shift()!;
      pendingBytes -= cost(items[index]);
      yield { item: items[index], value, index };
    }
  } finally {
    // a run that stops early closes its inputs next: no load may still be reading them
    await Promise.allSettled(pending);
  }
}
