/**
 * Eval / compare benchmark (issue #16): `npx tsx bench/eval.ts [--layers N] [--small N] [--vocab N]
 * [--eval-only] [--keep]` (or `npm run bench:eval`).
 *
 * Writes a 1B-shaped bf16 checkpoint (Llama 3.2 1B layout: hidden 2048, intermediate 8192, 32
 * query / 8 key-value heads, 16 layers by default; vocabulary 32000 instead of 128256, to keep the
 * GGUF small and to reuse tinyfam llama-base's tokenizer) and a 4-layer variant into os.tmpdir(),
 * weights uniform noise with σ 0.02, norms 1. Then, each in its own child process so peak RSS is
 * its own:
 * - `evaluate` on 4 windows of 512 tokens (+ BOS) of tinyfam's eval-a.txt, on both depths:
 *   tokens/s, the share of the time spent inside the backend's GEMM, peak RSS;
 * - llama.cpp (node-llama-cpp from .llama/, batch 512, 2 threads) processing the same windows on
 *   the f32 GGUF of the same model (made by our to-gguf), after one warm-up window: tokens/s;
 * - compare's greedy decoding on tinyfam llama-base: generated tokens/s.
 * Goals: ours ÷ llama.cpp ≥ 0.8, GEMM share ≥ 70 %, peak RSS ≤ 1.5 GB and independent of depth.
 * `--layers 2 --small 1` for a quick check of the code. `--vocab 128256` gives Llama 3's vocabulary
 * (the tokenizer's 32000 ids stay valid: the extra rows are never looked up, as padding rows),
 * where the embedding table and lm_head are 1 GB each in f32; `--eval-only` measures `evaluate`
 * alone (no GGUF, llama.cpp or generation).
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { compareModels } from '../src/compare/compare.js';
import { evaluate } from '../src/eval/eval.js';
import { textStream, windows } from '../src/scoring/windows.js';
import type { LinalgBackend } from '../src/linalg/backend.js';
import { getBackend } from '../src/linalg/index.js';
import { convertToGguf } from '../src/to-gguf/to-gguf.js';
import { loadTokenizer } from '../src/tokenizer/tokenizer.js';
import { HEADS, HIDDEN, INTERMEDIATE, KV_HEADS, modelTensors, write1BModel } from './model-1b.js';

const VOCAB = flag('--vocab', 32000);
const CTX = 512;
const WINDOWS = 4;
const THREADS = 2;
const GEN_TOKENS = 64;

const REPO = fileURLToPath(new URL('..', import.meta.url));
const TINYFAM = join(REPO, '..', 'shared', 'testdata', 'tinyfam');
const TEXT = join(TINYFAM, 'eval-a.txt');
const LLAMA = join(REPO, '.llama', 'node_modules', 'node-llama-cpp', 'dist', 'index.js');

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** The backend with the time spent inside its GEMM counted (eval awaits each product, so intervals never overlap). */
function timedBackend(inner: LinalgBackend): LinalgBackend & { seconds: number; calls: number } {
  const timed = {
    name: inner.name,
    seconds: 0,
    calls: 0,
    async gemm(...args: Parameters<LinalgBackend['gemm']>) {
      const t0 = performance.now();
      const r = await inner.gemm(...args);
      timed.seconds += (performance.now() - t0) / 1000;
      timed.calls++;
      return r;
    },
  };
  return timed;
}

/** The windows `evaluate` cuts from the text, as token ids (for llama.cpp). */
async function evalWindows(model: string): Promise<number[][]> {
  const tok = await loadTokenizer(model);
  const stream = textStream(tok, await readFile(TEXT, 'utf8'), true, WINDOWS * CTX);
  return windows(stream, CTX, CTX, tok.addBos ? tok.bosId : undefined).map((w) => w.input);
}

// --- child processes: each prints one JSON line --------------------------------------------------

