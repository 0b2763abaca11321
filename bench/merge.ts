/**
 * Whole-model merge benchmark: `npx tsx bench/merge.ts [--layers N] [--vocab N] [--models 2|3]
 * [--methods ties,linear,…] [--merges 1,2] [--rounds N] [--keep]` (or `npm run bench:merge`).
 *
 * Writes `--models` 1B-shaped bf16 checkpoints (Llama 3.2 1B layout: hidden 2048, intermediate 8192,
 * 32 query / 8 key-value heads, 16 layers by default; a small vocabulary to save time; a base and
 * fine-tunes of it) into os.tmpdir(), then merges them with each of `--methods` (default ties; every
 * per-model weight 1/n, density 0.5, t 0.5), each with `--merges` merges of the largest tensor in
 * flight (maxMemory; default 1; the executor's own default is 2 when they fit in a quarter of the available memory; `--merges 1,2` shows the memory/speed
 * trade-off in one run), and compares the time with the I/O floors measured in
 * the same run, each reading every input and writing one output
 * of the same size: the files' bytes read into one reused buffer and written back (no decoding:
 * the disk and page cache alone); decoded to f32 by checkpoint.readInto (our JavaScript decoder,
 * about a third of the byte read's speed) and written as bf16, one tensor ahead; and the same
 * with the blocking SIMD reader the merge workers use. The merge itself reads and decodes in its
 * worker threads. Each measurement runs in a child process, so its peak RSS is its own; each
 * method's peak is also given in copies of the largest tensor as f32 (the executor's budget is
 * counted in those: merge/executor.ts). Goal: merge ÷ decoding I/O ≤ 1.5, peak RSS a few tensors
 * and the same at 2 and 8 layers. `--layers 1 --vocab 256` for a quick check.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { RawTensorReader } from '../src/io/raw-read.js';
import { createSafetensorsSink } from '../src/io/safetensors.js';
import { MERGE_METHODS, METHOD_NAMES, mergeModels, type MethodName } from '../src/merge/index.js';
import { scratchArrays } from '../src/merge/run-method.js';
import { prefetch } from '../src/pipeline/prefetch.js';
import { plainRead, safetensorsFiles } from './plain-read.js';
import { HIDDEN, INTERMEDIATE, modelTensors } from './model-1b.js';


function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** The models' folder names: the base, then its fine-tunes. */
const modelNames = (count: number): string[] => ['base', ...Array.from({ length: count - 1 }, (_, i) => `tuned${i + 1}`)];

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

/** The base and `count` − 1 fine-tunes (base + small noise), all bf16, sharded like a Hub checkpoint. */
async function generate(dir: string, layers: number, vocab: number, count: number): Promise<void> {
  const plan = modelTensors(layers, vocab).map((t) => ({ ...t, dtype: 'BF16' as const }));
  const sinks = await Promise.all(modelNames(count).map(async (m) => {
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
    await sinks[0].add(t.name, t.shape, base);
    const tuned = new Float32Array(n);
    for (const sink of sinks.slice(1)) {
      fillNoise(tuned, state, 0.002, base);
      await sink.add(t.name, t.shape, tuned);
    }
  }
  await Promise.all(sinks.map((s) => s.finish()));
}

/**
 * The I/O floor: read every input to f32 and write one output, pipelined like the merge. `simd`:
 * read with the blocking reader and bf16 SIMD kernels the merge workers use (faster than
 * readInto's JS decoding, so a lower floor), else with checkpoint.readInto.
 */
async function ioBaseline(dir: string, out: string, simd: boolean, count: number): Promise<void> {
  const models = await Promise.all(modelNames(count).map((m) => openCheckpoint(join(dir, m))));
  const tensors = models[0].list();
  await mkdir(out);
  const sink = await createSafetensorsSink(out, { plan: tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: 'BF16' as const })), maxShardBytes: 5e9 });
  // recycled buffers, as the merge does, so the floor is not inflated by fresh-memory page faults
  const free = new Map<number, Float32Array[]>();
  const take = (n: number) => free.get(n)?.pop() ?? new Float32Array(n);
  const give = (x: Float32Array) => free.set(x.length, [...(free.get(x.length) ?? []), x]);
  const reader = new RawTensorReader();
  const load = async (t: (typeof tensors)[number]) => {
    const n = t.shape.reduce((x, y) => x * y, 1);
    if (simd) return models.map((m) => reader.readF32(m.locate(t.name), take(n)));
    return Promise.all(models.map((m) => m.readInto(t.name, take(n))));
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
  await Promise.all(models.map((m) => m.close()));
}

