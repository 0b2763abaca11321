/**
 * Whole-model merge benchmark: `npx tsx bench/merge.ts [--layers N] [--vocab N] [--keep]`
 * (or `npm run bench:merge`).
 *
 * Writes two 1B-shaped bf16 checkpoints (Llama 3.2 1B layout: hidden 2048, intermediate 8192,
 * 32 query / 8 key-value heads, 16 layers by default; a small vocabulary to save time) into
 * os.tmpdir(), then merges them with TIES (base + one fine-tune, density 0.5) and compares the time
 * with the I/O floors measured in the same run, each reading both inputs and writing one output
 * of the same size: the files' bytes read into one reused buffer and written back (no decoding:
 * the disk and page cache alone); decoded to f32 by checkpoint.readInto (our JavaScript decoder,
 * about a third of the byte read's speed) and written as bf16, one tensor ahead; and the same
 * with the blocking SIMD reader the merge workers use. The merge itself reads and decodes in its
 * worker threads. Each measurement runs in a child process, so its peak RSS is its own. Goal:
 * merge ÷ decoding I/O ≤ 1.5, peak RSS a few tensors. `--layers 1 --vocab 256` for a quick check.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { RawTensorReader } from '../src/io/raw-read.js';
import { createSafetensorsSink } from '../src/io/safetensors.js';
import { mergeModels } from '../src/merge/index.js';
import { prefetch } from '../src/pipeline/prefetch.js';
import { plainRead, safetensorsFiles } from './plain-read.js';
import { HIDDEN, INTERMEDIATE, modelTensors } from './model-1b.js';

const ROUNDS = 3;

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** Uniform noise from a 32-bit xorshift: the bench needs volume, not Gaussian quality. */
function fillNoise(out: Float32Array, state: { s: number }, scale: number, add?: Float32Array): void {
  let s = state.s;
  for (let i = 0; i < out.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    const u = ((s >>> 0) / 4294967296 - 0.5) * scale;
    out[i] = add ? add[i] + u : u;
  }
  state.s = s;
}

/** The base and a fine-tune (base + small noise), both bf16, sharded like a Hub checkpoint. */
async function generate(dir: string, layers: number, vocab: number): Promise<void> {
  const plan = modelTensors(layers, vocab).map((t) => ({ ...t, dtype: 'BF16' as const }));
  const sinks = await Promise.all(['base', 'tuned'].map(async (m) => {
    const d = join(dir, m);
    await mkdir(d);
    await writeFile(join(d, 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: HIDDEN, intermediate_size: INTERMEDIATE, num_hidden_layers: layers, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: vocab }));
    return createSafetensorsSink(d, { plan, maxShardBytes: 5e9 });
  }));
  const state = { s: 0x9e3779b9 };
  for (const t of plan) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const base = new Float32Array(n);
    fillNoise(base, state, 0.1);
    const tuned = new Float32Array(n);
    fillNoise(tuned, state, 0.002, base);
    await Promise.all([sinks[0].add(t.name, t.shape, base), sinks[1].add(t.name, t.shape, tuned)]);
  }
  await Promise.all(sinks.map((s) => s.finish()));
}

/**
 * The I/O floor: read both inputs to f32 and write one output, pipelined like the merge. `simd`:
 * read with the blocking reader and bf16 SIMD kernels the merge workers use (faster than
 * readInto's JS decoding, so a lower floor), else with checkpoint.readInto.
 */
async function ioBaseline(dir: string, out: string, simd: boolean): Promise<void> {
  const [a, b] = await Promise.all([openCheckpoint(join(dir, 'base')), openCheckpoint(join(dir, 'tuned'))]);
  const tensors = a.list();
  await mkdir(out);
  const sink = await createSafetensorsSink(out, { plan: tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: 'BF16' as const })), maxShardBytes: 5e9 });
  // recycled buffers, as the merge does, so the floor is not inflated by fresh-memory page faults
  const free = new Map<number, Float32Array[]>();
  const take = (n: number) => free.get(n)?.pop() ?? new Float32Array(n);
  const give = (x: Float32Array) => free.set(x.length, [...(free.get(x.length) ?? []), x]);
  const reader = new RawTensorReader();
  const load = async (t: (typeof tensors)[number]) => {
    const n = t.shape.reduce((x, y) => x * y, 1);
    if (simd) return [reader.readF32(a.locate(t.name), take(n)), reader.readF32(b.locate(t.name), take(n))];
    return Promise.all([a.readInto(t.name, take(n)), b.readInto(t.name, take(n))]);
  };
  let writing: Promise<void> = Promise.resolve();
  let written: Float32Array[] = [];
  for await (const { item, value } of prefetch(tensors, load)) {
    await writing;
    written.forEach(give);
    writing = sink.add(item.name, item.shape, value[0]);
    written = value;
  }
  await writing;
  await sink.finish();
  reader.close();
  await Promise.all([a.close(), b.close()]);
}