async function childEval(model: string): Promise<object> {
  const backend = timedBackend(await getBackend({ threads: THREADS }));
  const t0 = performance.now();
  const r = await evaluate({ model, text: TEXT, lines: true, ctx: CTX, maxTokens: WINDOWS * CTX, backend });
  const seconds = (performance.now() - t0) / 1000;
  const tokens = (await evalWindows(model)).reduce((a, w) => a + w.length, 0);
  return { seconds, tokens, windows: r.windows, gemmSeconds: backend.seconds, gemmCalls: backend.calls, perplexity: r.perplexity };
}

interface LlamaApi {
  getLlama(o: object): Promise<{ loadModel(o: object): Promise<{ createContext(o: object): Promise<LlamaContext>; dispose(): Promise<void> }>; dispose(): Promise<void> }>;
}
interface LlamaContext {
  getSequence(): { controlledEvaluate(ids: number[]): Promise<unknown>; clearHistory(): Promise<void> };
  dispose(): Promise<void>;
}

async function childLlama(gguf: string, model: string): Promise<object> {
  const wins = await evalWindows(model);
  const { getLlama } = (await import(pathToFileURL(LLAMA).href)) as LlamaApi;
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error', maxThreads: THREADS });
  const m = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const ctx = await m.createContext({ contextSize: 1024, batchSize: CTX, threads: THREADS, flashAttention: false });
  const seq = ctx.getSequence();
  const run = async (ids: number[]) => {
    await seq.controlledEvaluate(ids);
    await seq.clearHistory();
  };
  await run(wins[0]!); // warm-up: pages the mmapped weights in, as llama-bench does
  const t0 = performance.now();
  for (const w of wins) await run(w);
  const seconds = (performance.now() - t0) / 1000;
  await ctx.dispose();
  await m.dispose();
  await llama.dispose();
  return { seconds, tokens: wins.reduce((a, w) => a + w.length, 0) };
}

async function childGenerate(): Promise<object> {
  const model = join(TINYFAM, 'llama-base');
  const backend = timedBackend(await getBackend({ threads: THREADS }));
  const r = await compareModels({ model: { model }, against: { model }, prompts: join(TINYFAM, 'prompts.txt'), maxNewTokens: GEN_TOKENS, ignoreEos: true, backend });
  const rates = r.rows.flatMap((row) => [row.model.tokensPerSecond, row.against.tokensPerSecond]);
  const generated = r.rows.reduce((a, row) => a + row.model.ids.length + row.against.ids.length, 0);
  return { tokensPerSecond: rates.reduce((a, b) => a + b, 0) / rates.length, generated, gemmCalls: backend.calls, gemmSeconds: backend.seconds, seconds: r.seconds };
}

interface Measured {
  seconds: number;
  tokens: number;
  maxRssBytes: number;
  [k: string]: number;
}

function measure(...args: string[]): Measured {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', ...args], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`bench/eval.ts: the ${args[0]} run failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() as string);
}

