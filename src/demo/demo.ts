/**
 * `loraforge demo`: a self-contained run of extraction on a pair whose answer is known. A small
 * Llama-shaped base is generated, two fine-tunes are made from it by merging known random LoRAs
 * in bf16 (A: rank 8 on q_proj and v_proj; B: rank 4 on q_proj, k_proj and down_proj, plus a
 * changed norm), and the adapter B − A is extracted with an energy threshold. It should find
 * rank 12 on q_proj (8 + 4: both touched it), 8 on v_proj, 4 on k_proj and down_proj, skip the
 * untouched modules, and rebuild every Δ to the level of bf16 rounding of the two checkpoints.
 * The models carry config.json and a small real tokenizer, so every other command runs on them.
 * No downloads; a few seconds.
 */
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathExists } from '../io/paths.js';
import { createSafetensorsSink } from '../io/safetensors.js';
import { getBackend } from '../linalg/index.js';
import { orthonormalize } from '../linalg/qr.js';
import { openPeftAdapter } from '../lora/adapter.js';
import { product as lowRankProduct } from '../lowrank/low-rank.js';
import { createRng, type Rng } from '../linalg/random.js';
import { roundTo } from '../tensor/dtype.js';
import { extractLora } from '../extract/extract.js';
import type { ExtractReport } from '../extract/report.js';
import { withInputTracking } from '../io/inputs.js';
import { newTemporaryFolder, releaseTemporary, trackTemporary } from '../io/temporaries.js';
import { writeDemoTokenizer } from './demo-tokenizer.js';
import type { OnProgress } from '../progress.js';

export const DEMO_SHAPE = { layers: 4, hidden: 256, intermediate: 688, heads: 8, kvHeads: 4, vocab: 1000 } as const;
/** The energy threshold the demo extracts with: high enough to need every planted direction. */
export const DEMO_ENERGY = 0.999;

/** Module types of a Llama layer, in the order people list them. */
const MODULE_ORDER = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];

/** Which modules each fine-tune changed, with the rank of the LoRA merged into them. */
const PLANTED: Readonly<Record<'a' | 'b', Readonly<Record<string, number>>>> = {
  a: { 'self_attn.q_proj': 8, 'self_attn.v_proj': 8 },
  b: { 'self_attn.q_proj': 4, 'self_attn.k_proj': 4, 'mlp.down_proj': 4 },
};
/** The norm fine-tune B also changed: not a LoRA target, so it shows up in the report's list. */
const CHANGED_NORM = 'model.layers.0.input_layernorm.weight';
const BASE_STD = 0.02;
/** RMS of a planted LoRA's entries relative to the base weights' (a strong but realistic fine-tune). */
const DELTA_TO_BASE = 0.2;

export interface DemoOptions {
  /** write the adapter here (kept) instead of inside the temporary folder */
  out?: string;
  /** replace a non-empty `out` (and, with `keep`, the models beside it) */
  overwrite?: boolean;
  /**
   * keep the generated models: beside `out` as `<out>-model-a` and `<out>-model-b`, or without
   * `out` in the temporary folder, which is then kept with the adapter
   */
  keep?: boolean;
  seed?: number;
  /** called after each tensor the extraction finishes */
  onProgress?: OnProgress;
}

export interface DemoModule {
  /** module type, e.g. `self_attn.q_proj` */
  module: string;
  layers: number;
  /** rank of the LoRA merged into A / into B (0: not touched) */
  plantedA: number;
  plantedB: number;
  /** ranks found per layer */
  found: number[];
  /** per layer: ‖scaling·B·A − ΔW_planted‖ / ‖ΔW_planted‖, with B, A read back from the adapter file */
  errors: number[];
  /** per layer: ‖ΔW_stored − ΔW_planted‖ / ‖ΔW_planted‖, the noise bf16 rounding of A and B put into ΔW */
  noise: number[];
}