/** The byte floor: every input's files read into one reused buffer, the base's bytes written to one output file. */
async function byteBaseline(dir: string, out: string, count: number): Promise<void> {
  await mkdir(out);
  const base = await safetensorsFiles([join(dir, 'base')]);
  const sink = await open(join(out, 'copy.safetensors'), 'w');
  try {
    await plainRead([...base, ...(await safetensorsFiles(modelNames(count).slice(1).map((m) => join(dir, m))))], async (index, chunk) => {
      if (index < base.length) await sink.write(chunk);
    });
  } finally {
    await sink.close();
  }
}

/**
 * A config of `method` over the generated models, or why the method cannot take `count` models.
 * Listed models: the fine-tunes (base_model is added by the methods that need it), plus the base
 * where the method does not add it; every required parameter gets a middling value.
 */
function methodConfig(method: MethodName, dir: string, count: number): Record<string, unknown> | string {
  const def = MERGE_METHODS[method];
  if (def.base === 'unused') return 'it merges nothing (one model per tensor)';
  const tuned = modelNames(count).slice(1);
  const listed = def.base === 'optional' ? ['base', ...tuned] : def.inputs === 2 ? tuned.slice(0, 1) : tuned;
  if (def.models && (listed.length < def.models.min || listed.length > (def.models.max ?? Infinity))) return `it takes ${def.models.min}${def.models.max === def.models.min ? '' : '+'} models besides the base (--models ${def.models.min + 1})`;
  const value = (name: string) => (name === 'weight' ? 1 / listed.length : 0.5);
  const parameters = Object.fromEntries(def.params.filter((p) => p.required).map((p) => [p.name, value(p.name)]));
  const models = listed.map((m) => ({ model: join(dir, m), parameters: Object.fromEntries(def.tensorParams.filter((p) => p.required || p.name === 'density').map((p) => [p.name, value(p.name)])) }));
  return { merge_method: method, base_model: join(dir, 'base'), models, parameters, dtype: 'bfloat16' };
}

/** The merge's maxMemory for `merges` merges of the largest tensor in flight plus the result being written (merge/executor.ts mergeBudget). */
function maxMemory(method: MethodName, count: number, merges: number): number {
  const def = MERGE_METHODS[method];
  const largest = Math.max(...modelTensors(1, flag('--vocab', 8192)).map((t) => t.shape.reduce((a, b) => a * b, 1))) * 4;
  const inputs = def.inputs === 2 ? 2 : count;
  return largest * (merges * (inputs + scratchArrays(def)) + 1);
}

