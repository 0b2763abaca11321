/**
 * llama.cpp as a real client in tests, through node-llama-cpp installed under .llama/ by
 * scripts/setup-test-deps.mjs, which `npm test` runs first (kept out of the project's own
 * dependencies: it is ~85 MB of native code), plus
 * tiny synthetic Llama checkpoints with planted low-rank deltas to feed it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { promisify } from 'node:util';
import { pathToFileURL } from 'node:url';
import { convertAdapter } from '../../src/convert/convert.js';
import { roundTo } from '../../src/tensor/dtype.js';
import { createRng } from '../../src/linalg/random.js';
import { convertToGguf } from '../../src/to-gguf/to-gguf.js';
import type { LoraModule } from '../../src/lora/adapter.js';
import { matrix, type Matrix } from '../../src/tensor/matrix.js';
import { REPO_ROOT } from './cli.js';
import { makeTempDir, writeModelFolder } from './synthetic.js';

const run = promisify(execFile);

export const NODE_LLAMA_CPP_DIR = join(REPO_ROOT, '.llama', 'node_modules', 'node-llama-cpp');
/** llama.cpp's source tree ships inside node-llama-cpp as a git bundle. */
export const LLAMA_CPP_BUNDLE = join(NODE_LLAMA_CPP_DIR, 'llama', 'gitRelease.bundle');

function missingSetup(what: string): Error {
  return new Error(`${what} is missing: run \`node scripts/setup-test-deps.mjs\` (\`npm test\` runs it first), which installs node-llama-cpp under .llama/`);
}

// The part of node-llama-cpp's API these tests use (its own types live outside our node_modules).
export interface LlamaModelLike {
  tokenize(text: string): number[];
  createContext(opts: Record<string, unknown>): Promise<LlamaContextLike>;
  dispose(): Promise<void>;
}
interface LlamaContextLike {
  getSequence(): {
    controlledEvaluate(input: Array<number | [number, Record<string, unknown>]>): Promise<Array<{ next?: { logits?: Map<number, number> } } | undefined>>;
  };
  dispose(): Promise<void>;
}
export interface LlamaLike {
  loadModel(opts: { modelPath: string; gpuLayers?: number }): Promise<LlamaModelLike>;
  dispose(): Promise<void>;
}

/** node-llama-cpp's Llama on the CPU, never downloading or building anything. Throws (never skips) when not installed. */
export async function loadLlama(): Promise<LlamaLike> {
  if (!existsSync(join(NODE_LLAMA_CPP_DIR, 'package.json'))) throw missingSetup(`node-llama-cpp (${NODE_LLAMA_CPP_DIR})`);
  const mod = (await import(pathToFileURL(join(NODE_LLAMA_CPP_DIR, 'dist', 'index.js')).href)) as {
    getLlama(opts: Record<string, unknown>): Promise<LlamaLike>;
  };
  return mod.getLlama({ gpu: false, build: 'never', logLevel: 'error', maxThreads: 2 });
}

/**
 * Extracts files of llama.cpp's source tree (e.g. `models/ggml-vocab-llama-spm.gguf`) from
 * node-llama-cpp's git bundle into `destDir` (flat, by base name); returns their paths in order.
 */
export async function extractFromLlamaCppSource(relPaths: string[], destDir: string): Promise<string[]> {
  if (!existsSync(LLAMA_CPP_BUNDLE)) throw missingSetup(`llama.cpp source bundle (${LLAMA_CPP_BUNDLE})`);
  const repo = await mkdtemp(join(tmpdir(), 'loraforge-llamacpp-src-'));
  try {
    await run('git', ['init', '-q', repo]);
    await run('git', ['-C', repo, 'fetch', '-q', LLAMA_CPP_BUNDLE]);
    await mkdir(destDir, { recursive: true });
    const out: string[] = [];
    for (const relPath of relPaths) {
      const { stdout } = await run('git', ['-C', repo, 'show', `FETCH_HEAD:${relPath}`], { encoding: 'buffer', maxBuffer: 64 << 20 });
      const path = join(destDir, relPath.split('/').pop()!);
      await writeFile(path, stdout);
      out.push(path);
    }
    return out;
  } finally {
    await rm(repo, { recursive: true, force: true });
  }
}

