/**
 * Extraction benchmark: `npx tsx bench/extract.ts [--layers N] [--threads N] [--keep]` (or `npm run bench:extract`;
 * `--layers 1` for a quick check).
 *
 * Generates a pair with Llama-3.2-1B's layer shapes (hidden 2048, intermediate 8192, GQA 32/8
 * heads so k/v have 512 rows, bf16; a small vocabulary so the embeddings do not dominate): model
 * A is a random base, model B = A + a planted delta on every q/k/v/o/gate/up/down with singular
 * values 0.85^i (i < 32), so the best rank-16 error is known and not zero. Then, in one run:
 *   - two read floors, each in a fresh process like the extraction (the generator's big heap
 *     slows reads by a third), cold (the files evicted from the page cache first, with
 *     `dd iflag=nocache`, which needs no privileges) and warm (from the page cache): a plain read
 *     of the files' bytes into one reused buffer (no decoding), and the read a plain reader does,
 *     decoded to f32 by our JavaScript decoder (about a third of the byte read's speed);
 *   - for comparison, the time the extraction's own reader takes to form every Δ (warm, one thread);
 *   - the time of `extractLora` at rank 16 in a child process, cold and warm, with its peak RSS;
 *   - extraction ÷ each read floor, cold ÷ cold and warm ÷ warm (goal ≤ 1.5 × the decoding read);
 *   - for layer 0's seven tensors, our error ÷ the optimal rank-16 error of the stored Δ (from a
 *     much more expensive randomized SVD: 64 extra directions, 8 power iterations) and the error
 *     the planted spectrum alone gives.
 * The data lives in os.tmpdir() and is deleted at the end (--keep keeps it).
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { extractLora, type ExtractReport } from '../src/extract/index.js';
import { openCheckpoint, type Checkpoint } from '../src/io/checkpoint.js';
import { createSafetensorsSink } from '../src/io/safetensors.js';
import type { LinalgBackend } from '../src/linalg/backend.js';
import { openPeftAdapter, type PeftAdapter } from '../src/lora/adapter.js';
import { product as lowRankProduct } from '../src/lowrank/low-rank.js';
import { getBackend } from '../src/linalg/index.js';
import { orthonormalizeOnBackend } from '../src/linalg/qr.js';
import { createRng } from '../src/linalg/random.js';
import { randomizedSvd } from '../src/linalg/rsvd.js';
import { decompose } from '../src/lowrank/decompose.js';
import { arraysOf, PairReader } from '../src/delta/load-pair.js';
import { BufferPool } from '../src/pipeline/buffer-pool.js';
import { plainRead, safetensorsFiles } from './plain-read.js';
import type { Matrix } from '../src/tensor/matrix.js';

const SHAPE = { hidden: 2048, intermediate: 8192, heads: 32, kvHeads: 8, vocab: 2048 };
const RANK = 16;
const PLANTED_RANK = 32;
const DECAY = 0.85;
const BASE_STD = 0.02;
/** RMS of the planted delta's entries relative to the base's. */
const DELTA_TO_BASE = 0.25;
const SHARD_BYTES = 1_000_000_000;

const MODULES: Array<[string, (s: typeof SHAPE) => [number, number]]> = [
  ['self_attn.q_proj', (s) => [s.hidden, s.hidden]],
  ['self_attn.k_proj', (s) => [(s.hidden / s.heads) * s.kvHeads, s.hidden]],
  ['self_attn.v_proj', (s) => [(s.hidden / s.heads) * s.kvHeads, s.hidden]],
  ['self_attn.o_proj', (s) => [s.hidden, s.hidden]],
  ['mlp.gate_proj', (s) => [s.intermediate, s.hidden]],
  ['mlp.up_proj', (s) => [s.intermediate, s.hidden]],
  ['mlp.down_proj', (s) => [s.hidden, s.intermediate]],
];

const spectrum = Array.from({ length: PLANTED_RANK }, (_, i) => DECAY ** i);
/** Best rank-16 relative error of the planted delta alone (before bf16 rounding). */
const plantedOptimum = Math.sqrt(spectrum.slice(RANK).reduce((x, y) => x + y * y, 0) / spectrum.reduce((x, y) => x + y * y, 0));

