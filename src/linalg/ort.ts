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

/** The variant a node computes: bit 1 transposes A, bit 0 transposes B (0 = A·B … 3 = Aᵀ·Bᵀ). */
const VARIANTS = [0, 1, 2, 3] as const;

/**
 * One node computing C<v> = op(A<v>)·op(B<v>): a `MatMul` when nothing is transposed, else a
 * `Gemm` with transA/transB (alpha = 1, no C input).
 */
function gemmNode(v: number): number[] {
  const transA = (v & 2) !== 0;
  const transB = (v & 1) !== 0;
  const io = [...stringField(1, `A${v}`), ...stringField(1, `B${v}`), ...stringField(2, `C${v}`), ...stringField(3, `gemm${v}`)];
  if (!transA && !transB) return [...io, ...stringField(4, 'MatMul')];
  return [...io, ...stringField(4, 'Gemm'), ...bytesField(5, intAttribute('transA', transA ? 1 : 0)), ...bytesField(5, intAttribute('transB', transB ? 1 : 0))];
}

/**
 * The one model every product runs through: four independent nodes, one per transpose variant,
 * with inputs A<v>, B<v> and output C<v>. A product feeds its variant's inputs and 1×1 zeros to
 * the other three (a few nanoseconds of work).
 *
 * One model, so one session and one intra-op thread pool. onnxruntime-node 1.17 cannot turn off
 * its workers' spinning (the `extra` session config it ignores), and with a session per variant
 * the idle pool of one variant spins through the next variant's product on the other pool: the
 * rank-16 randomized SVD of an 8192×2048 Δ took 100–123 ms that way, 54–66 ms with one session
 * (onnxruntime-node 1.30, where spinning is off, 48–78 ms).
 */
export function buildGemmModel(): Uint8Array {
  const graph = [
    ...VARIANTS.flatMap((v) => bytesField(1, gemmNode(v))),
    ...stringField(2, 'loraforge_gemm'),
    ...VARIANTS.flatMap((v) => [...bytesField(11, matrixValueInfo(`A${v}`, [`a${v}r`, `a${v}c`])), ...bytesField(11, matrixValueInfo(`B${v}`, [`b${v}r`, `b${v}c`]))]),
    ...VARIANTS.flatMap((v) => bytesField(12, matrixValueInfo(`C${v}`, [`m${v}`, `n${v}`]))),
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
    // decodes the next tensor: measured 4-layer extract 7.9–9.9 s with spinning, 4.9–5.3 s without
    // (on 1.30). The pinned 1.17 ignores this setting; see buildGemmModel for what that costs.
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
  // Created now: a native binding that cannot load fails here, not on the first product.
  const session = await ort.InferenceSession.create(buildGemmModel(), sessionOptions);
  const idle = new ort.Tensor('float32', new Float32Array(1), [1, 1]);

  return {
    name: `ort(${threads} thread${threads === 1 ? '' : 's'})`,

    async gemm(a: Matrix, b: Matrix, gemmOpts: GemmOptions = {}): Promise<Matrix> {
      const transA = gemmOpts.transA ?? false;
      const transB = gemmOpts.transB ?? false;
      const { m, n, k } = checkGemmShapes(a, b, transA, transB);
      // ORT rejects some empty inputs; an empty product is all zeros without any work.
      if (m === 0 || n === 0 || k === 0) return { rows: m, cols: n, data: new Float32Array(m * n) };
      const v = (transA ? 2 : 0) | (transB ? 1 : 0);
      const feeds: Record<string, ort.Tensor> = {};
      for (const u of VARIANTS) {
        feeds[`A${u}`] = u === v ? new ort.Tensor('float32', a.data, [a.rows, a.cols]) : idle;
        feeds[`B${u}`] = u === v ? new ort.Tensor('float32', b.data, [b.rows, b.cols]) : idle;
      }
      // every output is fetched: onnxruntime-node 1.17 returns the wrong output for a fetch list
      const c = (await session.run(feeds))[`C${v}`];
      const data = c.data as Float32Array;
      if (data.length !== m * n) {
        throw new Error(`linalg/ort.ts: onnxruntime returned ${c.dims.join('×')} for a ${m}×${n} product`);
      }
      return { rows: m, cols: n, data };
    },

    async dispose(): Promise<void> {
      await session.release();
    },
  };
}
