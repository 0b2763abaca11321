// onnxruntime-node is pinned to 1.17.0, the last release whose install downloads nothing (later ones
// fetch CUDA binaries from NuGet in a postinstall, which fails offline). That release ships no type
// declarations; its entry point re-exports onnxruntime-common, so its types are onnxruntime-common's.
declare module 'onnxruntime-node' {
  export * from 'onnxruntime-common';
}
