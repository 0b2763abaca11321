import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir } from '../helpers/synthetic.js';
import { extractOptionsFromFlags, formatExtractReport } from '../../src/cli/extract.js';
import { UsageError } from '../../src/cli/errors.js';
import { TINY_LLAMA, llamaBase, llamaConfig, planted, withDeltas, writePair } from '../helpers/extract.js';

const BIN = fileURLToPath(new URL('../../bin/loraforge.js', import.meta.url));

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let root: string;
let pair: { a: string; b: string };
before(async () => {
  root = await makeTempDir('loraforge-extract-cli-');
  const base = llamaBase(TINY_LLAMA, 5);
  const b = withDeltas(base, { 'model.layers.1.self_attn.v_proj.weight': planted(32, 64, [0.3, 0.2], 1) });
  pair = await writePair(join(root, 'models'), base, b, { config: llamaConfig(TINY_LLAMA) });
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

const flags = (extra: Record<string, string | boolean>) => ({
  modelA: 'a',
  modelB: 'b',
  out: 'o',
  format: 'peft',
  embeddings: 'skip',
  seed: '0',
  ...extra,
});

describe('loraforge extract / demo (CLI)', () => {
  it('exit 0; --json prints the report, which the table summarises', async () => {
    const out = join(root, 'out-json');
    const r = await cli('extract', '--model-a', pair.a, '--model-b', pair.b, '--out', out, '--energy', '0.99', '--json');
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.deepEqual(report.tensors.map((t: { name: string; rank: number }) => [t.name, t.rank]), [['model.layers.1.self_attn.v_proj.weight', 2]]);
    assert.equal(report.totals.skippedIdentical, 13);
    assert.ok((await readdir(out)).includes('report.json'));
    const text = formatExtractReport(report);
    assert.match(text, /model\.layers\.1\.self_attn\.v_proj\.weight\s+\[32, 64\]\s+2\s/);
    assert.match(text, /13 target tensor\(s\) are identical/);
  });

  it('exit 2 on a bad command line, before any work', async () => {
    const base = ['extract', '--model-a', pair.a, '--model-b', pair.b];
    for (const [args, message] of [
      [['extract', '--model-a', pair.a, '--out', join(root, 'x')], /--model-b/],
      [[...base, '--out', join(root, 'x'), '--rank', '4', '--energy', '0.9'], /--rank and --energy/],
    ] as const) {
      const r = await cli(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    // the rest of the flag checks, in process (each is a UsageError, which main.ts maps to exit 2)
    for (const [extra, message] of [
      [{ format: 'onnx' }, /--format must be one of peft, gguf, both/],
      [{ include: '(' }, /--include "\(" is not a valid regular expression/],
      [{ energy: '1.5' }, /--energy must be a number in \[0, 1\]/],
      [{ energy: '0' }, /--energy must be above 0/],
      [{ rank: '8', maxRank: '4' }, /--max-rank caps --energy/],
      [{ rank: '0' }, /--rank must be an integer ≥ 1/],
      [{ alpha: '0' }, /--alpha must be above 0/],
      [{ embeddings: 'some' }, /--embeddings must be one of skip, lora, full/],
      [{ targetModules: ' , ' }, /--target-modules needs at least one/],
    ] as const) {
      assert.throws(() => extractOptionsFromFlags(flags(extra)), (err: Error) => err instanceof UsageError && message.test(err.message));
    }
    assert.deepEqual(extractOptionsFromFlags(flags({ maxRelError: '0.05', maxRank: '64', dtype: 'BF16', targetModules: 'q_proj, v_proj' })), {
      ...extractOptionsFromFlags(flags({})),
      policy: { mode: 'max-rel-error', maxRelError: 0.05, maxRank: 64 },
      dtype: 'BF16',
      targetModules: ['q_proj', 'v_proj'],
    });
    const taken = join(root, 'taken');
    await mkdir(taken);
    await writeFile(join(taken, 'x'), '');
    const r = await cli(...base, '--out', taken);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--force/);
  });

  it('exit 1 on bad input, with the reason and no output', async () => {
    const out = join(root, 'out-bad');
    const tooBig = await cli('extract', '--model-a', pair.a, '--model-b', pair.b, '--out', out, '--rank', '64');
    assert.equal(tooBig.code, 1);
    assert.match(tooBig.stderr, /--rank 64 is more than tensor ".*k_proj\.weight"/);
    assert.ok(!(await readdir(root)).some((n) => n.includes('out-bad')));
  });

  it('exit 1 and nothing written when A and B do not differ in any target (no r = 0 adapter)', async () => {
    const out = join(root, 'out-same');
    const same = await cli('extract', '--model-a', pair.a, '--model-b', pair.a, '--out', out);
    assert.equal(same.code, 1, same.stdout);
    assert.match(same.stderr, /are identical \(14 target tensor\(s\) compared, no other tensor differs\): there is no adapter to extract; nothing written/);
    // only a non-target differs: the message names it and how to target it
    const onlyV = await cli('extract', '--model-a', pair.a, '--model-b', pair.b, '--out', out, '--target-modules', 'q_proj');
    assert.equal(onlyV.code, 1, onlyV.stdout);
    assert.match(onlyV.stderr, /no target tensor differs .*only 1 tensor\(s\) outside the LoRA differ \(model\.layers\.1\.self_attn\.v_proj\.weight\).*--target-modules/);
    const saved = await cli('extract', '--model-a', pair.a, '--model-b', pair.b, '--out', out, '--target-modules', 'q_proj', '--save-modules');
    assert.equal(saved.code, 1, saved.stdout);
    assert.match(saved.stderr, /an adapter of whole tensors alone has no LoRA module \(r = 0\), which PEFT does not load; nothing written/);
    assert.ok(!(await readdir(root)).some((n) => n.includes('out-same')));
  });

  it('demo: recovers every planted rank, says so, and --out keeps the adapter', async () => {
    const out = join(root, 'demo-adapter');
    const r = await cli('demo', '--out', out);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /q_proj\s+A and B\s+8 \+ 4 = 12\s+12 \(all 4 layers\)/);
    assert.match(r.stdout, /✓ Every planted rank was found/);
    assert.match(r.stdout, /o_proj, gate_proj, up_proj: identical in A and B/);
    assert.deepEqual((await readdir(out)).sort(), ['adapter_config.json', 'adapter_model.safetensors', 'report.json']);
    // the models were in a temporary folder, now removed: its path is not printed
    assert.match(r.stdout, /Models A and B were in a temporary folder, now removed: pass --keep/);
    assert.doesNotMatch(r.stdout, /loraforge-demo-/);
  });

  it('demo --keep --out: the models are kept beside the adapter, with a tokenizer to-gguf reads', async () => {
    const out = join(root, 'kept');
    const r = await cli('demo', '--out', out, '--keep', '--quiet');
    assert.equal(r.code, 0, r.stderr);
    const [a, b] = [`${out}-model-a`, `${out}-model-b`];
    assert.ok(r.stdout.includes(`Models A and B (config.json, tokenizer, bf16 weights): ${a}  ${b}`), r.stdout);
    for (const dir of [a, b]) {
      assert.deepEqual((await readdir(dir)).sort(), ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    }
    const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(config.base_model_name_or_path, a, 'the adapter points at the kept model A');
    const gguf = join(root, 'demo-a.gguf');
    const converted = await cli('to-gguf', '--model', a, '--out', gguf, '--json', '--quiet');
    assert.equal(converted.code, 0, converted.stderr);
    assert.equal(JSON.parse(converted.stdout).vocabSize, 1000);
    const inspected = await cli('inspect', gguf, '--json');
    assert.equal(inspected.code, 0, inspected.stderr);
    const meta = JSON.parse(inspected.stdout).metadata;
    assert.equal(meta['tokenizer.ggml.model'], 'gpt2');
    assert.equal(meta['tokenizer.ggml.pre'], 'gpt-2');
  });

  it('demo --keep --out: models an earlier run kept are refused without --force and left as they were', async () => {
    const out = join(root, 'kept-twice');
    const first = await cli('demo', '--out', out, '--keep', '--quiet');
    assert.equal(first.code, 0, first.stderr);
    const before = await readFile(join(`${out}-model-a`, 'model.safetensors'));
    // a second run to the same --out: the adapter folder is not empty, so it stops before any work
    const refused = await cli('demo', '--out', out, '--keep', '--quiet');
    assert.notEqual(refused.code, 0);
    // a run whose --out is free but whose model folders exist: refused, and the models stay
    await rm(out, { recursive: true });
    const modelsExist = await cli('demo', '--out', out, '--keep', '--quiet');
    assert.equal(modelsExist.code, 1, modelsExist.stdout);
    assert.match(modelsExist.stderr, /-model-a exists: .*--force/);
    assert.deepEqual(await readFile(join(`${out}-model-a`, 'model.safetensors')), before, 'the kept models are untouched');
    assert.deepEqual((await readdir(`${out}-model-b`)).sort(), ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  });
});
