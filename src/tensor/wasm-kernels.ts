/**
 * What every WebAssembly SIMD kernel module shares (tensor/bf16-simd, model/act-simd,
 * scoring/softmax-simd): the module, shipped as base64 in the source, is compiled once per thread
 * on first use, and a runtime that cannot compile it (no SIMD) gets undefined, so callers fall
 * back to their JavaScript loops.
 */

/** The exports of the module in `base64`, or undefined where this runtime cannot compile it. */
export function wasmExports<T>(base64: string): T | undefined {
  try {
    return new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(base64, 'base64')), {}).exports as unknown as T;
  } catch {
    return undefined;
  }
}

/** `make()` on the first call, that same result on every later one (per thread: module state is). */
export function onFirstUse<T>(make: () => T): () => T {
  let made: { value: T } | undefined;
  return () => (made ??= { value: make() }).value;
}
