/**
 * Mixture-of-experts weights in llama.cpp's layout: each layer's experts become three stacked
 * tensors `blk.N.ffn_{gate,up,down}_exps.weight` of shape (E, out, in) in PyTorch order, as
 * convert_hf_to_gguf.py's LlamaModel (Mixtral) and Qwen2MoeModel (Qwen3-MoE) build them, from
 * either HF layout: one module per expert (the family's `experts.container`), or transformers 5's
 * fused 3-D `mlp.experts.gate_up_proj` (gate rows, then up rows) and `mlp.experts.down_proj`
 * (with the router under the family's `fusedRouter` when that differs).
 */
import { expertLayout } from '../arch/experts.js';
import { ggufFacts, textFields } from '../arch/index.js';
import type { Checkpoint } from '../io/checkpoint.js';
import type { TensorInfo } from '../io/types.js';

export interface StackedTensor {
  /** GGUF name */
  name: string;
  /** PyTorch order: (E, out, in) */
  shape: number[];
  load: () => Promise<Float32Array>;
}

const FUSED = /^model\.layers\.(0|[1-9][0-9]*)\.mlp\.experts\.(gate_up_proj|down_proj)(?:\.weight)?$/;

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The experts per layer from config.json (the converter's keys), or undefined for a dense model. */
export function expertCount(where: string, config: Record<string, unknown>): number | undefined {
  const h = textFields(config);
  const key = ['num_local_experts', 'num_experts', 'n_routed_experts'].find((k) => h[k] !== undefined && h[k] !== null);
  if (key === undefined) return undefined;
  const n = h[key];
  if (typeof n !== 'number' || !Number.isInteger(n) || n <= 0) throw new Error(`${where}: config.json "${key}" must be a positive integer, got ${JSON.stringify(n)}`);
  return n;
}

/** Each (rows × cols) matrix of a (count, rows, cols) block transposed to (count, cols, rows). */
function transposeEach(data: Float32Array, count: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let e = 0; e < count; e++) {
    const base = e * rows * cols;
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[base + j * rows + i] = data[base + i * cols + j]!;
  }
  return out;
}

/** Rows [from, from + rows) of every expert's (total × cols) matrix, as (E, rows, cols). */
function sliceRows(data: Float32Array, count: number, total: number, cols: number, from: number, rows: number): Float32Array {
  const out = new Float32Array(count * rows * cols);
  for (let e = 0; e < count; e++) out.set(data.subarray((e * total + from) * cols, (e * total + from + rows) * cols), e * rows * cols);
  return out;
}

/** The stacks of a fused 3-D expert tensor, in (E, out, in) whatever its HF layout. */
function fusedStacks(ckpt: Checkpoint, config: Record<string, unknown>, info: TensorInfo, layer: string, param: string, count: number): StackedTensor[] {
  const shape = info.shape;
  if (shape.length !== 3 || shape[0] !== count) {
    throw new Error(`${ckpt.path}: tensor "${info.name}" has shape ${shape.join('×')}, expected ${count} experts stacked in 3 dimensions (config.json's expert count)`);
  }
  const layout = expertLayout(config, param, shape);
  const [out, inF] = layout === 'out-in' ? [shape[1]!, shape[2]!] : [shape[2]!, shape[1]!];
  const read = async () => {
    const data = await ckpt.read(info.name);
    return layout === 'out-in' ? data : transposeEach(data, count, shape[1]!, shape[2]!);
  };
  if (param === 'down_proj') return [{ name: `blk.${layer}.ffn_down_exps.weight`, shape: [count, out, inF], load: read }];
  if (out % 2 !== 0) throw new Error(`${ckpt.path}: tensor "${info.name}" has ${out} gate+up rows per expert, not an even number`);
  const ff = out / 2;
  return [
    { name: `blk.${layer}.ffn_gate_exps.weight`, shape: [count, ff, inF], load: async () => sliceRows(await read(), count, out, inF, 0, ff) },
    { name: `blk.${layer}.ffn_up_exps.weight`, shape: [count, ff, inF], load: async () => sliceRows(await read(), count, out, inF, ff, ff) },
  ];
}

/**
 * Every expert tensor of the checkpoint, by HF name: the stacked GGUF tensors to write in its
 * place (a per-expert stack is written where its expert 0 is; the other experts map to an empty
 * list). Tensors not in the map are not expert weights. Throws, naming the tensor, for an expert
 * beyond config.json's count, a missing expert, or experts of different shapes.
 */
export function planExpertStacks(ckpt: Checkpoint, arch: string, config: Record<string, unknown>): Map<string, StackedTensor[]> {
  const plans = new Map<string, StackedTensor[]>();
  const moe = ggufFacts(arch).experts;
  const count = expertCount(ckpt.path, config);
  if (!moe || count === undefined) return plans;
  const perExpert = new RegExp(`^model\\.layers\\.(0|[1-9][0-9]*)\\.${escapeRegExp(moe.container)}\\.(0|[1-9][0-9]*)\\.([A-Za-z0-9_]+)\\.weight$`);
  const fusedRouter = moe.fusedRouter === undefined ? undefined : new RegExp(`^model\\.layers\\.(0|[1-9][0-9]*)\\.${escapeRegExp(moe.fusedRouter)}\\.weight$`);
  const groups = new Map<string, { name: string; members: TensorInfo[] }>();
  for (const info of ckpt.list()) {
    const fused = FUSED.exec(info.name);
    if (fused) {
      plans.set(info.name, fusedStacks(ckpt, config, info, fused[1]!, fused[2]!, count));
      continue;
    }
    const router = fusedRouter?.exec(info.name);
    if (router) {
      plans.set(info.name, [{ name: `blk.${router[1]}.ffn_gate_inp.weight`, shape: [...info.shape], load: () => ckpt.read(info.name) }]);
      continue;
    }
    const m = perExpert.exec(info.name);
    const stacked = m ? moe.projections[m[3]!] : undefined;
    if (!m || !stacked) continue;
    const e = Number(m[2]);
    if (e >= count) throw new Error(`${ckpt.path}: tensor "${info.name}" is expert ${e}, but config.json says ${count} experts; the config does not belong to these weights`);
    const key = `blk.${m[1]}.${stacked}.weight`;
    const group = groups.get(key) ?? { name: key, members: [] };
    groups.set(key, group);
    group.members[e] = info;
    plans.set(info.name, []);
  }
  for (const { name, members } of groups.values()) {
    const missing = Array.from({ length: count }, (_, e) => e).filter((e) => !members[e]);
    if (missing.length > 0) throw new Error(`${ckpt.path}: ${name} needs ${count} experts, but expert(s) ${missing.join(', ')} are missing (e.g. ${members.find(Boolean)!.name.replace(/\.\d+\.(\w+)\.weight$/, `.${missing[0]}.$1.weight`)})`);
    const shape = members[0]!.shape;
    const odd = members.find((t) => t.shape.join() !== shape.join());
    if (shape.length !== 2 || odd) throw new Error(`${ckpt.path}: tensor "${(odd ?? members[0]!).name}" has shape ${(odd ?? members[0]!).shape.join('×')}; every expert of a layer must be the same 2-D shape`);
    const size = shape[0]! * shape[1]!;
    const load = async () => {
      const out = new Float32Array(count * size);
      for (let e = 0; e < count; e++) await ckpt.readInto(members[e]!.name, out.subarray(e * size, (e + 1) * size));
      return out;
    };
    plans.set(members[0]!.name, [{ name, shape: [count, ...shape], load }]);
  }
  return plans;
}