export interface DemoResult {
  /** where the generated models are; null when they were in a temporary folder, now removed */
  models: { a: string; b: string } | null;
  /** the adapter folder; null when it was in the temporary folder, now removed */
  adapterDir: string | null;
  /** the extraction's report; the paths of removed folders in it are given as their names (model-a, model-b, adapter) */
  report: ExtractReport;
  /** modules either fine-tune changed */
  modules: DemoModule[];
  /** module types neither changed (identical in A and B, skipped) */
  untouched: string[];
  /** every planted rank found exactly */
  recovered: boolean;
  buildSeconds: number;
}

type Tensor = { shape: number[]; data: Float32Array };

/** count entries of N(0, std²) from the seeded stream. */
export function gaussian(rng: Rng, count: number, std: number): Float32Array {
  const data = new Float32Array(count);
  rng.fillNormal(data);
  for (let i = 0; i < count; i++) data[i] *= std;
  return data;
}

/** U·diag(s)·Vᵀ (rows × cols) with random orthonormal U, V and slowly decaying s, at the demo's strength. */
function randomLora(rng: Rng, rows: number, cols: number, rank: number): Float32Array {
  const U = orthonormalize({ rows, cols: rank, data: gaussian(rng, rows * rank, 1) });
  const V = orthonormalize({ rows: cols, cols: rank, data: gaussian(rng, cols * rank, 1) });
  const s = Array.from({ length: rank }, (_, i) => 1 - i / (2 * rank));
  const norm = Math.hypot(...s);
  const scale = (DELTA_TO_BASE * BASE_STD * Math.sqrt(rows * cols)) / norm;
  const out = new Float32Array(rows * cols);
  const row = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    row.fill(0);
    for (let c = 0; c < rank; c++) {
      const f = U.data[i * rank + c] * s[c] * scale;
      for (let j = 0; j < cols; j++) row[j] += f * V.data[j * rank + c];
    }
    for (let j = 0; j < cols; j++) out[i * cols + j] = row[j];
  }
  return out;
}

/** Tensor names and shapes of an untied Llama model of shape `s` (the demo's by default), sorted as the demo writes them. */
export function llamaTensorShapes(
  s: { layers: number; hidden: number; intermediate: number; heads: number; kvHeads: number; vocab: number } = DEMO_SHAPE,
): Array<[string, number[]]> {
  const { layers, hidden, intermediate, heads, kvHeads, vocab } = s;
  const kv = (hidden / heads) * kvHeads;
  const shapes: Array<[string, number[]]> = [['model.embed_tokens.weight', [vocab, hidden]]];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    shapes.push(
      [`${p}.input_layernorm.weight`, [hidden]],
      [`${p}.mlp.down_proj.weight`, [hidden, intermediate]],
      [`${p}.mlp.gate_proj.weight`, [intermediate, hidden]],
      [`${p}.mlp.up_proj.weight`, [intermediate, hidden]],
      [`${p}.post_attention_layernorm.weight`, [hidden]],
      [`${p}.self_attn.k_proj.weight`, [kv, hidden]],
      [`${p}.self_attn.o_proj.weight`, [hidden, hidden]],
      [`${p}.self_attn.q_proj.weight`, [hidden, hidden]],
      [`${p}.self_attn.v_proj.weight`, [kv, hidden]],
    );
  }
  shapes.push(['model.norm.weight', [hidden]], ['lm_head.weight', [vocab, hidden]]);
  return shapes;
}

/** config.json of a Llama model of shape `s` (the demo's by default); `tied`: no lm_head, as tie_word_embeddings says. */
export function llamaConfig(
  s: { layers: number; hidden: number; intermediate: number; heads: number; kvHeads: number; vocab: number; tied?: boolean } = DEMO_SHAPE,
): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    head_dim: s.hidden / s.heads,
    vocab_size: s.vocab,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: 'silu',
    tie_word_embeddings: s.tied ?? false,
    torch_dtype: 'bfloat16',
  };
}

function moduleOf(name: string): { layer: number; module: string } | undefined {
  const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(name);
  return m ? { layer: Number(m[1]), module: m[2] } : undefined;
}