async function child(kind: string, a: string, b: string): Promise<void> {
  const r = kind === 'eval' ? await childEval(a) : kind === 'llama' ? await childLlama(a, b) : await childGenerate();
  process.stdout.write(JSON.stringify({ ...r, maxRssBytes: process.resourceUsage().maxRSS * 1024 }) + '\n');
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;

async function main(): Promise<void> {
  const ci = process.argv.indexOf('--child');
  if (ci >= 0) return child(process.argv[ci + 1]!, process.argv[ci + 2]!, process.argv[ci + 3]!);
  const layers = flag('--layers', 16);
  const small = flag('--small', 4);
  const dir = await mkdtemp(join(tmpdir(), 'loraforge-bench-eval-'));
  try {
    const params = modelTensors(layers, VOCAB).reduce((s, t) => s + t.shape.reduce((x, y) => x * y, 1), 0);
    console.log(`eval bench: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, Node ${process.version}; GEMM and llama.cpp on ${THREADS} threads`);
    console.log(`bf16 model: ${layers} layers (and ${small}), hidden ${HIDDEN}, intermediate ${INTERMEDIATE}, ${HEADS}/${KV_HEADS} heads, vocab ${VOCAB}: ${(params / 1e9).toFixed(2)}B parameters`);
    const t = performance.now();
    const big = join(dir, `l${layers}`);
    const little = join(dir, `l${small}`);
    await write1BModel(big, layers, VOCAB);
    await write1BModel(little, small, VOCAB);
    const evalOnly = process.argv.includes('--eval-only');
    const gguf = join(dir, 'model-f32.gguf');
    if (!evalOnly) await convertToGguf({ model: big, out: gguf, dtype: 'F32' });
    console.log(`generated both${evalOnly ? '' : ' and the f32 GGUF'} in ${((performance.now() - t) / 1000).toFixed(1)} s (in ${dir})\n`);

    const ours = measure('eval', big);
    const oursSmall = measure('eval', little);
    if (evalOnly) {
      console.log(`perplexity, ${ours.windows} windows × ${CTX} tokens + BOS (${ours.tokens} tokens):`);
      for (const [n, m] of [[layers, ours], [small, oursSmall]] as const) {
        console.log(`  ours, ${n} layers: ${m.seconds.toFixed(2)} s, ${(m.tokens / m.seconds).toFixed(1)} tokens/s, GEMM ${((100 * m.gemmSeconds) / m.seconds).toFixed(1)} % (${m.gemmSeconds.toFixed(2)} s), peak RSS ${mb(m.maxRssBytes)}`);
      }
      return;
    }
    const cpp = measure('llama', gguf, big);
    const gen = measure('generate');
    const ourRate = ours.tokens / ours.seconds;
    const cppRate = cpp.tokens / cpp.seconds;
    console.log(`perplexity, ${ours.windows} windows × ${CTX} tokens + BOS (${ours.tokens} tokens):`);
    console.log(`  ours, ${layers} layers: ${ours.seconds.toFixed(2)} s, ${ourRate.toFixed(1)} tokens/s (model open, reading and scoring included), peak RSS ${mb(ours.maxRssBytes)}`);
    console.log(`  ours, ${small} layers:  ${oursSmall.seconds.toFixed(2)} s, ${(oursSmall.tokens / oursSmall.seconds).toFixed(1)} tokens/s, peak RSS ${mb(oursSmall.maxRssBytes)}`);
    console.log(`  llama.cpp f32 GGUF, ${layers} layers, batch ${CTX}: ${cpp.seconds.toFixed(2)} s, ${cppRate.toFixed(1)} tokens/s (after a warm-up window)`);
    console.log(`  ours ÷ llama.cpp: ${(ourRate / cppRate).toFixed(2)}   (goal ≥ 0.8)`);
    console.log(`  GEMM share of eval time: ${((100 * ours.gemmSeconds) / ours.seconds).toFixed(1)} % (${ours.gemmCalls} products, ${ours.gemmSeconds.toFixed(2)} s)   (goal ≥ 70 %)`);
    console.log(`  peak RSS ${small} → ${layers} layers: ${mb(oursSmall.maxRssBytes)} → ${mb(ours.maxRssBytes)}   (goal ≤ 1500 MB, independent of depth)`);
    console.log(`generation (compare, greedy, tinyfam llama-base, ${GEN_TOKENS} new tokens per prompt): ${gen.tokensPerSecond.toFixed(1)} tokens/s, ${(gen.gemmCalls / gen.generated).toFixed(0)} GEMM calls per token, GEMM ${((100 * gen.gemmSeconds) / gen.seconds).toFixed(0)} % of ${gen.seconds.toFixed(2)} s`);
  } finally {
    if (!process.argv.includes('--keep')) await rm(dir, { recursive: true, force: true });
  }
}

await main();
