/**
 * Which tensors of a model pair `spectrum` and `edit --model-a/--model-b` decompose: the target
 * classifier's linear weights and MoE expert stacks, as extract picks them (an explicit --include
 * picks any 2-D tensor instead); what they only compare (1-D tensors, matrices that are no target,
 * such as MoE routers); and what they skip, with why.
 */
import { pairTensors } from '../io/checkpoint.js';
import type { TensorInfo, TensorSource } from '../io/types.js';
import { expertLayout, expertWeightShape } from '../arch/experts.js';
import type { ExpertLayout } from '../lora/expert-stack.js';
import { layerIndexOf, naturalCompare } from '../lora/module-names.js';
import { isFloatDType } from '../tensor/dtype.js';
import type { Matrix } from '../tensor/matrix.js';
import { classifyTensor, withoutWeightSuffix } from './targets.js';

export interface DeltaPlan {
  /** 2-D tensors present in both checkpoints with the same shape, in natural name order */
  pairs: Array<{ name: string; shape: [number, number] }>;
  /** 3-D MoE expert tensors present in both with the same shape, with the experts the filter picked, in natural name order */
  experts: ExpertDeltaTensor[];
  /**
   * float tensors present in both with the same shape that are only compared (no spectrum, no
   * LoRA): 1-D tensors and matrices that are no target; also in `skipped`, in natural name order
   */
  compared: Array<{ name: string; shape: number[] }>;
  skipped: Array<{ name: string; reason: string }>;
}

/** A 3-D expert tensor ([experts, out, in] or [experts, in, out]) of a model pair, decomposed expert by expert. */
export interface ExpertDeltaTensor {
  name: string;
  /** the tensor name without `.weight`: expert e is reported as `<parameter>[e]` */
  parameter: string;
  /** [experts, ·, ·] as stored */
  stored: [number, number, number];
  layout: ExpertLayout;
  /** [out, in] of one expert's ΔW_e */
  shape: [number, number];
  /** the experts the filter picked, ascending */
  experts: number[];
}

/** Why a compared matrix has no spectrum and no LoRA (extract leaves it out of the adapter too). */
export const NOT_A_TARGET = 'not a LoRA target (as in extract): compared only';

/** The tensors looked at by default: those inside the decoder layer stack (`layers.N.…weight`) and MoE expert stacks. */
function isDecoderWeight(name: string): boolean {
  return layerIndexOf(name) !== null && name.endsWith('.weight');
}

/** A view of `src` listing only the tensors `keep` accepts (nothing is read). */
function filterSource(src: TensorSource, keep: (t: TensorInfo) => boolean): TensorSource {
  const listed = src.list().filter(keep);
  const names = new Set(listed.map((t) => t.name));
  return {
    path: src.path,
    list: () => listed,
    has: (name) => names.has(name),
    info: (name) => src.info(name),
    read: (name) => src.read(name),
    close: () => src.close(),
  };
}

/** `<tensor without .weight>[e]` for each expert of a 3-D tensor: the names --include and the report use. */
function expertEntryNames(t: TensorInfo): string[] {
  return Array.from({ length: t.shape[0] }, (_, e) => `${withoutWeightSuffix(t.name)}[${e}]`);
}

function isExpertStack(t: TensorInfo): boolean {
  return classifyTensor(t.name, t.shape).kind === 'experts';
}

/**
 * Which tensors of a model pair to decompose: the filter (default: decoder-layer tensors and MoE
 * expert tensors), then the classifier's linear targets (any 2-D tensor under `include`) and 3-D
 * expert tensors. `include` is tested against a 2-D tensor's name and against each expert's name,
 * `<parameter>[e]`; `config` (config.json) tells the expert layout.
 */
export function planDeltaTensors(a: TensorSource, b: TensorSource, include?: RegExp, config?: Record<string, unknown>): DeltaPlan {
  const wanted = (t: TensorInfo) => {
    if (!include) return isDecoderWeight(t.name) || isExpertStack(t);
    return isExpertStack(t) ? expertEntryNames(t).some((n) => include.test(n)) : include.test(t.name);
  };
  const { pairs, onlyInA, onlyInB } = pairTensors(filterSource(a, wanted), filterSource(b, wanted));
  const skipped = [
    ...onlyInA.map((name) => ({ name, reason: `only in ${a.path}` })),
    ...onlyInB.map((name) => ({ name, reason: `only in ${b.path}` })),
  ];
  const kept: DeltaPlan['pairs'] = [];
  const experts: ExpertDeltaTensor[] = [];
  const compared: DeltaPlan['compared'] = [];
  for (const p of pairs) {
    const floats = isFloatDType(p.a.dtype) && isFloatDType(p.b.dtype);
    const shape = p.a.shape;
    if (shape.length === 2 && (include || classifyTensor(p.name, shape).kind === 'linear')) kept.push({ name: p.name, shape: [shape[0], shape[1]] });
    else if (shape.length === 2) {
      // an MoE router, a shared-expert gate, …: extract makes no LoRA of it, so neither do spectrum and edit
      if (floats) compared.push({ name: p.name, shape: [...shape] });
      skipped.push({ name: p.name, reason: NOT_A_TARGET });
    } else if (isExpertStack(p.a)) {
      // quantized expert blocks/scales (gpt-oss MXFP4) have the same names pattern but are no weights we can subtract
      const nonFloat = [p.a.dtype, p.b.dtype].find((d) => !isFloatDType(d));
      if (nonFloat) {
        skipped.push({ name: p.name, reason: `${nonFloat}, not a float weight (dequantize the checkpoints first)` });
        continue;
      }
      const [count, d1, d2] = shape;
      const param = p.name.slice(p.name.lastIndexOf('.') + 1);
      const layout = expertLayout(config, param, shape);
      const picked = expertEntryNames(p.a).flatMap((n, e) => (!include || include.test(n) ? [e] : []));
      experts.push({ name: p.name, parameter: withoutWeightSuffix(p.name), stored: [count, d1, d2], layout, shape: expertWeightShape(layout, shape), experts: picked });
    } else {
      if (shape.length === 1 && floats) compared.push({ name: p.name, shape: [...shape] });
      skipped.push({ name: p.name, reason: `${shape.length}-D, not a linear weight or an MoE expert tensor` });
    }
  }
  kept.sort((x, y) => naturalCompare(x.name, y.name));
  experts.sort((x, y) => naturalCompare(x.name, y.name));
  compared.sort((x, y) => naturalCompare(x.name, y.name));
  return { pairs: kept, experts, compared, skipped };
}

/** Expert e's ΔW_e (out × in) from the stored Δ of a 3-D tensor: a copy of slice e, transposed for the in-out layout. */
export function expertDelta(delta: Float32Array, t: ExpertDeltaTensor, e: number): Matrix {
  const [, d1, d2] = t.stored;
  const slice = delta.subarray(e * d1 * d2, (e + 1) * d1 * d2);
  if (t.layout === 'out-in') return { rows: d1, cols: d2, data: slice.slice() };
  // stored [in, out]: element (i, o) goes to row o, column i
  const data = new Float32Array(d1 * d2);
  for (let i = 0; i < d1; i++) for (let o = 0; o < d2; o++) data[o * d1 + i] = slice[i * d2 + o];
  return { rows: d2, cols: d1, data };
}