export interface LlamaCppVocabFixture {
  /** a temporary folder for the test's files, removed after the tests */
  dir: string;
  llama: LlamaLike;
  /** llama.cpp's models/ggml-vocab-<name>.gguf */
  vocab: string;
  /** the golden tokenizations that go with it (models/ggml-vocab-<name>.gguf.inp/.out) */
  golden: { inp: string; out: string };
}

/**
 * Registers before/after hooks that load llama.cpp and extract one of its vocab GGUFs with its
 * golden tokenizations into a temporary folder; the returned fixture is filled in by `before`.
 */
export function useLlamaCppVocab(name: string): LlamaCppVocabFixture {
  const fixture = {} as LlamaCppVocabFixture;
  before(async () => {
    fixture.dir = await makeTempDir('loraforge-to-gguf-');
    fixture.llama = await loadLlama();
    const file = `models/ggml-vocab-${name}.gguf`;
    const [vocab, inp, out] = await extractFromLlamaCppSource([file, `${file}.inp`, `${file}.out`], join(fixture.dir, 'vocab'));
    fixture.vocab = vocab!;
    fixture.golden = { inp: inp!, out: out! };
  });
  after(async () => {
    await fixture.llama?.dispose();
    if (fixture.dir) await rm(fixture.dir, { recursive: true, force: true });
  });
  return fixture;
}

/**
 * Full next-token logits (vocabulary order) from llama.cpp after each of the last `lastN` of
 * `tokens` (default all: node-llama-cpp returns a Map per position, slow for big vocabularies).
 */