/** The byte floor: both inputs' files read into one reused buffer, the base's bytes written to one output file. */
async function byteBaseline(dir: string, out: string): Promise<void> {
  await mkdir(out);
  const base = await safetensorsFiles([join(dir, 'base')]);
  const sink = await open(join(out, 'copy.safetensors'), 'w');
  try {
    await plainRead([...base, ...(await safetensorsFiles([join(dir, 'tuned')]))], async (index, chunk) => {
      if (index < base.length) await sink.write(chunk);
    });
  } finally {
    await sink.close();
  }
}

async function tiesMerge(dir: string, out: string): Promise<void> {
  await mergeModels({ config: { merge_method: 'ties', base_model: join(dir, 'base'), models: [{ model: join(dir, 'tuned'), parameters: { weight: 1, density: 0.5 } }], dtype: 'bfloat16' }, out });
}

/** Child mode: run one measurement and print {seconds, maxRssBytes}. */
async function child(kind: string, dir: string, out: string): Promise<void> {
  const t0 = performance.now();
  if (kind === 'merge') await tiesMerge(dir, out);
  else if (kind === 'bytes') await byteBaseline(dir, out);
  else await ioBaseline(dir, out, kind === 'io-simd');
  const seconds = (performance.now() - t0) / 1000;
  const { userCPUTime, systemCPUTime, maxRSS } = process.resourceUsage();
  process.stdout.write(JSON.stringify({ seconds, cpuSeconds: (userCPUTime + systemCPUTime) / 1e6, maxRssBytes: maxRSS * 1024 }) + '\n');
}

interface Measurement {
  seconds: number;
  /** CPU time of the whole child process (including module loading): less sensitive to other load than wall time */
  cpuSeconds: number;
  maxRssBytes: number;
}

type Kind = 'bytes' | 'io' | 'io-simd' | 'merge';

function measure(kind: Kind, dir: string, out: string): Measurement {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', kind, dir, out], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`bench/merge.ts: the ${kind} run failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() as string);
}

async function main(): Promise<void> {
  const ci = process.argv.indexOf('--child');
  if (ci >= 0) return child(process.argv[ci + 1], process.argv[ci + 2], process.argv[ci + 3]);
  const layers = flag('--layers', 16);
  const vocab = flag('--vocab', 8192);
  const dir = await mkdtemp(join(tmpdir(), 'loraforge-bench-merge-'));
  try {
    const params = modelTensors(layers, vocab).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
    console.log(`merge bench: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, Node ${process.version}`);
    console.log(`two bf16 checkpoints: ${layers} layers, hidden ${HIDDEN}, intermediate ${INTERMEDIATE}, vocab ${vocab}: ${(params / 1e9).toFixed(2)}B parameters, ${((params * 2) / 1e9).toFixed(2)} GB each`);
    const t = performance.now();
    await generate(dir, layers, vocab);
    console.log(`generated in ${((performance.now() - t) / 1000).toFixed(1)} s (in ${dir})\n`);
    const none: Measurement = { seconds: Infinity, cpuSeconds: Infinity, maxRssBytes: 0 };
    const best: Record<Kind, Measurement> = { bytes: none, io: none, 'io-simd': none, merge: none };
    for (let round = 0; round < ROUNDS; round++) {
      for (const kind of ['bytes', 'io', 'io-simd', 'merge'] as const) {
        const out = join(dir, `out-${kind}-${round}`);
        const r = measure(kind, dir, out);
        await rm(out, { recursive: true, force: true });
        console.log(`  round ${round + 1} ${kind.padEnd(7)} ${r.seconds.toFixed(2)} s (CPU ${r.cpuSeconds.toFixed(2)} s), peak RSS ${(r.maxRssBytes / 1e6).toFixed(0)} MB`);
        if (r.seconds < best[kind].seconds) best[kind] = r;
      }
    }
    const gbs = (params * 2 * 3) / 1e9 / best.merge.seconds;
    const floors: Array<[string, Measurement]> = [
      ['plain bytes (one reused buffer, no decoding)', best.bytes],
      ['decoding read (checkpoint.readInto, JS bf16 → f32)', best.io],
      ['SIMD reader (the merge workers\' decoder)', best['io-simd']],
    ];
    console.log(`\nI/O floors (read 2 inputs + write 1 output):`);
    for (const [label, m] of floors) console.log(`  ${label.padEnd(52)} ${m.seconds.toFixed(2)} s (${((params * 2 * 3) / 1e9 / m.seconds).toFixed(2)} GB/s), peak RSS ${(m.maxRssBytes / 1e6).toFixed(0)} MB`);
    console.log(`ties merge: ${best.merge.seconds.toFixed(2)} s, peak RSS ${(best.merge.maxRssBytes / 1e6).toFixed(0)} MB (${gbs.toFixed(2)} GB/s of bf16 in+out); largest tensor ${((HIDDEN * INTERMEDIATE * 4) / 1e6).toFixed(0)} MB as f32`);
    for (const [label, m] of floors) {
      console.log(`  merge ÷ ${label}: ${(best.merge.seconds / m.seconds).toFixed(2)} wall, ${(best.merge.cpuSeconds / m.cpuSeconds).toFixed(2)} CPU`);
    }
    console.log(`  (goal: merge ÷ decoding read ≤ 1.5)`);
  } finally {
    if (!process.argv.includes('--keep')) await rm(dir, { recursive: true, force: true });
  }
}

await main();