function relDiff(x: Float32Array, y: Float32Array): number {
  let d = 0;
  let t = 0;
  for (let i = 0; i < x.length; i++) {
    d += (x[i] - y[i]) ** 2;
    t += y[i] * y[i];
  }
  return Math.sqrt(d / t);
}

interface PlantedDelta {
  /** ΔW = LoRA_B − LoRA_A as planted, in f32 */
  delta: Float32Array;
  /** relative difference between the Δ the bf16 files hold and the planted one */
  noise: number;
}

/**
 * Writes base + LoRA_A as model A and base + LoRA_B as model B (bf16, with config.json) and
 * returns every planted ΔW with the rounding noise the files added to it.
 */
async function buildPair(dirA: string, dirB: string, seed: number): Promise<Map<string, PlantedDelta>> {
  const rng = createRng(seed);
  await Promise.all([mkdir(dirA), mkdir(dirB)]);
  const sinkA = await createSafetensorsSink(dirA, { dtype: 'BF16' });
  const sinkB = await createSafetensorsSink(dirB, { dtype: 'BF16' });
  const planted = new Map<string, PlantedDelta>();
  try {
    for (const [name, shape] of llamaTensorShapes()) {
      const count = shape.reduce((x, y) => x * y, 1);
      const base: Tensor = { shape, data: name.endsWith('norm.weight') ? new Float32Array(count).fill(1) : gaussian(rng, count, BASE_STD) };
      const at = moduleOf(name);
      const lora = (side: 'a' | 'b') => {
        const rank = at ? PLANTED[side][at.module] : undefined;
        return rank ? randomLora(rng, shape[0], shape[1], rank) : undefined;
      };
      const [la, lb] = [lora('a'), lora('b')];
      const a = la ? base.data.map((x, i) => x + la[i]) : base.data;
      const b = lb ? base.data.map((x, i) => x + lb[i]) : name === CHANGED_NORM ? base.data.map((x, i) => (i < 32 ? x * 1.25 : x)) : base.data;
      if (la || lb) {
        const delta = new Float32Array(count);
        for (let i = 0; i < count; i++) delta[i] = (lb?.[i] ?? 0) - (la?.[i] ?? 0);
        const [ra, rb] = [roundTo(a, 'BF16'), roundTo(b, 'BF16')];
        planted.set(name, { delta, noise: relDiff(rb.map((x, i) => x - ra[i]), delta) });
      }
      await sinkA.add(name, shape, a);
      await sinkB.add(name, shape, b);
    }
    await Promise.all([sinkA.finish(), sinkB.finish()]);
  } catch (err) {
    await Promise.all([sinkA.abort(), sinkB.abort()]);
    throw err;
  }
  const config = `${JSON.stringify(llamaConfig(), null, 2)}\n`;
  for (const dir of [dirA, dirB]) {
    await writeFile(join(dir, 'config.json'), config);
    await writeDemoTokenizer(dir, DEMO_SHAPE.vocab);
  }
  return planted;
}

/** Every module of the adapter file rebuilt as scaling·B·A, compared with what was planted. */
async function errorsVsPlanted(adapterDir: string, planted: Map<string, PlantedDelta>): Promise<Map<string, number>> {
  const backend = await getBackend();
  const adapter = await openPeftAdapter(adapterDir);
  const errors = new Map<string, number>();
  try {
    for (const info of adapter.modules) {
      const name = `${info.name}.weight`;
      const truth = planted.get(name);
      if (!truth) continue;
      const m = await adapter.load(info.name);
      errors.set(name, relDiff((await lowRankProduct(backend, m, info.scaling)).data, truth.delta));
    }
    return errors;
  } finally {
    await adapter.close();
  }
}

function summarize(report: ExtractReport, planted: Map<string, PlantedDelta>, errors: Map<string, number>): { modules: DemoModule[]; untouched: string[] } {
  const byType = new Map<string, DemoModule>();
  for (const module of MODULE_ORDER) {
    const plantedA = PLANTED.a[module] ?? 0;
    const plantedB = PLANTED.b[module] ?? 0;
    if (plantedA + plantedB > 0) byType.set(module, { module, layers: DEMO_SHAPE.layers, plantedA, plantedB, found: [], errors: [], noise: [] });
  }
  for (const t of report.tensors) {
    const entry = byType.get(moduleOf(t.name)?.module ?? '');
    if (!entry) continue;
    entry.found.push(t.rank);
    entry.errors.push(errors.get(t.name) ?? NaN);
    entry.noise.push(planted.get(t.name)?.noise ?? NaN);
  }
  return { modules: [...byType.values()], untouched: MODULE_ORDER.filter((m) => !byType.has(m)) };
}