export async function llamaLogits(
  model: LlamaModelLike,
  tokens: number[],
  vocabSize: number,
  lora?: { filePath: string; scale?: number },
  lastN = tokens.length,
): Promise<Float32Array[]> {
  const context = await model.createContext({
    contextSize: 256,
    batchSize: tokens.length,
    threads: 2,
    // f32 all the way: an f16 KV cache or the CPU flash-attention kernel (which rounds to f16)
    // would blur differences of ~1e-3 between the runs being compared
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
    flashAttention: false,
    ...(lora ? { lora: { adapters: [{ filePath: lora.filePath, scale: lora.scale ?? 1 }] } } : {}),
  });
  try {
    const first = tokens.length - lastN;
    const out = await context.getSequence().controlledEvaluate(tokens.map((t, i) => (i >= first ? [t, { generateNext: { logits: true } }] : t)));
    return out.slice(first).map((item, i) => {
      const logits = item?.next?.logits;
      if (!logits || logits.size !== vocabSize) throw new Error(`llama.cpp returned ${logits?.size ?? 0} logits for position ${i}, expected ${vocabSize}`);
      const row = new Float32Array(vocabSize);
      for (const [tok, v] of logits) row[tok] = v;
      return row;
    });
  } finally {
    await context.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// A model folder's logits in llama.cpp (the independent engine the eval tests compare against)
// ---------------------------------------------------------------------------------------------

interface FolderCache {
  dir: string;
  llama: Promise<LlamaLike>;
  /** model folder → its f32 GGUF; `base|adapter` → the adapter's GGUF LoRA */
  files: Map<string, Promise<string>>;
  models: Map<string, Promise<LlamaModelLike>>;
}
let folderCache: FolderCache | undefined;

function cachedFile(cache: FolderCache, key: string, make: (out: string) => Promise<void>, name: string): Promise<string> {
  let p = cache.files.get(key);
  if (!p) {
    const out = join(cache.dir, `${cache.files.size}-${name}`);
    p = make(out).then(() => out);
    cache.files.set(key, p);
  }
  return p;
}

/**
 * Next-token logits (vocabulary order, one row per position; the last `lastN` positions, default
 * all) that llama.cpp computes for `tokens` on the Hugging Face model in `folder`: the folder is
 * converted once per test process to an f32 GGUF with `to-gguf` (and `lora`, a PEFT adapter
 * folder, to a GGUF LoRA with `convert --format gguf`, applied at run time at scale 1).
 * Files, models and llama.cpp itself are released after the test file's last test.
 */
export async function llamaCppLogitsForFolder(folder: string, tokens: number[], opts: { lora?: string; lastN?: number } = {}): Promise<Float32Array[]> {
  if (!folderCache) {
    folderCache = { dir: await mkdtemp(join(tmpdir(), 'loraforge-llamacpp-logits-')), llama: loadLlama(), files: new Map(), models: new Map() };
  }
  const cache = folderCache;
  const gguf = await cachedFile(cache, folder, async (out) => void (await convertToGguf({ model: folder, out, dtype: 'F32' })), 'model.gguf');
  let lora: string | undefined;
  if (opts.lora) {
    const adapter = opts.lora;
    const dir = await cachedFile(cache, `${folder}|${adapter}`, async (out) => void (await convertAdapter({ adapter, base: folder, out, format: 'gguf' })), 'lora');
    lora = join(dir, 'adapter.gguf');
  }
  let model = cache.models.get(gguf);
  if (!model) {
    model = cache.llama.then((llama) => llama.loadModel({ modelPath: gguf, gpuLayers: 0 }));
    cache.models.set(gguf, model);
  }
  const vocab = JSON.parse(await readFile(join(folder, 'config.json'), 'utf8')) as { vocab_size?: number; text_config?: { vocab_size?: number } };
  const vocabSize = vocab.vocab_size ?? vocab.text_config?.vocab_size;
  if (typeof vocabSize !== 'number') throw new Error(`${folder}/config.json has no vocab_size`);
  return llamaLogits(await model, tokens, vocabSize, lora ? { filePath: lora } : undefined, opts.lastN ?? tokens.length);
}

/** Releases what llamaCppLogitsForFolder cached: models, llama.cpp, the temporary GGUFs. */
async function disposeLlamaCppCache(): Promise<void> {
  const cache = folderCache;
  folderCache = undefined;
  if (!cache) return;
  for (const m of cache.models.values()) await (await m.catch(() => undefined))?.dispose();
  await (await cache.llama.catch(() => undefined))?.dispose();
  await rm(cache.dir, { recursive: true, force: true });
}
// a root-level hook of every test file that imports this module (a no-op where nothing was cached)
after(disposeLlamaCppCache);

export function maxAbsDiff(a: Float32Array[], b: Float32Array[]): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) for (let j = 0; j < a[i]!.length; j++) m = Math.max(m, Math.abs(a[i]![j]! - b[i]![j]!));
  return m;
}

export function maxAbs(a: Float32Array[]): number {
  let m = 0;
  for (const row of a) for (const v of row) m = Math.max(m, Math.abs(v));
  return m;
}

// ---------------------------------------------------------------------------------------------
// Synthetic Llama checkpoints
// ---------------------------------------------------------------------------------------------

export interface TinyLlamaShape {
  vocab: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
}

export function tinyLlamaConfig(s: TinyLlamaShape, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: s.vocab,
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: false,
    hidden_act: 'silu',
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'float32',
    ...extra,
  };
}

type Tensors = Record<string, { shape: number[]; data: Float32Array }>;

/** Zero-mean noise with standard deviation `std`: uniform, which is ~3× cheaper than normal for vocab-sized tensors. */
function noise(n: number, std: number, rng: ReturnType<typeof createRng>): Float32Array {
  const d = new Float32Array(n);
  const halfWidth = Math.sqrt(3) * std;
  for (let i = 0; i < n; i++) d[i] = (2 * rng.next() - 1) * halfWidth;
  return d;
}

/**
 * Random Llama weights with roughly unit-scale activations and logits (HF names, base-weight
 * orientation); no lm_head when `tied`.
 */
