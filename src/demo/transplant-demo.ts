/**
 * `loraforge demo transplant`: transplant on a pair whose answer is known. A small Llama-shaped
 * base (width 64) and a donor of another width (96) and tokenizer are generated: the donor's
 * tokenizer is the base's with its regular ids shuffled, and its embedding and lm_head rows are the
 * base's rows of the same token rotated into the wider space, scaled and shifted. The alignment
 * should find that map (residual at the level of bf16 rounding, scale 1 / the planted one), and
 * the blend, which then puts each base row back in its own direction, leaves perplexity unchanged.
 * No downloads; a few seconds.
 */
import { mkdir, rm, writeFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readJsonFile } from '../io/json-file.js';
import { createSafetensorsSink } from '../io/safetensors.js';
import { withInputTracking } from '../io/inputs.js';
import { newTemporaryFolder, releaseTemporary } from '../io/temporaries.js';
import { orthonormalize } from '../linalg/qr.js';
import { createRng, type Rng } from '../linalg/random.js';
import { roundTo } from '../tensor/dtype.js';
import { transplantEmbeddings, type TransplantReport } from '../transplant/transplant.js';
import type { OnProgress } from '../progress.js';
import { gaussian, llamaConfig, llamaTensorShapes } from './demo.js';
import { writeDemoTokenizer } from './demo-tokenizer.js';

const SHAPE = { layers: 2, intermediate: 176, heads: 4, kvHeads: 2, vocab: 512 } as const;
export const TRANSPLANT_DEMO = { baseWidth: 64, donorWidth: 96, scale: 1.5, vocab: SHAPE.vocab } as const;
const STD = 0.02;

export interface TransplantDemoOptions {
  /** keep the transplanted model in this folder */
  out?: string;
  overwrite?: boolean;
  seed?: number;
  onProgress?: OnProgress;
}

export interface TransplantDemoResult {
  report: TransplantReport;
  /** the transplanted model's folder; null when it was in the temporary folder, now removed */
  outDir: string | null;
  /** the alignment found the planted map (residual and scale) and the guard saw no change */
  recovered: boolean;
  buildSeconds: number;
}

/** A seeded shuffle of 0..n-1. */
function permutation(rng: Rng, n: number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [p[i], p[j]] = [p[j]!, p[i]!];
  }
  return p;
}

/** The donor's tokenizer: the base's, with the regular (non-special) ids shuffled by `perm`. */
async function writeShuffledTokenizer(baseDir: string, donorDir: string, perm: number[]): Promise<void> {
  const json = (await readJsonFile(join(baseDir, 'tokenizer.json'))) as { model: { vocab: Record<string, number> } };
  for (const [token, id] of Object.entries(json.model.vocab)) if (id < perm.length) json.model.vocab[token] = perm[id]!;
  await writeFile(join(donorDir, 'tokenizer.json'), JSON.stringify(json, null, 2) + '\n');
  await copyFile(join(baseDir, 'tokenizer_config.json'), join(donorDir, 'tokenizer_config.json'));
}

