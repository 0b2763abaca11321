/**
 * `edora-init`: the starting point of an EDoRA fine-tune (Nasiri et al. 2025), computed out of
 * core, written as an adapter folder the reference code (github.com/Hamid-Nasiri/EDoRA) loads.
 *
 * What the reference does for each targeted nn.Linear W (out × in), and what we reproduce:
 * - A truncated SVD of Wᵀ = U·Σ·Vᵀ (sklearn's randomized TruncatedSVD) gives lora_B = V_r and
 *   lora_A = Σ_r·U_rᵀ, both frozen. In terms of W = U_w·Σ·V_wᵀ that is B = U_w,r (out × r) and
 *   A = Σ_r·V_w,rᵀ (r × in), so B·A is the best rank-r approximation of W. We use our seeded
 *   randomized SVD; any sign convention is an equally valid start since R mixes the directions.
 * - The trainable latent R (r × r, `default_lora_latent_mapping`) starts as N(0, σ²) with
 *   σ = 1e-5 (the reference's init_sigma), so W + s·B·R·A is W to within ~σ at the start.
 * - The DoRA magnitude is created by PEFT before A and B are replaced, while B is still zero, so it
 *   is the row norms of W itself.
 * - reconstr_config.json records the SVD settings (the reference writes it beside the adapter).
 */
import { join, resolve } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { atomicWriteFile } from '../io/atomic.js';
import type { FloatDType } from '../io/types.js';
import { getBackend } from '../linalg/index.js';
import type { LinalgBackend } from '../linalg/backend.js';
import { createRng } from '../linalg/random.js';
import { randomizedSvd } from '../linalg/rsvd.js';
import { createAdapterSink } from '../lora/sink.js';
import { runCommand } from '../pipeline/run.js';
import { matrix } from '../tensor/matrix.js';
import { weightNorms } from '../lora/weight-update.js';
import { edoraReconstrConfig, RECONSTR_CONFIG_FILE } from '../lora/variant.js';
import { baseModelNameOrPath } from '../lora/base-model.js';
import type { OnProgress } from '../progress.js';
import type { HubOptions } from '../io/hub/index.js';
import { localInput } from '../io/local-inputs.js';

export const DEFAULT_EDORA_SIGMA = 1e-5;
export const DEFAULT_EDORA_POWER_ITERS = 4;

export interface EdoraInitOptions {
  base: string;
  rank: number;
  /** module names or name endings, matched the way PEFT matches target_modules lists */
  targetModules: string[];
  out: string;
  /** seed of the randomized SVD and of R (default 0) */
  seed?: number;
  /** lora_alpha (default: the rank, i.e. scaling 1) */
  alpha?: number;
  /** standard deviation of R's initial entries (default 1e-5, as the reference) */
  sigma?: number;
  /** power iterations of the randomized SVD (default 4) */
  powerIters?: number;
  /** storage dtype of A and B (default F32; R and the magnitude are always F32) */
  dtype?: FloatDType;
  overwrite?: boolean;
  backend?: LinalgBackend;
  /** how Hub ids among the inputs are fetched (offline, cache folder, endpoint, token); downloads report as phase 'download' */
  hub?: HubOptions;
  /** called after each module */
  onProgress?: OnProgress;
}

export interface EdoraInitModule {
  name: string;
  tensor: string;
  /** [out, in] */
  shape: [number, number];
  /** fraction of ‖W‖²_F that B·A (the rank-r SVD) captures */
  energy: number;
}

export interface EdoraInitReport {
  base: string;
  out: string;
  rank: number;
  alpha: number;
  sigma: number;
  seed: number;
  powerIters: number;
  modules: EdoraInitModule[];
  seconds: number;
}

/** PEFT's rule for a list of target_modules: the module path equals an entry or ends with `.` + entry. */
function matchesTarget(module: string, target: string): boolean {
  return module === target || module.endsWith(`.${target}`);
}

/** Embedding layers are nn.Embedding, which EDoRA's reference initialiser refuses. */
const EMBEDDING_NAME = /(^|\.)[^.]*(embed|wte|wpe)[^.]*$/;

interface Selected {
  name: string;
  tensor: string;
  shape: [number, number];
}