export function tinyLlamaWeights(s: TinyLlamaShape, seed: number, tied = false): Tensors {
  const rng = createRng(seed);
  const headDim = s.hidden / s.heads;
  const t: Tensors = {};
  const linear = (name: string, out: number, inp: number) => (t[name] = { shape: [out, inp], data: noise(out * inp, 1 / Math.sqrt(inp), rng) });
  const norm = (name: string) => {
    const d = noise(s.hidden, 0.1, rng);
    for (let i = 0; i < d.length; i++) d[i]! += 1;
    t[name] = { shape: [s.hidden], data: d };
  };
  t['model.embed_tokens.weight'] = { shape: [s.vocab, s.hidden], data: noise(s.vocab * s.hidden, 1, rng) };
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}.`;
    norm(`${p}input_layernorm.weight`);
    linear(`${p}self_attn.q_proj.weight`, s.heads * headDim, s.hidden);
    linear(`${p}self_attn.k_proj.weight`, s.kvHeads * headDim, s.hidden);
    linear(`${p}self_attn.v_proj.weight`, s.kvHeads * headDim, s.hidden);
    linear(`${p}self_attn.o_proj.weight`, s.hidden, s.heads * headDim);
    norm(`${p}post_attention_layernorm.weight`);
    linear(`${p}mlp.gate_proj.weight`, s.intermediate, s.hidden);
    linear(`${p}mlp.up_proj.weight`, s.intermediate, s.hidden);
    linear(`${p}mlp.down_proj.weight`, s.hidden, s.intermediate);
  }
  norm('model.norm.weight');
  if (tied) return t;
  // larger than 1/√hidden so logits spread over a few units and a wrong delta shows clearly
  t['lm_head.weight'] = { shape: [s.vocab, s.hidden], data: noise(s.vocab * s.hidden, 3 / Math.sqrt(s.hidden), rng) };
  return t;
}

export interface PlantedDelta {
  /** module path, e.g. model.layers.0.self_attn.q_proj */
  module: string;
  rank: number;
  alpha: number;
}

/**
 * Adds ΔW = s·B·A (s = alpha/rank) to each listed module of `base` and returns the new tensors
 * and the LoRA modules that produce exactly that change. ‖ΔW‖ is about `relative`·‖W‖.
 */
export function plantLowRankDeltas(base: Tensors, deltas: PlantedDelta[], seed: number, relative = 0.3): { tensors: Tensors; modules: LoraModule[] } {
  const rng = createRng(seed);
  const tensors: Tensors = { ...base };
  const modules: LoraModule[] = [];
  for (const d of deltas) {
    const w = base[`${d.module}.weight`];
    if (!w) throw new Error(`no tensor ${d.module}.weight to plant a delta in`);
    const [out, inp] = w.shape as [number, number];
    const s = d.alpha / d.rank;
    // ΔW entries ≈ relative·(W's entry scale): A ~ N(0, 1/√rank), B ~ N(0, relative·σ_W)/s
    let sq = 0;
    for (const v of w.data) sq += v * v;
    const sigmaW = Math.sqrt(sq / w.data.length);
    const A: Matrix = matrix(d.rank, inp, noise(d.rank * inp, 1 / Math.sqrt(d.rank), rng));
    const B: Matrix = matrix(out, d.rank, noise(out * d.rank, (relative * sigmaW) / s, rng));
    const data = Float32Array.from(w.data);
    for (let i = 0; i < out; i++) {
      for (let k = 0; k < d.rank; k++) {
        const b = s * B.data[i * d.rank + k]!;
        for (let j = 0; j < inp; j++) data[i * inp + j]! += b * A.data[k * inp + j]!;
      }
    }
    tensors[`${d.module}.weight`] = { shape: w.shape, data };
    modules.push({ name: d.module, kind: d.module.endsWith('embed_tokens') ? 'embedding' : 'linear', A, B, alpha: d.alpha });
  }
  return { tensors, modules };
}

export async function writeTinyLlama(dir: string, tensors: Tensors, config: Record<string, unknown>): Promise<void> {
  await writeModelFolder(dir, tensors, { dtype: 'F32', config });
}

// ---------------------------------------------------------------------------------------------
// Reference forward pass (Hugging Face LlamaForCausalLM / Qwen2ForCausalLM semantics, f64)
// ---------------------------------------------------------------------------------------------

/** y = W·x (+ b) for a row-major (out × in) weight. */
function affine(w: { shape: number[]; data: Float32Array }, x: Float64Array, bias?: { data: Float32Array }): Float64Array {
  const [out, inp] = w.shape as [number, number];
  const y = new Float64Array(out);
  for (let i = 0; i < out; i++) {
    let s = bias ? bias.data[i]! : 0;
    const row = i * inp;
    for (let j = 0; j < inp; j++) s += w.data[row + j]! * x[j]!;
    y[i] = s;
  }
  return y;
}

function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]!);
}

/**
 * RoPE inverse frequencies θ^(-2i/d), with transformers' llama3 scaling (Llama 3.1) when
 * rope_scaling says so: long wavelengths divided by `factor`, short ones kept, a blend between.
 */
function ropeFrequencies(config: Record<string, unknown>, headDim: number, theta: number): number[] {
  const inv = Array.from({ length: headDim / 2 }, (_, i) => theta ** (-(2 * i) / headDim));
  const s = config['rope_scaling'] as Record<string, number> | undefined;
  if (!s || (s['rope_type'] as unknown) !== 'llama3') return inv;
  const { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: old } = s as Record<string, number>;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < old! / high!) return f;
    if (wavelen > old! / low!) return f / factor!;
    const smooth = (old! / wavelen - low!) / (high! - low!);
    return (1 - smooth) * (f / factor!) + smooth * f;
  });
}

/** HF's rotate_half RoPE on each head of `v` (heads × headDim) at position `pos`. */
function rope(v: Float64Array, heads: number, headDim: number, pos: number, invFreq: number[]): void {
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i]!;
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      const a = v[h * headDim + i]!;
      const b = v[h * headDim + i + half]!;
      v[h * headDim + i] = a * c - b * s;
      v[h * headDim + i + half] = b * c + a * s;
    }
  }
}

/** RMSNorm over each `dim`-wide slice of `x` (Qwen3's per-head q_norm/k_norm), in place. */
function rmsNormHeads(x: Float64Array, w: Float32Array, dim: number, eps: number): void {
  for (let off = 0; off < x.length; off += dim) x.set(rmsNorm(x.subarray(off, off + dim), w, eps), off);
}

const softcap = (v: number, cap: number | undefined) => (cap ? Math.tanh(v / cap) * cap : v);
const silu = (g: number) => g / (1 + Math.exp(-g));
// transformers' gelu_pytorch_tanh (Gemma2's hidden_activation)
const geluTanh = (g: number) => 0.5 * g * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (g + 0.044715 * g ** 3)));
const f16 = (v: number) => roundTo(Float32Array.of(v), 'F16')[0]!;
/**
 * ggml's CPU GELU: a lookup table indexed by the f16-rounded input, holding f16 outputs. Against
 * the exact GELU it moves tiny Gemma2 logits by ~4e-3; with it, llama.cpp matches to ~5e-6.
 */
const geluGgml = (g: number) => f16(geluTanh(f16(g)));

/** Expert e's [gate, up, down] weights in any of the three HF layouts (Mixtral w1/w3/w2, per-expert *_proj, fused 3-D). */
function expertWeights(t: Tensors, p: string, e: number): Array<{ shape: number[]; data: Float32Array }> {
  const mixtral = `${p}block_sparse_moe.experts.${e}.`;
  if (t[`${mixtral}w1.weight`]) return ['w1', 'w3', 'w2'].map((w) => t[`${mixtral}${w}.weight`]!);
  const perExpert = `${p}mlp.experts.${e}.`;
  if (t[`${perExpert}gate_proj.weight`]) return ['gate_proj', 'up_proj', 'down_proj'].map((w) => t[`${perExpert}${w}.weight`]!);
  const gateUp = t[`${p}mlp.experts.gate_up_proj`]!;
  const down = t[`${p}mlp.experts.down_proj`]!;
  const [, ff2, hidden] = gateUp.shape as [number, number, number];
  const ff = ff2 / 2;
  const slice = (w: typeof gateUp, from: number, rows: number, cols: number) => ({ shape: [rows, cols], data: w.data.subarray(from, from + rows * cols) });
  return [slice(gateUp, e * ff2 * hidden, ff, hidden), slice(gateUp, (e * ff2 + ff) * hidden, ff, hidden), slice(down, e * hidden * ff, hidden, ff)];
}

/** Router softmax, top-k, renormalised (Mixtral; Qwen3-MoE with norm_topk_prob), SwiGLU experts. */
function moe(t: Tensors, p: string, x: Float64Array, topK: number): Float64Array {
  const router = t[`${p}block_sparse_moe.gate.weight`] ?? t[`${p}mlp.gate.weight`]!;
  const scores = affine(router, x);
  const chosen = [...scores.keys()].sort((a, b) => scores[b]! - scores[a]!).slice(0, topK);
  const z = chosen.reduce((acc, e) => acc + Math.exp(scores[e]! - scores[chosen[0]!]!), 0);
  const out = new Float64Array(x.length);
  for (const e of chosen) {
    const [gate, up, down] = expertWeights(t, p, e);
    const g = affine(gate!, x);
    const u = affine(up!, x);
    const y = affine(down!, g.map((v, i) => silu(v) * u[i]!));
    const w = Math.exp(scores[e]! - scores[chosen[0]!]!) / z;
    for (let i = 0; i < out.length; i++) out[i]! += w * y[i]!;
  }
  return out;
}

/**
 * Next-token logits after each token, computed from the HF tensors exactly as transformers'
 * modeling code does, in f64: Llama/Mistral/Qwen2 (RMSNorm, rotate-half RoPE, causal GQA
 * attention, SwiGLU MLP; q/k/v biases when present), Qwen3 (per-head q_norm/k_norm before RoPE),
 * Mixtral/Qwen3-MoE (router top-k experts, any expert layout) and Gemma2 (√hidden embedding
 * scale, (1 + w) RMSNorm, sandwich norms, query_pre_attn_scalar, attention and final logit
 * soft-capping, sliding window on even layers, GeGLU); Mistral/Mixtral's sliding window on every
 * layer and Llama 3.1's RoPE scaling. An independent oracle for what a correct
 * GGUF must compute. `ggmlGelu`: GELU as llama.cpp's CPU backend computes it (geluGgml).
 */
export function referenceLogits(t: Tensors, config: Record<string, unknown>, tokens: number[], opts: { ggmlGelu?: boolean } = {}): Float64Array[] {
  const gelu = opts.ggmlGelu ? geluGgml : geluTanh;
  const hidden = config['hidden_size'] as number;
  const heads = config['num_attention_heads'] as number;
  const kvHeads = (config['num_key_value_heads'] as number | undefined) ?? heads;
  const layers = config['num_hidden_layers'] as number;
  const eps = config['rms_norm_eps'] as number;
  const theta = (config['rope_theta'] as number | undefined) ?? 10000;
  const headDim = (config['head_dim'] as number | undefined) ?? hidden / heads;
  const gemma2 = config['model_type'] === 'gemma2';
  const topK = config['num_experts_per_tok'] as number | undefined;
  const scale = ((config['query_pre_attn_scalar'] as number | undefined) ?? headDim) ** -0.5;
  const attnCap = config['attn_logit_softcapping'] as number | undefined;
  const finalCap = config['final_logit_softcapping'] as number | undefined;
  const window = config['sliding_window'] as number | undefined;
  const invFreq = ropeFrequencies(config, headDim, theta);
  // Gemma's RMSNorm multiplies by (1 + w)
  const norm = (x: Float64Array, name: string) => {
    const w = t[name]!.data;
    return rmsNorm(x, gemma2 ? w.map((v) => 1 + v) : w, eps);
  };
  const embed = t['model.embed_tokens.weight']!;
  const keys: Float64Array[][] = Array.from({ length: layers }, () => []);
  const values: Float64Array[][] = Array.from({ length: layers }, () => []);
  const out: Float64Array[] = [];
  tokens.forEach((tok, pos) => {
    let h = Float64Array.from(embed.data.subarray(tok * hidden, (tok + 1) * hidden));
    if (gemma2) h = h.map((v) => v * Math.fround(Math.sqrt(hidden)));
    for (let l = 0; l < layers; l++) {
      const p = `model.layers.${l}.`;
      const x = norm(h, `${p}input_layernorm.weight`);
      const q = affine(t[`${p}self_attn.q_proj.weight`]!, x, t[`${p}self_attn.q_proj.bias`]);
      const k = affine(t[`${p}self_attn.k_proj.weight`]!, x, t[`${p}self_attn.k_proj.bias`]);
      const v = affine(t[`${p}self_attn.v_proj.weight`]!, x, t[`${p}self_attn.v_proj.bias`]);
      if (t[`${p}self_attn.q_norm.weight`]) {
        rmsNormHeads(q, t[`${p}self_attn.q_norm.weight`]!.data, headDim, eps);
        rmsNormHeads(k, t[`${p}self_attn.k_norm.weight`]!.data, headDim, eps);
      }
      rope(q, heads, headDim, pos, invFreq);
      rope(k, kvHeads, headDim, pos, invFreq);
      keys[l]!.push(k);
      values[l]!.push(v);
      // Gemma2 slides on even layers, Mistral and Mixtral on all: a key at distance ≥ window is masked
      const slides = window && (gemma2 ? l % 2 === 0 : ['mistral', 'mixtral'].includes(config['model_type'] as string));
      const first = slides ? Math.max(0, pos - window + 1) : 0;
      const attn = new Float64Array(heads * headDim);
      for (let hd = 0; hd < heads; hd++) {
        const kv = Math.floor(hd / (heads / kvHeads));
        const scores = keys[l]!.slice(first).map((kk) => {
          let s = 0;
          for (let d = 0; d < headDim; d++) s += q[hd * headDim + d]! * kk[kv * headDim + d]!;
          return softcap(s * scale, attnCap);
        });
        const m = Math.max(...scores);
        const w = scores.map((s) => Math.exp(s - m));
        const z = w.reduce((a, b) => a + b, 0);
        for (let j = 0; j < w.length; j++) {
          for (let d = 0; d < headDim; d++) attn[hd * headDim + d]! += (w[j]! / z) * values[l]![first + j]![kv * headDim + d]!;
        }
      }
      let o = affine(t[`${p}self_attn.o_proj.weight`]!, attn);
      if (gemma2) o = norm(o, `${p}post_attention_layernorm.weight`);
      h = h.map((v2, i) => v2 + o[i]!);
      const x2 = norm(h, gemma2 ? `${p}pre_feedforward_layernorm.weight` : `${p}post_attention_layernorm.weight`);
      let down: Float64Array;
      if (topK) down = moe(t, p, x2, topK);
      else {
        const gate = affine(t[`${p}mlp.gate_proj.weight`]!, x2);
        const up = affine(t[`${p}mlp.up_proj.weight`]!, x2);
        down = affine(t[`${p}mlp.down_proj.weight`]!, gate.map((g, i) => (gemma2 ? gelu(g) : silu(g)) * up[i]!));
      }
      if (gemma2) down = norm(down, `${p}post_feedforward_layernorm.weight`);
      h = h.map((v2, i) => v2 + down[i]!);
    }
    const head = t['lm_head.weight'] ?? embed;
    out.push(affine(head, norm(h, 'model.norm.weight')).map((v) => softcap(v, finalCap)));
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tokenizer material from llama.cpp's vocab GGUFs and golden tokenization vectors
// ---------------------------------------------------------------------------------------------

export interface VocabArrays {
  kv: Map<string, unknown>;
  tokens: string[];
  types: number[];
  scores?: number[];
  merges?: string[];
}

export async function readVocabGguf(path: string): Promise<VocabArrays> {
  const { openGguf } = await import('../../src/io/gguf.js');
  const f = await openGguf(path);
  try {
    const kv = f.kv;
    return {
      kv,
      tokens: kv.get('tokenizer.ggml.tokens') as string[],
      types: kv.get('tokenizer.ggml.token_type') as number[],
      scores: kv.get('tokenizer.ggml.scores') as number[] | undefined,
      merges: kv.get('tokenizer.ggml.merges') as string[] | undefined,
    };
  } finally {
    await f.close();
  }
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

/**
 * A SentencePiece `tokenizer.model` (protobuf ModelProto with only `pieces`: piece = 1,
 * score = 2 (float), type = 3 (enum)), encoded from scratch for tests.
 */
export function encodeSentencePieceModel(pieces: Array<{ piece: string; score: number; type: number }>): Buffer {
  const chunks: Buffer[] = [];
  for (const p of pieces) {
    const text = Buffer.from(p.piece, 'utf8');
    const score = Buffer.alloc(4);
    score.writeFloatLE(p.score);
    const body = Buffer.concat([Buffer.from([0x0a, ...varint(text.length)]), text, Buffer.from([0x15]), score, Buffer.from([0x18, ...varint(p.type)])]);
    chunks.push(Buffer.from([0x0a, ...varint(body.length)]), body);
  }
  // a trainer_spec-like field 2 the parser must skip
  chunks.push(Buffer.from([0x12, 0x02, 0x08, 0x01]));
  return Buffer.concat(chunks);
}

/** llama.cpp's tests/test-tokenizer-0 cases: inputs split on "\n__ggml_vocab_test__\n", one line of ids per input. */
export async function readGoldenTokenizerCases(inpPath: string, outPath: string): Promise<Array<{ text: string; ids: number[] }>> {
  const { readFile } = await import('node:fs/promises');
  const raw = await readFile(inpPath, 'utf8');
  const inputs = raw.split('\n__ggml_vocab_test__\n');
  if (inputs[inputs.length - 1] === '') inputs.pop();
  const lines = (await readFile(outPath, 'utf8')).split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  if (inputs.length !== lines.length) throw new Error(`${inpPath}: ${inputs.length} inputs but ${lines.length} expected outputs`);
  return inputs.map((text, i) => ({ text, ids: lines[i]!.trim() === '' ? [] : lines[i]!.trim().split(' ').map(Number) }));
}

// ---------------------------------------------------------------------------------------------
// GGUF vs reference, in llama.cpp
// ---------------------------------------------------------------------------------------------

function maxAbsDiff64(a: Float32Array[], b: Float64Array[]): { diff: number; scale: number } {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    for (let j = 0; j < a[i]!.length; j++) {
      diff = Math.max(diff, Math.abs(a[i]![j]! - b[i]![j]!));
      scale = Math.max(scale, Math.abs(b[i]![j]!));
    }
  }
  return { diff, scale };
}

/**
 * Loads `gguf` in llama.cpp and asserts that it tokenizes llama.cpp's golden test strings as
 * expected and that its logits for `text` (last `lastN` positions) match `referenceLogits`.
 */
export async function checkAgainstLlamaCpp(
  llama: LlamaLike,
  gguf: string,
  tensors: Parameters<typeof referenceLogits>[0],
  config: Record<string, unknown>,
  golden: { inp: string; out: string },
  tolerance: number,
  text = 'Hello world! The quick brown fox jumps over 13 lazy dogs.',
): Promise<void> {
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  try {
    const cases = await readGoldenTokenizerCases(golden.inp, golden.out);
    let mismatches = 0;
    for (const c of cases) if (JSON.stringify(model.tokenize(c.text)) !== JSON.stringify(c.ids)) mismatches++;
    assert.equal(mismatches, 0, `${mismatches} of ${cases.length} golden tokenizations differ`);

    const tokens = model.tokenize(text);
    // the last few positions attend over the whole sequence; fewer logits keep a 152k vocabulary fast
    const lastN = 4;
    const got = await llamaLogits(model, tokens, config['vocab_size'] as number, undefined, lastN);
    const { diff, scale } = maxAbsDiff64(got, referenceLogits(tensors, config, tokens).slice(-lastN));
    process.stderr.write(`  ${String(config['model_type'])}: ${cases.length} golden tokenizations ok; logit scale ${scale.toFixed(2)}, max |llama.cpp − reference| ${diff.toExponential(2)}\n`);
    assert.ok(scale > 1, 'logits are not degenerate');
    assert.ok(diff <= tolerance * scale, `llama.cpp logits differ from the reference by ${diff} (allowed ${tolerance * scale})`);
  } finally {
    await model.dispose();
  }
}
