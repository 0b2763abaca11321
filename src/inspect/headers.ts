/**
 * inspect's one summarising step, for local files and Hub ids alike: the files' parsed headers
 * plus the side JSON make the result. Also a raw safetensors header JSON (as
 * readRemoteSafetensorsHeader returns it) made into such a parsed header.
 */
import { InputError } from '../errors.js';
import type { TensorInfo } from '../io/types.js';
import type { InspectKind, InspectResult } from './inspect.js';
import { dtypeByteSize } from '../tensor/dtype.js';

export interface InspectHeader {
  tensors: TensorInfo[];
  /** the header's __metadata__ */
  metadata: Record<string, unknown>;
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * The data section is not at hand, so entries are checked against themselves only: a dtype we
 * know, a shape, and data_offsets spanning exactly the shape's bytes.
 */
export function headerTensors(where: string, header: Record<string, unknown>): InspectHeader {
  const tensors: TensorInfo[] = [];
  let metadata: Record<string, unknown> = {};
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) metadata = raw as Record<string, unknown>;
      continue;
    }
    const { dtype, shape, data_offsets: offsets } = (raw ?? {}) as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const size = typeof dtype === 'string' ? dtypeByteSize(dtype) : undefined;
    const valid =
      size !== undefined &&
      Array.isArray(shape) && shape.every(isCount) &&
      Array.isArray(offsets) && offsets.length === 2 && offsets.every(isCount) &&
      (offsets[1] as number) - (offsets[0] as number) === shape.reduce((a: number, b: number) => a * b, size);
    if (!valid) throw new InputError(`${where}: tensor "${name}" has a header entry that is not a valid safetensors tensor (dtype, shape, data_offsets): corrupt file`, { file: where, tensor: name });
    tensors.push({ name, dtype: dtype as string, shape: [...(shape as number[])], bytes: (offsets[1] as number) - (offsets[0] as number) });
  }
  return { tensors, metadata };
}

/** What inspect shows, from files' parsed headers and the side JSON: the one formatting for local files and Hub ids. */
export interface InspectInput {
  /** the path or Hub id as given */
  path: string;
  kind: InspectKind;
  /** one per file read: a checkpoint's shards in order, else the one file */
  headers: InspectHeader[];
  /** config.json of a checkpoint, adapter_config.json of an adapter */
  config?: Record<string, unknown>;
}

export function inspectHeaders({ path, kind, headers, config }: InspectInput): InspectResult {
  const tensors = headers.flatMap((h) => h.tensors);
  const dtypes: Record<string, number> = {};
  let totalParameters = 0;
  let totalBytes = 0;
  for (const t of tensors) {
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    totalParameters += t.shape.reduce((a, b) => a * b, 1);
    totalBytes += t.bytes;
  }
  // a checkpoint's shards each carry their own __metadata__ (usually only format: pt), not the model's
  const metadata = kind === 'checkpoint' ? {} : (headers[0]?.metadata ?? {});
  return { path, kind, tensors, totalParameters, totalBytes, dtypes, metadata, config };
}