/** Where the models go: beside `out` when kept with it, else in the temporary folder. */
function modelDirs(opts: DemoOptions, workDir: string): { a: string; b: string } {
  if (opts.keep && opts.out !== undefined) return { a: `${resolve(opts.out)}-model-a`, b: `${resolve(opts.out)}-model-b` };
  return { a: join(workDir, 'model-a'), b: join(workDir, 'model-b') };
}

/** Models kept beside `out` replace earlier ones only with `overwrite`, as `out` itself does. */
async function clearModelDirs(dirs: { a: string; b: string }, overwrite: boolean): Promise<void> {
  for (const dir of [dirs.a, dirs.b]) {
    if (!(await pathExists(dir, 'output'))) continue;
    if (!overwrite) throw new Error(`${dir} exists: the demo keeps its models there with --keep; remove it, choose another --out, or pass --force`);
    await rm(dir, { recursive: true, force: true });
  }
}

export function runDemo(opts: DemoOptions = {}): Promise<DemoResult> {
  return withInputTracking(() => runDemoInRun(opts));
}

async function runDemoInRun(opts: DemoOptions = {}): Promise<DemoResult> {
  const seed = opts.seed ?? 0;
  const workDir = await newTemporaryFolder('loraforge-demo-'); // an interrupted demo leaves no temporary folder
  const models = modelDirs(opts, workDir);
  const adapterDir = opts.out ?? join(workDir, 'adapter');
  // without --keep the temporary folder goes at the end; with --keep and --out only it goes (it is empty)
  const keepWorkDir = opts.keep === true && opts.out === undefined;
  let succeeded = false;
  let modelsAreOurs = false;
  try {
    await clearModelDirs(models, opts.overwrite === true);
    modelsAreOurs = true;
    // from here on they are this run's: an interruption or a failure removes them
    for (const dir of [models.a, models.b]) trackTemporary(dir);
    const t0 = performance.now();
    const planted = await buildPair(models.a, models.b, seed);
    const buildSeconds = (performance.now() - t0) / 1000;
    const report = await extractLora({
      modelA: models.a,
      modelB: models.b,
      out: adapterDir,
      overwrite: opts.overwrite,
      policy: { mode: 'energy', energy: DEMO_ENERGY, maxRank: 32 },
      seed,
      verify: true,
      onProgress: opts.onProgress,
    });
    const { modules, untouched } = summarize(report, planted, await errorsVsPlanted(adapterDir, planted));
    const recovered = modules.every((m) => m.found.length === m.layers && m.found.every((r) => r === m.plantedA + m.plantedB));
    succeeded = true;
    const modelsKept = opts.keep === true;
    const adapterKept = opts.out !== undefined || keepWorkDir;
    return {
      models: modelsKept ? models : null,
      adapterDir: adapterKept ? adapterDir : null,
      // no path of a folder removed below is handed out: they are named by their role instead
      report: { ...report, ...(modelsKept ? {} : { modelA: 'model-a', modelB: 'model-b' }), ...(adapterKept ? {} : { out: 'adapter' }) },
      modules,
      untouched,
      recovered,
      buildSeconds,
    };
  } finally {
    if (!keepWorkDir) await rm(workDir, { recursive: true, force: true });
    // models kept beside --out are removed when the run failed: nothing half-made is left there
    if (!succeeded && modelsAreOurs && opts.keep && opts.out !== undefined) await Promise.all([models.a, models.b].map((d) => rm(d, { recursive: true, force: true })));
    for (const dir of [workDir, models.a, models.b]) releaseTemporary(dir);
  }
}
