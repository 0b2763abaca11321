/**
 * Overlaps I/O with compute: while the caller works on item i, item i+1 (up to `depth` ahead)
 * is already being loaded. Memory stays bounded at depth+1 loaded items.
 */
export async function* prefetch<T, R>(
  items: readonly T[],
  load: (item: T) => Promise<R>,
  depth = 1,
): AsyncGenerator<{ item: T; value: R; index: number }> {
  const pending: Array<Promise<R>> = [];
  let next = 0;
  const fill = () => {
    while (pending.length <= depth && next < items.length) {
      const p = load(items[next++]);
      // a rejection is surfaced when awaited below; this keeps Node from flagging it as unhandled meanwhile
      p.catch(() => {});
      pending.push(p);
    }
  };
  for (let index = 0; index < items.length; index++) {
    fill();
    const value = await pending.shift()!;
    yield { item: items[index], value, index };
  }
}
