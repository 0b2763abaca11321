/**
 * GEMM on onnxruntime-node: the native kernel (MLAS) that gives ~100 GFLOPS on two cores with
 * nothing beyond npm to install (see shared/notes/compute.md).
 *
 * ORT runs models, not functions, so each (transA, transB) variant is a one-node ONNX model built
 * here in memory. The protobuf is written by hand (a few dozen bytes), which keeps the dependency
 * list to onnxruntime-node alone. Inputs are wrapped, not copied; dims are symbolic so one session
 * serves every shape.
 *
 * Measured on the 2-core Zen 3 machine (best of 10, shapes from rSVD on a 4096×11008 layer):
 * `MatMul` was 0-10% faster than `Gemm` for the plain product; for transposed operands a `Gemm`
 * node with transA/transB and `Transpose`+`MatMul` (which ORT fuses) were within noise of each
 * other, so those use the single `Gemm` node. Both end in the same MLAS sgemm, which packs
 * transposed panels while copying them anyway.
 */
import { availableParallelism } from 'node:os';
// first: it configures onnxruntime through the environment before the native library loads
import './ort-env.js';
import * as ort from 'onnxruntime-node';
import type { Matrix } from '../tensor/matrix.js';
import type { GemmOptions, LinalgBackend } from './backend.js';
import { checkGemmShapes } from './ref.js';

// --- a minimal protobuf writer: just what an ONNX ModelProto with one node needs -------------

const WIRE_VARINT = 0;
const WIRE_BYTES = 2;

function varint(value: number): number[] {
  const out: number[] = [];
  let v = value;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

function intField(field: number, value: number): number[] {
  return [...varint((field << 3) | WIRE_VARINT), ...varint(value)];
}

function bytesField(field: number, payload: number[]): number[] {
  return [...varint((field << 3) | WIRE_BYTES), ...varint(payload.length), ...payload];
}

function stringField(field: number, text: string): number[] {
  return bytesField(field, [...new TextEncoder().encode(text)]);
}

// --- ONNX messages (field numbers from onnx.proto) ---------------------------------------------

const ONNX_IR_VERSION = 7; // the IR version that goes with opset 13
const ONNX_OPSET = 13;
const ONNX_FLOAT = 1; // TensorProto.DataType.FLOAT
const ATTRIBUTE_INT = 2; // AttributeProto.AttributeType.INT

/** ValueInfoProto for a 2-D f32 tensor whose dims are named, not fixed. */
function matrixValueInfo(name: string, dimNames: [string, string]): number[] {
  const dims = dimNames.flatMap((d) => bytesField(1, stringField(2, d))); // Dimension.dim_param
  const tensorType = [...intField(1, ONNX_FLOAT), ...bytesField(2, dims)]; // TypeProto.Tensor
  return [...stringField(1, name), ...bytesField(2, bytesField(1, tensorType))];
}

function intAttribute(name: string, value: number): number[] {
  return [...stringField(1, name), ...intField(3, value), ...intField(20, ATTRIBUTE_INT)];
}

/**
 * A model computing C = op(A)·op(B): one `MatMul` node when nothing is transposed, else one
 * `Gemm` node with transA/transB (alpha = 1, no C input).
 */
export function buildGemmModel(transA: boolean, transB: boolean): Uint8Array {
  const io = [...stringField(1, 'A'), ...stringField(1, 'B'), ...stringField(2, 'C'), ...stringField(3, 'gemm')];
  const node =
    transA || transB
      ? [
          ...io,
          ...stringField(4, 'Gemm'),
          ...bytesField(5, intAttribute('transA', transA ? 1 : 0)),
          ...bytesField(5, intAttribute('transB', transB ? 1 : 0)),
        ]
      : [...io, ...stringField(4, 'MatMul')];
  const graph = [
    ...bytesField(1, node),
    ...stringField(2, 'loraforge_gemm'),
    ...bytesField(11, matrixValueInfo('A', ['a0', 'a1'])),
    ...bytesField(11, matrixValueInfo('B', ['b0', 'b1'])),
    ...bytesField(12, matrixValueInfo('C', ['m', 'n'])),
  ];
  const model = [
    ...intField(1, ONNX_IR_VERSION),
    ...stringField(2, 'loraforge'),
    ...bytesField(7, graph),
    ...bytesField(8, intField(2, ONNX_OPSET)), // OperatorSetIdProto, default domain
  ];
  return Uint8Array.from(model);
}

// --- the backend ---------------------------------------------------------------------------------

export interface OrtBackendOptions {
  /** intra-op threads for the GEMM; default: every core Node reports */
  threads?: number;
}

export async function createOrtBackend(opts: OrtBackendOptions = {}): Promise<LinalgBackend> {
  const threads = opts.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) {
    throw new Error(`the GEMM thread count must be a positive integer, got ${threads}`);
  }
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3, // errors only: ORT warns about things that do not concern a one-node graph
    // Idle ORT workers otherwise spin after every call, stealing a core from the JS thread that
    // decodes the next tensor: measured 4-layer extract 7.9–9.9 s with spinning, 4.9–5.3 s without.
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
  // Sessions are made on first use of a variant: most callers need one or two of the four.
  const sessions = new Map<number, Promise<ort.InferenceSession>>();
  const sessionFor = (transA: boolean, transB: boolean): Promise<ort.InferenceSession> => {
    const key = (transA ? 2 : 0) | (transB ? 1 : 0);
    let s = sessions.get(key);
    if (!s) {
      s = ort.InferenceSession.create(buildGemmModel(transA, transB), sessionOptions);
      sessions.set(key, s);
    }
    return s;
  };
  // Fail now, not on the first product, if the native binding cannot load.
  await sessionFor(false, false);

  return {
    name: `ort(${threads} thread${threads === 1 ? '' : 's'})`,

    async gemm(a: Matrix, b: Matrix, gemmOpts: GemmOptions = {}): Promise<Matrix> {
      const transA = gemmOpts.transA ?? false;
      const transB = gemmOpts.transB ?? false;
      const { m, n, k } = checkGemmShapes(a, b, transA, transB);
      // ORT rejects some empty inputs; an empty product is all zeros without any work.
      if (m === 0 || n === 0 || k === 0) return { rows: m, cols: n, data: new Float32Array(m * n) };
      const session = await sessionFor(transA, transB);
      const feeds = {
        A: new ort.Tensor('float32', a.data, [a.rows, a.cols]),
        B: new ort.Tensor('float32', b.data, [b.rows, b.cols]),
      };
      const out = await session.run(feeds);
      const c = out.C;
      const data = c.data as Float32Array;
      if (data.length !== m * n) {
        throw new Error(`linalg/ort.ts: onnxruntime returned ${c.dims.join('×')} for a ${m}×${n} product`);
      }
      return { rows: m, cols: n, data };
    },

    async dispose(): Promise<void> {
      const all = [...sessions.values()];
      sessions.clear();
      for (const s of all) await (await s).release();
    },
  };
}