function tensorList(layers: number): Array<{ name: string; shape: number[]; planted: boolean }> {
  const list = [{ name: 'model.embed_tokens.weight', shape: [SHAPE.vocab, SHAPE.hidden], planted: false }];
  for (let l = 0; l < layers; l++) {
    list.push({ name: `model.layers.${l}.input_layernorm.weight`, shape: [SHAPE.hidden], planted: false });
    for (const [module, shape] of MODULES) list.push({ name: `model.layers.${l}.${module}.weight`, shape: shape(SHAPE), planted: true });
    list.push({ name: `model.layers.${l}.post_attention_layernorm.weight`, shape: [SHAPE.hidden], planted: false });
  }
  list.push({ name: 'model.norm.weight', shape: [SHAPE.hidden], planted: false }, { name: 'lm_head.weight', shape: [SHAPE.vocab, SHAPE.hidden], planted: false });
  return list;
}

/** Uniform noise with standard deviation `std` from xorshift32: cheap enough for two billion values. */
function fillNoise(out: Float32Array, seed: number, std: number): void {
  let x = seed >>> 0 || 1;
  const scale = (std * Math.sqrt(3)) / 2 ** 31;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x | 0) * scale;
  }
}

async function orthonormalGaussian(backend: LinalgBackend, rows: number, cols: number, seed: number): Promise<Matrix> {
  const data = new Float32Array(rows * cols);
  createRng(seed).fillNormal(data);
  return orthonormalizeOnBackend(backend, { rows, cols, data });
}

/** U·diag(s)·Vᵀ scaled so its entries' RMS is DELTA_TO_BASE·BASE_STD. */
async function plantedDelta(backend: LinalgBackend, rows: number, cols: number, seed: number): Promise<Float32Array> {
  const U = await orthonormalGaussian(backend, rows, PLANTED_RANK, seed);
  const V = await orthonormalGaussian(backend, cols, PLANTED_RANK, seed + 1);
  const norm = Math.hypot(...spectrum);
  const scale = (DELTA_TO_BASE * BASE_STD * Math.sqrt(rows * cols)) / norm;
  for (let i = 0; i < rows; i++) for (let c = 0; c < PLANTED_RANK; c++) U.data[i * PLANTED_RANK + c] *= spectrum[c] * scale;
  return (await backend.gemm(U, V, { transB: true })).data;
}

async function generate(dir: string, layers: number, backend: LinalgBackend): Promise<{ a: string; b: string }> {
  const paths = { a: join(dir, 'model-a'), b: join(dir, 'model-b') };
  await Promise.all([mkdir(paths.a), mkdir(paths.b)]);
  const sinks = await Promise.all([paths.a, paths.b].map((p) => createSafetensorsSink(p, { dtype: 'BF16', maxShardBytes: SHARD_BYTES })));
  let seed = 1;
  for (const t of tensorList(layers)) {
    const count = t.shape.reduce((x, y) => x * y, 1);
    const base = new Float32Array(count);
    if (t.name.endsWith('norm.weight')) base.fill(1);
    else fillNoise(base, seed++, BASE_STD);
    await sinks[0].add(t.name, t.shape, base);
    if (t.planted) {
      const delta = await plantedDelta(backend, t.shape[0], t.shape[1], seed++);
      for (let i = 0; i < count; i++) delta[i] += base[i];
      await sinks[1].add(t.name, t.shape, delta);
    } else {
      await sinks[1].add(t.name, t.shape, base);
    }
  }
  await Promise.all(sinks.map((s) => s.finish()));
  const config = JSON.stringify({
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: SHAPE.hidden,
    intermediate_size: SHAPE.intermediate,
    num_hidden_layers: layers,
    num_attention_heads: SHAPE.heads,
    num_key_value_heads: SHAPE.kvHeads,
    vocab_size: SHAPE.vocab,
    tie_word_embeddings: false,
  });
  await Promise.all([writeFile(join(paths.a, 'config.json'), config), writeFile(join(paths.b, 'config.json'), config)]);
  return paths;
}

