/** Hugging Face Hub models and adapters in the cache Python's huggingface_hub shares (issue #19). */
export { parseHubRef, type HubRef } from './parse-hub-ref.js';
export { HubError, type HubErrorKind } from './hub-error.js';
export { resolveHubOptions, type HubOptions, type ResolvedHubOptions } from './options.js';
export { downloadSnapshot, type Snapshot, type SnapshotRequest } from './download-snapshot.js';
export { readRemoteSafetensorsHeader } from './read-remote-safetensors-header.js';
export { MODEL_FILES, ADAPTER_FILES, inFolder } from './file-choice.js';
export { hubIdOfCachePath } from './cache-paths.js';
