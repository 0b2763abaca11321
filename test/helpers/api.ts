/**
 * For test/api: one tiny Llama pair (B = A + planted low-rank updates on q_proj and v_proj, with a
 * tokenizer so to-gguf can run), adapters made from it, and a comparison of two output folders
 * (files byte for byte; JSON reports modulo timings and the output path).
 */
import assert from 'node:assert/strict';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { extractLora } from '../../src/extract/extract.js';
import { writeDemoTokenizer } from '../../src/demo/demo-tokenizer.js';
import { llamaBase, llamaConfig, planted, withDeltas, writePair, type TinyLlamaShape } from './extract.js';
import { makeTempDir } from './synthetic.js';

export const SHAPE: TinyLlamaShape = { layers: 1, hidden: 32, intermediate: 48, heads: 2, kvHeads: 1, vocab: 300 };
// (a vocabulary above the 256 byte tokens, so the demo tokenizer fits and to-gguf can run)

export interface ApiFixture {
  root: string;
  /** the base model and the fine-tuned one */
  a: string;
  b: string;
  remove(): Promise<void>;
}

export async function apiFixture(prefix: string): Promise<ApiFixture> {
  const root = await makeTempDir(prefix);
  const base = llamaBase(SHAPE, 1);
  const tuned = withDeltas(base, {
    'model.layers.0.self_attn.q_proj.weight': planted(32, 32, [0.5, 0.2], 11),
    'model.layers.0.self_attn.v_proj.weight': planted(16, 32, [0.4, 0.1], 12),
  });
  const { a, b } = await writePair(root, base, tuned, { dtype: 'F32', config: llamaConfig(SHAPE) });
  await writeDemoTokenizer(a, SHAPE.vocab);
  await writeDemoTokenizer(b, SHAPE.vocab);
  return { root, a, b, remove: () => rm(root, { recursive: true, force: true }) };
}

/** A rank-2 PEFT adapter extracted from the pair (seed picks which of two different ones). */
export async function adapterOf(fx: ApiFixture, name: string, seed = 0): Promise<string> {
  const out = join(fx.root, name);
  await extractLora({ modelA: fx.a, modelB: fx.b, out, policy: { mode: 'rank', rank: 2 }, seed, targetModules: seed ? ['q_proj'] : undefined });
  return out;
}

async function files(dir: string): Promise<string[]> {
  if ((await stat(dir)).isFile()) return [''];
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name))).sort();
}

/** Keys whose values differ from run to run: wall-clock times. */
const TIMING_KEY = /seconds|elapsed|duration|millis|^ms$|time/i;

/** A temporary folder a run made and removed (the demo's models): its name differs from run to run. */
const TEMPORARY = /\/[^/"]*loraforge-demo-[0-9a-f]+/g;

function normalized(value: unknown, outs: readonly string[]): unknown {
  if (typeof value === 'string') return outs.reduce((s, o) => s.split(o).join('<out>'), value).replace(TEMPORARY, '<tmp>');
  if (Array.isArray(value)) return value.map((v) => normalized(v, outs));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).filter(([k]) => !TIMING_KEY.test(k)).map(([k, v]) => [k, normalized(v, outs)]));
  }
  return value;
}

/**
 * Asserts two outputs (folders or single files) hold the same files with the same bytes; a .json
 * file is compared as data without timing fields, with each output's own path read as `<out>`.
 */
export async function assertSameOutput(lib: string, cli: string): Promise<void> {
  const names = await files(lib);
  assert.deepEqual(await files(cli), names, 'the CLI and the library wrote different files');
  assert.ok(names.length > 0);
  for (const name of names) {
    const [x, y] = await Promise.all([readFile(join(lib, name)), readFile(join(cli, name))]);
    if (name.endsWith('.json')) {
      assert.deepEqual(normalized(JSON.parse(y.toString()), [cli]), normalized(JSON.parse(x.toString()), [lib]), name);
    } else {
      assert.ok(x.equals(y), `${name || lib}: the CLI and the library wrote different bytes`);
    }
  }
}

/** The CLI's --json report as data without timings, each run's output path read as `<out>`. */
export function reportOf(json: string, out: string): unknown {
  return normalized(JSON.parse(json), [out]);
}