/** Child mode: run one measurement and print {seconds, maxRssBytes}. */
async function child(kind: string, dir: string, out: string, count: number): Promise<void> {
  const t0 = performance.now();
  if (kind.startsWith('merge:')) {
    const [method, merges] = kind.slice(6).split('@');
    await mergeModels({ config: methodConfig(method as MethodName, dir, count) as Record<string, unknown>, out, maxMemory: maxMemory(method as MethodName, count, Number(merges)) });
  }
  else if (kind === 'bytes') await byteBaseline(dir, out, count);
  else await ioBaseline(dir, out, kind === 'io-simd', count);
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

type Floor = 'bytes' | 'io' | 'io-simd';

function measure(kind: string, dir: string, out: string, count: number): Measurement {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', kind, dir, out, String(count)], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`bench/merge.ts: the ${kind} run failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() as string);
}

async function main(): Promise<void> {
  const ci = process.argv.indexOf('--child');
  if (ci >= 0) return child(process.argv[ci + 1], process.argv[ci + 2], process.argv[ci + 3], Number(process.argv[ci + 4]));
  const layers = flag('--layers', 16);
  const vocab = flag('--vocab', 8192);
  const count = flag('--models', 2);
  const rounds = flag('--rounds', 3);
  const mi = process.argv.indexOf('--methods');
  const methods = (mi >= 0 ? process.argv[mi + 1].split(',') : ['ties']) as MethodName[];
  const gi = process.argv.indexOf('--merges');
  const merges = gi >= 0 ? process.argv[gi + 1].split(',').map(Number) : [1];
  const unknown = methods.filter((m) => !(METHOD_NAMES as readonly string[]).includes(m));
  if (unknown.length > 0 || !(count >= 2)) throw new Error(`bench/merge.ts: --methods takes ${METHOD_NAMES.join(',')}; --models 2 or more`);
  const dir = await mkdtemp(join(tmpdir(), 'loraforge-bench-merge-'));
  try {
    const params = modelTensors(layers, vocab).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
    const largest = Math.max(...modelTensors(layers, vocab).map((t) => t.shape.reduce((a, b) => a * b, 1))) * 4;
    // bf16 bytes moved: every input read, one output written
    const moved = params * 2 * (count + 1);
    console.log(`merge bench: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, Node ${process.version}`);
    console.log(`${count} bf16 checkpoints: ${layers} layers, hidden ${HIDDEN}, intermediate ${INTERMEDIATE}, vocab ${vocab}: ${(params / 1e9).toFixed(2)}B parameters, ${((params * 2) / 1e9).toFixed(2)} GB each`);
    const t = performance.now();
    await generate(dir, layers, vocab, count);
    console.log(`generated in ${((performance.now() - t) / 1000).toFixed(1)} s (in ${dir})\n`);
    const none: Measurement = { seconds: Infinity, cpuSeconds: Infinity, maxRssBytes: 0 };
    const runs = methods.flatMap((m) => merges.map((g) => ({ method: m, label: merges.length > 1 ? `${m} ×${g}` : m, kind: `merge:${m}@${g}` })));
    const kinds = [...(['bytes', 'io', 'io-simd'] as const), ...runs.map((r) => r.kind)];
    const best: Record<string, Measurement> = Object.fromEntries(kinds.map((k) => [k, none]));
    const skipped = new Map<string, string>(runs.flatMap(({ method, kind }): Array<[string, string]> => {
      const c = methodConfig(method, dir, count);
      return typeof c === 'string' ? [[kind, c]] : [];
    }));
    for (let round = 0; round < rounds; round++) {
      for (const kind of kinds) {
        if (skipped.has(kind)) continue;
        const out = join(dir, `out-${round}`);
        const r = measure(kind, dir, out, count);
        await rm(out, { recursive: true, force: true });
        console.log(`  round ${round + 1} ${kind.padEnd(20)} ${r.seconds.toFixed(2)} s (CPU ${r.cpuSeconds.toFixed(2)} s), peak RSS ${(r.maxRssBytes / 1e6).toFixed(0)} MB`);
        if (r.seconds < best[kind].seconds) best[kind] = r;
      }
    }
    const floors: Array<[Floor, string]> = [
      ['bytes', 'plain bytes (one reused buffer, no decoding)'],
      ['io', 'decoding read (checkpoint.readInto, JS bf16 → f32)'],
      ['io-simd', "SIMD reader (the merge workers' decoder)"],
    ];
    const rss = (m: Measurement) => `peak RSS ${(m.maxRssBytes / 1e6).toFixed(0)} MB = ${(m.maxRssBytes / largest).toFixed(1)} × largest`;
    console.log(`\nI/O floors (read ${count} inputs + write 1 output); largest tensor ${(largest / 1e6).toFixed(0)} MB as f32:`);
    for (const [kind, label] of floors) console.log(`  ${label.padEnd(52)} ${best[kind].seconds.toFixed(2)} s (${(moved / 1e9 / best[kind].seconds).toFixed(2)} GB/s), ${rss(best[kind])}`);
    console.log(`\nmethod               s       GB/s   ÷ bytes  ÷ decoding  ÷ SIMD   peak RSS`);
    for (const { label: m, kind } of runs) {
      const why = skipped.get(kind);
      if (why) {
        console.log(`  ${m.padEnd(18)} skipped: ${why}`);
        continue;
      }
      const r = best[kind];
      const ratio = (f: Floor) => (r.seconds / best[f].seconds).toFixed(2).padStart(8);
      console.log(`  ${m.padEnd(18)} ${r.seconds.toFixed(2).padStart(6)}  ${(moved / 1e9 / r.seconds).toFixed(2).padStart(5)}  ${ratio('bytes')}  ${ratio('io')}  ${ratio('io-simd')}   ${rss(r)}`);
    }
    console.log(`  (goal: merge ÷ decoding read ≤ 1.5; peak RSS a few × largest, the same at any layer count)`);
  } finally {
    if (!process.argv.includes('--keep')) await rm(dir, { recursive: true, force: true });
  }
}

await main();