/** The targeted linear layers, each checked to be one EDoRA can start from at this rank. */
function selectModules(base: Checkpoint, targets: string[], rank: number): Selected[] {
  const selected: Selected[] = [];
  const used = new Set<string>();
  for (const t of base.list()) {
    if (!t.name.endsWith('.weight')) continue;
    const name = t.name.slice(0, -'.weight'.length);
    const target = targets.find((x) => matchesTarget(name, x));
    if (!target) continue;
    used.add(target);
    if (t.shape.length !== 2) throw new Error(`edora-init: target "${target}" matches "${t.name}" of shape [${t.shape.join(', ')}] in ${base.path}; EDoRA adapts linear layers (2-D weights) only`);
    if (EMBEDDING_NAME.test(name)) throw new Error(`edora-init: target "${target}" matches the embedding "${name}"; EDoRA's reference code initialises nn.Linear layers only`);
    const [out, inF] = t.shape;
    if (rank > Math.min(out, inF)) throw new Error(`edora-init: rank ${rank} exceeds the smaller side of "${t.name}" [${out}, ${inF}]`);
    selected.push({ name, tensor: t.name, shape: [out, inF] });
  }
  const unused = targets.filter((t) => !used.has(t));
  if (unused.length > 0) throw new Error(`edora-init: target module(s) ${unused.join(', ')} not found in ${base.path}; check the names (e.g. q_proj, v_proj, gate_proj)`);
  return selected;
}

export async function edoraInit(params: EdoraInitOptions): Promise<EdoraInitReport> {
  const opts = { ...params, base: await localInput(params.base, 'model', params) };
  const started = Date.now();
  const seed = opts.seed ?? 0;
  const sigma = opts.sigma ?? DEFAULT_EDORA_SIGMA;
  const powerIters = opts.powerIters ?? DEFAULT_EDORA_POWER_ITERS;
  const alpha = opts.alpha ?? opts.rank;
  const r = opts.rank;
  if (!Number.isInteger(r) || r < 1) throw new Error(`edora-init: rank must be an integer ≥ 1, got ${r}`);
  if (!(sigma >= 0) || !Number.isFinite(alpha)) throw new Error(`edora-init: sigma must be ≥ 0 and alpha finite (got ${sigma}, ${alpha})`);
  const targets = opts.targetModules.map((t) => t.trim()).filter((t) => t !== '');
  if (targets.length === 0) throw new Error('edora-init: give at least one target module (e.g. q_proj,v_proj)');

  return runCommand({
    inputs: [opts.base],
    open: async (keep) => ({ backend: opts.backend ?? (await getBackend()), base: keep(await openCheckpoint(opts.base)) }),
    plan: ({ base }) => ({ items: selectModules(base, targets, r), rng: createRng(seed) }),
    output: {
      dir: opts.out,
      overwrite: opts.overwrite,
      sink: (tmpPath, { res }) => createAdapterSink(tmpPath, { format: 'peft', dtype: opts.dtype, baseModel: baseModelNameOrPath(res.base), useDora: true }),
    },
    load: (item, { res }) => res.base.read(item.tensor),
    each: async (item, value, { res, plan, sink }): Promise<EdoraInitModule> => {
      const [out, inF] = item.shape;
      const W = matrix(out, inF, value);
      const svd = await randomizedSvd(res.backend, W, { rank: r, seed, powerIters });
      const B = matrix(out, r);
      for (let i = 0; i < out; i++) for (let j = 0; j < r; j++) B.data[i * r + j] = svd.U.data[i * svd.U.cols + j];
      const A = matrix(r, inF);
      for (let j = 0; j < r; j++) for (let c = 0; c < inF; c++) A.data[j * inF + c] = svd.S[j] * svd.V.data[c * svd.V.cols + j];
      const latent = matrix(r, r);
      plan.rng.fillNormal(latent.data);
      for (let i = 0; i < latent.data.length; i++) latent.data[i] *= sigma;
      const magnitude = Float32Array.from(weightNorms(W, 'rows'));
      let total = 0;
      for (const m of magnitude) total += m * m;
      let kept = 0;
      for (let j = 0; j < r; j++) kept += svd.S[j] ** 2;
      await sink.addModule({ name: item.name, kind: 'linear', A, B, alpha, magnitude, latent });
      return { name: item.name, tensor: item.tensor, shape: item.shape, energy: total > 0 ? kept / total : 0 };
    },
    finish: async (modules, { sink, tmpPath }) => {
      await sink.finish();
      await atomicWriteFile(join(tmpPath, RECONSTR_CONFIG_FILE), `${JSON.stringify(edoraReconstrConfig(r, powerIters, seed), null, 2)}\n`);
      return { base: resolve(opts.base), out: resolve(opts.out), rank: r, alpha, sigma, seed, powerIters, modules, seconds: (Date.now() - started) / 1000 };
    },
    onProgress: opts.onProgress,
  });
}