/** Writes the base and the donor (bf16, config.json, tokenizer). */
/** Writes the demo's base and donor model folders (the planted map between them). */
export async function buildTransplantPair(baseDir: string, donorDir: string, seed: number): Promise<void> {
  const rng = createRng(seed);
  const { baseWidth, donorWidth, scale } = TRANSPLANT_DEMO;
  await Promise.all([mkdir(baseDir), mkdir(donorDir)]);
  await writeDemoTokenizer(baseDir, SHAPE.vocab);
  const regular = Object.keys(((await readJsonFile(join(baseDir, 'tokenizer.json'))) as { model: { vocab: object } }).model.vocab).length;
  const perm = permutation(rng, regular);
  await writeShuffledTokenizer(baseDir, donorDir, perm);
  // donor row of token t = scale · Q · base row of t + shift, Q (donor × base width) with orthonormal columns
  const Q = orthonormalize({ rows: donorWidth, cols: baseWidth, data: gaussian(rng, donorWidth * baseWidth, 1) });
  const shift = gaussian(rng, donorWidth, STD);
  const mapTable = (base: Float32Array): Float32Array => {
    const stored = roundTo(base, 'BF16');
    const out = gaussian(rng, SHAPE.vocab * donorWidth, STD); // rows no regular token owns: the donor's own
    for (let id = 0; id < regular; id++) {
      const d = perm[id]!;
      for (let i = 0; i < donorWidth; i++) {
        let s = 0;
        for (let j = 0; j < baseWidth; j++) s += Q.data[i * baseWidth + j]! * stored[id * baseWidth + j]!;
        out[d * donorWidth + i] = scale * s + shift[i]!;
      }
    }
    return out;
  };
  const sinkBase = await createSafetensorsSink(baseDir, { dtype: 'BF16' });
  const sinkDonor = await createSafetensorsSink(donorDir, { dtype: 'BF16' });
  try {
    const donorShapes = new Map(llamaTensorShapes({ ...SHAPE, hidden: donorWidth, intermediate: 256 }));
    for (const [name, shape] of llamaTensorShapes({ ...SHAPE, hidden: baseWidth })) {
      const count = shape.reduce((x, y) => x * y, 1);
      const isNorm = name.endsWith('norm.weight');
      const base = isNorm ? new Float32Array(count).fill(1) : gaussian(rng, count, STD);
      await sinkBase.add(name, shape, base);
      const donorShape = donorShapes.get(name)!;
      const donorCount = donorShape.reduce((x, y) => x * y, 1);
      const table = name === 'model.embed_tokens.weight' || name === 'lm_head.weight';
      await sinkDonor.add(name, donorShape, table ? mapTable(base) : isNorm ? new Float32Array(donorCount).fill(1) : gaussian(rng, donorCount, STD));
    }
    await Promise.all([sinkBase.finish(), sinkDonor.finish()]);
  } catch (err) {
    await Promise.all([sinkBase.abort(), sinkDonor.abort()]);
    throw err;
  }
  await writeFile(join(baseDir, 'config.json'), `${JSON.stringify(llamaConfig({ ...SHAPE, hidden: baseWidth }), null, 2)}\n`);
  await writeFile(join(donorDir, 'config.json'), `${JSON.stringify(llamaConfig({ ...SHAPE, hidden: donorWidth, intermediate: 256 }), null, 2)}\n`);
}

export function runTransplantDemo(opts: TransplantDemoOptions = {}): Promise<TransplantDemoResult> {
  return withInputTracking(async () => {
    const workDir = await newTemporaryFolder('loraforge-demo-transplant-'); // an interrupted demo leaves no temporary folder
    try {
      const base = join(workDir, 'base');
      const donor = join(workDir, 'donor');
      const t0 = performance.now();
      await buildTransplantPair(base, donor, opts.seed ?? 0);
      const buildSeconds = (performance.now() - t0) / 1000;
      const out = opts.out ?? join(workDir, 'transplanted');
      const report = await transplantEmbeddings({ base, donor, out, overwrite: opts.overwrite, onProgress: opts.onProgress });
      const planted = 1 / TRANSPLANT_DEMO.scale;
      // bf16 storage of both tables is the only noise: ~2⁻⁹ relative per entry
      const recovered =
        report.stages.every((s) => s.outcome === 'kept' && s.alignment !== undefined && s.alignment.residualAfter < 0.01 && Math.abs(s.alignment.scale / planted - 1) < 0.01) &&
        Math.abs(report.final.pplRatio - 1) < 0.01;
      // no path of the removed temporary folder is handed out: inputs are named by their role
      return {
        report: { ...report, base: 'base', donor: 'donor', ...(opts.out === undefined ? { out: 'transplanted', files: [] } : {}) },
        outDir: opts.out ?? null,
        recovered,
        buildSeconds,
      };
    } finally {
      await rm(workDir, { recursive: true, force: true });
      releaseTemporary(workDir);
    }
  });
}