/**
 * Drops the checkpoints' files from the page cache (posix_fadvise DONTNEED through GNU dd), so
 * the next read comes from disk. False where dd cannot do it.
 */
async function evict(dirs: string[]): Promise<boolean> {
  for (const dir of dirs) {
    for (const f of (await readdir(dir)).filter((n) => n.endsWith('.safetensors'))) {
      const r = spawnSync('dd', [`if=${join(dir, f)}`, 'iflag=nocache', 'count=0', 'status=none']);
      if (r.status !== 0) return false;
    }
  }
  return true;
}

/** Reads every tensor of both checkpoints as f32, pair by pair, reusing buffers: what extraction reads. */
async function readBoth(a: Checkpoint, b: Checkpoint): Promise<{ seconds: number; bytes: number }> {
  const t0 = performance.now();
  const buffers = new Map<number, Float32Array[]>();
  const buffer = (n: number, k: number) => {
    const list = buffers.get(n) ?? [new Float32Array(n), new Float32Array(n)];
    buffers.set(n, list);
    return list[k];
  };
  let bytes = 0;
  for (const t of a.list()) {
    const n = t.shape.reduce((x, y) => x * y, 1);
    await Promise.all([a.readInto(t.name, buffer(n, 0)), b.readInto(t.name, buffer(n, 1))]);
    bytes += t.bytes + b.info(t.name).bytes;
  }
  return { seconds: (performance.now() - t0) / 1000, bytes };
}

/** Δ of every tensor pair the way the extraction's reader thread forms it (bf16 SIMD), on one thread. */
function readDeltas(a: Checkpoint, b: Checkpoint): { seconds: number; bytes: number } {
  const reader = new PairReader(new BufferPool());
  const t0 = performance.now();
  let bytes = 0;
  for (const t of a.list()) {
    const pair = reader.load({ a: a.locate(t.name), b: b.locate(t.name), keepB: false });
    for (const x of arraysOf(pair)) reader.pool.release(x);
    bytes += t.bytes + b.info(t.name).bytes;
  }
  reader.close();
  return { seconds: (performance.now() - t0) / 1000, bytes };
}

/**
 * For one tensor: the relative error of the best rank-16 approximation of the stored Δ (from a
 * high-accuracy randomized SVD) and that of the adapter's module, read back from its file; and
 * the time extraction's own decomposition of that Δ takes on its own (the GEMM-bound part).
 */
async function errorsOf(backend: LinalgBackend, a: Checkpoint, b: Checkpoint, adapter: PeftAdapter, name: string): Promise<{ optimum: number; ours: number; decomposeSeconds: number }> {
  const [wa, wb] = [await a.read(name), await b.read(name)];
  let total = 0;
  for (let i = 0; i < wa.length; i++) {
    wa[i] = wb[i] - wa[i];
    total += wa[i] * wa[i];
  }
  const [rows, cols] = a.info(name).shape;
  const delta = { rows, cols, data: wa };
  await decompose(backend, delta, total, { mode: 'rank', rank: RANK }, 1); // warm-up: first calls load kernels
  const t0 = performance.now();
  await decompose(backend, delta, total, { mode: 'rank', rank: RANK }, 1);
  const decomposeSeconds = (performance.now() - t0) / 1000;
  const svd = await randomizedSvd(backend, delta, { rank: RANK, oversample: 64, powerIters: 8, seed: 99 });
  const kept = [...svd.S].reduce((x, y) => x + y * y, 0);
  const module = name.slice(0, -'.weight'.length);
  const product = await lowRankProduct(backend, await adapter.load(module), adapter.module(module).scaling);
  let residual = 0;
  for (let i = 0; i < wa.length; i++) residual += (wa[i] - product.data[i]) ** 2;
  return { optimum: Math.sqrt((total - kept) / total), ours: Math.sqrt(residual / total), decomposeSeconds };
}

interface ChildResult {
  seconds: number;
  maxRssBytes: number;
  report: ExtractReport;
}

type ReadMode = 'bytes' | 'decode' | 'deltas';
const READ_FLAGS: Record<ReadMode, string> = { bytes: '--child-read-bytes', decode: '--child-read', deltas: '--child-read-deltas' };

