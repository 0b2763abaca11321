/**
 * Transplant benchmark (issue #17): `npx tsx bench/transplant.ts [--trials N] [--layers N]` (or
 * `npm run bench:transplant`).
 *
 * Search throughput — trials per minute — with and without the guard's hidden-state cache, in one
 * run, each in its own child process so every peak RSS is its own:
 * - tinyfam, qwen-base ← llama-base (tied base: every candidate changes the embeddings, so the
 *   cache only saves the base's own pass) and llama-base ← qwen-base (untied: lm_head-only
 *   candidates reuse the hidden states of their embedding table);
 * - a generated 1B-shaped bf16 base (bench/model-1b.ts, vocabulary 32000 with tinyfam
 *   llama-base's tokenizer) ← tinyfam qwen-base.
 * The ratio cached ÷ uncached is the figure to watch; absolute rates depend on the machine.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transplantEmbeddings } from '../src/transplant/transplant.js';
import { write1BModel } from './model-1b.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const TINYFAM = join(REPO, '..', 'shared', 'testdata', 'tinyfam');

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

interface Measured {
  trialsPerMinute: number;
  forwards: number;
  cachedHidden: number;
  seconds: number;
  maxRssBytes: number;
}

async function child(base: string, donor: string, out: string, trials: number, cache: boolean): Promise<void> {
  const r = await transplantEmbeddings({ base, donor, out, trials, seed: 1, cacheHidden: cache, overwrite: true });
  const s = r.search!;
  const m: Measured = { trialsPerMinute: s.trialsPerMinute, forwards: s.forwards, cachedHidden: s.cachedHidden, seconds: r.seconds, maxRssBytes: process.resourceUsage().maxRSS * 1024 };
  process.stdout.write(JSON.stringify(m) + '\n');
}

function measure(base: string, donor: string, out: string, trials: number, cache: boolean): Measured {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', base, donor, out, String(trials), String(cache)], {
    encoding: 'utf8',
    maxBuffer: 1 << 20,
  });
  if (r.status !== 0) throw new Error(`bench/transplant.ts: the run on ${base} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() as string) as Measured;
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;

function row(label: string, trials: number, base: string, donor: string, out: string): void {
  const cached = measure(base, donor, out, trials, true);
  const plain = measure(base, donor, out, trials, false);
  console.log(
    `${label}: ${trials} trials — cached ${cached.trialsPerMinute.toFixed(1)} trials/min (${cached.forwards} forward passes), ` +
      `uncached ${plain.trialsPerMinute.toFixed(1)} (${plain.forwards}); cached ÷ uncached ${(cached.trialsPerMinute / plain.trialsPerMinute).toFixed(2)}; ` +
      `peak RSS ${mb(cached.maxRssBytes)} / ${mb(plain.maxRssBytes)}`,
  );
}

async function main(): Promise<void> {
  const ci = process.argv.indexOf('--child');
  if (ci >= 0) {
    const [base, donor, out, trials, cache] = process.argv.slice(ci + 1);
    return child(base!, donor!, out!, Number(trials), cache === 'true');
  }
  const trials = flag('--trials', 6);
  const layers = flag('--layers', 16);
  const dir = await mkdtemp(join(tmpdir(), 'loraforge-bench-transplant-'));
  try {
    console.log(`transplant bench: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, Node ${process.version}`);
    row('tinyfam qwen-base ← llama-base (tied)', trials, join(TINYFAM, 'qwen-base'), join(TINYFAM, 'llama-base'), join(dir, 'out'));
    row('tinyfam llama-base ← qwen-base (untied)', trials, join(TINYFAM, 'llama-base'), join(TINYFAM, 'qwen-base'), join(dir, 'out'));
    const big = join(dir, 'base-1b');
    await write1BModel(big, layers);
    row(`1B-shaped base (${layers} layers, bf16) ← tinyfam qwen-base`, Math.max(2, Math.floor(trials / 2)), big, join(TINYFAM, 'qwen-base'), join(dir, 'out'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
