/**
 * Hugging Face → llama.cpp GGUF tensor names and the Q/K row permutation llama.cpp's
 * convert_hf_to_gguf.py applies, so that tensors (and LoRA factors) we write line up with a GGUF
 * base model produced by that converter. The per-family tables live in src/arch/families.ts.
 */
import { familyByArchitecture, familyByModelType, FAMILIES, ggufFacts, modelConfig, textFields, type GgufArch } from '../arch/index.js';

export type { GgufArch } from '../arch/index.js';

function supportedList(): string {
  return FAMILIES.flatMap((f) => (f.gguf ? f.architectures : [])).join(', ');
}

/**
 * The llama.cpp architecture name for a Hugging Face config.json (as llama.cpp's converters pick
 * it): `architectures[0]` decides when present (the text model's, under the text_config rule),
 * else `model_type`. The converter registers Mistral and Mixtral under LlamaModel: both become `llama`.
 */
export function ggufArchFromConfig(config: Record<string, unknown>): GgufArch {
  const c = modelConfig(config);
  if (c.architectures.length > 0) {
    const name = c.architectures[0]!;
    const arch = familyByArchitecture(name)?.gguf?.arch;
    if (!arch) {
      throw new Error(`config.json: architecture "${name}" has no GGUF name mapping in loraforge; supported: ${supportedList()}`);
    }
    return arch;
  }
  const arch = c.modelType === undefined ? undefined : familyByModelType(c.modelType)?.gguf?.arch;
  if (!arch) {
    throw new Error(
      `config.json: cannot tell the architecture (architectures is missing, model_type is ${JSON.stringify(c.fields['model_type'])}); supported: ${supportedList()}`,
    );
  }
  return arch;
}

const BLOCK_MODULE = /^model\.layers\.(0|[1-9][0-9]*)\.(.+)$/;

/**
 * GGUF base name (no `.weight`) of a Hugging Face module path, e.g.
 * `model.layers.3.self_attn.o_proj` → `blk.3.attn_output`; undefined when llama.cpp has no such tensor.
 */
export function hfModuleToGguf(arch: string, modulePath: string): string | undefined {
  const facts = ggufFacts(arch);
  // own keys only: a module path like "constructor" must not find Object.prototype's
  if (Object.hasOwn(facts.globalNames, modulePath)) return facts.globalNames[modulePath];
  const m = BLOCK_MODULE.exec(modulePath);
  if (!m || !Object.hasOwn(facts.blockNames, m[2]!)) return undefined;
  return `blk.${m[1]}.${facts.blockNames[m[2]!]}`;
}

/**
 * GGUF name of a Hugging Face tensor (`....weight` or `....bias`, as the converter tries both
 * suffixes), e.g. `model.layers.0.self_attn.q_proj.weight` → `blk.0.attn_q.weight`.
 */
export function hfToGgufTensorName(arch: string, hfName: string): string | undefined {
  const m = /^(.+)\.(weight|bias)$/.exec(hfName);
  if (!m) return undefined;
  const base = hfModuleToGguf(arch, m[1]!);
  return base === undefined ? undefined : `${base}.${m[2]}`;
}

/**
 * Whether llama.cpp's converter permutes the rows of Q and K (weights and biases) for this arch:
 * only its LlamaModel class does (see GgufFacts.llamaConverter); NeoX-RoPE archs stay unpermuted.
 */
export function needsQkPermute(arch: string): boolean {
  return ggufFacts(arch).llamaConverter;
}

/**
 * Head count for the Q/K permutation of a module, or undefined if the module is not permuted:
 * q_proj uses `num_attention_heads`, k_proj `num_key_value_heads` (falling back to
 * `num_attention_heads`, the HF default when the key is absent).
 */
export function qkPermuteHeadCount(arch: string, config: Record<string, unknown>, modulePath: string): number | undefined {
  if (!needsQkPermute(arch)) return undefined;
  const isQ = modulePath.endsWith('self_attn.q_proj');
  const isK = modulePath.endsWith('self_attn.k_proj');
  if (!isQ && !isK) return undefined;
  const h = textFields(config);
  const nHead = h['num_attention_heads'];
  const nKv = h['num_key_value_heads'] ?? nHead;
  const n = isQ ? nHead : nKv;
  if (typeof n !== 'number' || !Number.isInteger(n) || n <= 0) {
    throw new Error(`config.json: ${isQ ? 'num_attention_heads' : 'num_key_value_heads'} is missing or invalid (${JSON.stringify(n)}); it is needed to permute ${modulePath}`);
  }
  return n;
}

/**
 * llama.cpp convert_hf_to_gguf's LlamaModel.permute on the rows of a row-major (rows × cols)
 * matrix: reshape(nHead, 2, rows/nHead/2, cols).swapaxes(1, 2).reshape(rows, cols). Inside each
 * head the two halves of the rows are interleaved: output row h·d + 2i + j is input row
 * h·d + j·(d/2) + i (d = rows/nHead, j ∈ {0, 1}). Applies equally to a 1-D bias (cols = 1) and
 * to the rows of a LoRA B (out × r) matrix, since (P·B)·A = P·(B·A).
 */
export function permuteQkRows(data: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  if (data.length !== rows * cols) throw new Error(`${data.length} values do not form a ${rows}×${cols} matrix`);
  if (!Number.isInteger(nHead) || nHead <= 0 || rows % (2 * nHead) !== 0) {
    throw new Error(`${rows} rows cannot be split into ${nHead} heads of two equal halves: the config's head count does not fit the weights`);
  }
  const headRows = rows / nHead;
  const half = headRows / 2;
  const out = new Float32Array(data.length);
  for (let h = 0; h < nHead; h++) {
    const base = h * headRows;
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (base + j * half + i) * cols;
        out.set(data.subarray(src, src + cols), (base + 2 * i + j) * cols);
      }
    }
  }
  return out;
}