/**
 * Reads both checkpoints in a fresh process, as fresh as the extraction's (the generator's heap
 * slows reads): the files' bytes only (`bytes`), decoded to f32 by a plain reader (`decode`), or
 * as Δ by the extraction's reader (`deltas`).
 */
function readInChild(a: string, b: string, mode: ReadMode): Promise<{ seconds: number; bytes: number }> {
  const tsx = import.meta.resolve('tsx');
  const self = fileURLToPath(import.meta.url);
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', tsx, self, READ_FLAGS[mode], a, b], (err, stdout, stderr) => {
      if (err) reject(new Error(`read child failed: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout) as { seconds: number; bytes: number });
    });
  });
}

/** Runs the extraction in a fresh process, so its peak RSS is its own and not the generator's. */
function extractInChild(a: string, b: string, out: string, threads: number | undefined): Promise<ChildResult> {
  const tsx = import.meta.resolve('tsx');
  const self = fileURLToPath(import.meta.url);
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', tsx, self, '--child', a, b, out, ...(threads ? ['--threads', String(threads)] : [])], { maxBuffer: 1 << 28 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`extraction child failed: ${stderr || err.message}`));
      else resolve(JSON.parse(stdout) as ChildResult);
    });
  });
}

async function child(a: string, b: string, out: string, threads: number | undefined): Promise<void> {
  await getBackend({ threads }); // load the native GEMM before the clock starts, as a long-running tool would have
  const t0 = performance.now();
  const report = await extractLora({ modelA: a, modelB: b, out, policy: { mode: 'rank', rank: RANK }, threads });
  const seconds = (performance.now() - t0) / 1000;
  const result: ChildResult = { seconds, maxRssBytes: process.resourceUsage().maxRSS * 1024, report };
  process.stdout.write(JSON.stringify(result));
}

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const layers = Number(flag('--layers') ?? 16);
  if (!Number.isInteger(layers) || layers < 1) throw new Error(`--layers must be a positive integer, got ${flag('--layers')}`);
  const keep = process.argv.includes('--keep');
  const threads = flag('--threads') === undefined ? undefined : Number(flag('--threads'));
  console.log(`extract bench: Llama-3.2-1B shapes, ${layers} layer(s), bf16, rank ${RANK}, all 7 module types`);
  console.log(`machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} threads, Node ${process.version}, load average ${loadavg()[0].toFixed(2)}\n`);
  const dir = await mkdtemp(join(tmpdir(), 'loraforge-bench-extract-'));
  try {
    const backend = await getBackend();
    const t0 = performance.now();
    const paths = await generate(dir, layers, backend);
    console.log(`generated A and B in ${((performance.now() - t0) / 1000).toFixed(1)} s (${dir})`);

    const models = [paths.a, paths.b];
    const cold = await evict(models);
    const coldBytes = await readInChild(paths.a, paths.b, 'bytes');
    const warmBytes = await readInChild(paths.a, paths.b, 'bytes');
    await evict(models);
    const coldRead = await readInChild(paths.a, paths.b, 'decode');
    const warmRead = await readInChild(paths.a, paths.b, 'decode');
    const speed = (r: { seconds: number; bytes: number }) => `${r.seconds.toFixed(2)} s  (${(r.bytes / 1e9 / r.seconds).toFixed(2)} GB/s)`;
    const first = cold ? 'cold (evicted first)' : 'first (could not evict)';
    console.log(`read both checkpoints (${(coldBytes.bytes / 1e9).toFixed(2)} GB of files, bf16), two floors:`);
    console.log(`  plain byte read (one reused buffer, no decoding):  ${first} ${speed(coldBytes)};  warm (page cache) ${speed(warmBytes)}`);
    console.log(`  decoding read (bf16 → f32, checkpoint.readInto):   ${first} ${speed(coldRead)};  warm (page cache) ${speed(warmRead)}`);
    const ownRead = await readInChild(paths.a, paths.b, 'deltas');
    console.log(`  warm, forming Δ with the extraction's own reader (bf16 SIMD, one thread): ${ownRead.seconds.toFixed(2)} s`);

    await evict(models);
    const coldRun = await extractInChild(paths.a, paths.b, join(dir, 'adapter-cold'), threads);
    const result = await extractInChild(paths.a, paths.b, join(dir, 'adapter'), threads);
    const r = result.report;
    const line = (label: string, run: ChildResult, bytes: number, decode: number) =>
      console.log(
        `  ${label}  ${run.seconds.toFixed(2)} s (computing ${run.report.totals.computeSeconds.toFixed(2)} s, waiting for reads ${run.report.totals.readWaitSeconds.toFixed(2)} s)  ` +
          `÷ byte read = ${(run.seconds / bytes).toFixed(2)}, ÷ decoding read = ${(run.seconds / decode).toFixed(2)}`,
      );
    console.log(`\nextraction (rank ${RANK}, ${r.totals.tensors} modules, ${r.backend}), goal ≤ 1.5 × the decoding read:`);
    line(cold ? 'cold' : 'first', coldRun, coldBytes.seconds, coldRead.seconds);
    line('warm', result, warmBytes.seconds, warmRead.seconds);
    console.log(`  peak RSS of the extraction process: ${(Math.max(result.maxRssBytes, coldRun.maxRssBytes) / 2 ** 20).toFixed(0)} MiB ` +
      `(largest tensor as f32: ${((SHAPE.hidden * SHAPE.intermediate * 4) / 2 ** 20).toFixed(0)} MiB)`);

    console.log(`\nerror on layer 0 (relative Frobenius, rank ${RANK}); the planted spectrum alone gives ${plantedOptimum.toFixed(5)}`);
    const rows = [['tensor', 'optimum (stored Δ)', 'ours (reported)', 'ours (adapter file, bf16)', 'ours ÷ optimum']];
    const adapter = await openPeftAdapter(join(dir, 'adapter'));
    const [a, b] = [await openCheckpoint(paths.a), await openCheckpoint(paths.b)];
    let decomposeSeconds = 0;
    for (const t of r.tensors.filter((x) => x.name.startsWith('model.layers.0.'))) {
      const { optimum, ours, decomposeSeconds: s } = await errorsOf(backend, a, b, adapter, t.name);
      decomposeSeconds += s;
      rows.push([t.name.slice('model.layers.0.'.length), optimum.toFixed(5), t.relError.toFixed(5), ours.toFixed(5), (ours / optimum).toFixed(4)]);
    }
    await adapter.close();
    const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
    for (const row of rows) console.log('  ' + row.map((cell, c) => cell.padEnd(widths[c])).join('  '));
    const floor = decomposeSeconds * layers;
    console.log(
      `\nthe decompositions alone (layer 0's seven, Δ in memory, nothing else running) × ${layers} layers: ${floor.toFixed(2)} s ` +
        `= ${(floor / warmRead.seconds).toFixed(2)} × the warm decoding read, ${(floor / warmBytes.seconds).toFixed(2)} × the warm byte read: the GEMM-bound floor under extraction`,
    );
    console.log(`\nload average now ${loadavg()[0].toFixed(2)} (other processes on the machine slow every timing above)`);
    await Promise.all([a.close(), b.close()]);
  } finally {
    if (keep) console.log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

const readMode = (Object.keys(READ_FLAGS) as ReadMode[]).find((m) => process.argv.includes(READ_FLAGS[m]));
if (readMode) {
  const i = process.argv.indexOf(READ_FLAGS[readMode]);
  const [pathA, pathB] = [process.argv[i + 1], process.argv[i + 2]];
  if (readMode === 'bytes') process.stdout.write(JSON.stringify(await plainRead(await safetensorsFiles([pathA, pathB]))));
  else {
    const [a, b] = [await openCheckpoint(pathA), await openCheckpoint(pathB)];
    process.stdout.write(JSON.stringify(readMode === 'decode' ? await readBoth(a, b) : readDeltas(a, b)));
    await Promise.all([a.close(), b.close()]);
  }
} else if (process.argv.includes('--child')) {
  const i = process.argv.indexOf('--child');
  const threads = flag('--threads');
  await child(process.argv[i + 1], process.argv[i + 2], process.argv[i + 3], threads === undefined ? undefined : Number(threads));
} else {
  await main();
}
