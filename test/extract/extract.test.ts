import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLora, type ExtractOptions } from '../../src/extract/index.js';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { openPeftAdapter } from '../../src/lora/adapter.js';
import { openGguf } from '../../src/io/gguf.js';
import { svdSmall } from '../../src/linalg/svd-small.js';
import { makeTempDir } from '../helpers/synthetic.js';
import {
  TINY_LLAMA,
  llamaBase,
  llamaConfig,
  minus,
  planted,
  product,
  relDiff,
  withDeltas,
  writePair,
  type Tensors,
} from '../helpers/extract.js';

let root: string;
let count = 0;
const sub = (name = 'x') => join(root, `${name}${count++}`);

after(async () => {
  await rm(root, { recursive: true, force: true });
});

const L = (l: number, m: string) => `model.layers.${l}.${m}.weight`;
const Q = (l: number) => L(l, 'self_attn.q_proj');
const K = (l: number) => L(l, 'self_attn.k_proj');
const V = (l: number) => L(l, 'self_attn.v_proj');
const DOWN = (l: number) => L(l, 'mlp.down_proj');

/**
 * A: q (rank 3) and v (rank 2) changed; B: q (rank 2), k (rank 2), down (rank 3) and layer 0's
 * input norm changed. So Δ = B − A has rank 5 on q, 2 on k and v, 3 on down; o/gate/up are identical.
 */
function fixture(): { a: Tensors; b: Tensors; trueDelta: Record<string, Float32Array>; trueRank: Record<string, number> } {
  const base = llamaBase(TINY_LLAMA, 1);
  const dA: Record<string, Float32Array> = {};
  const dB: Record<string, Float32Array> = {};
  const trueRank: Record<string, number> = {};
  for (const l of [0, 1]) {
    dA[Q(l)] = planted(64, 64, [0.3, 0.22, 0.15], 100 + l);
    dA[V(l)] = planted(32, 64, [0.25, 0.12], 110 + l);
    dB[Q(l)] = planted(64, 64, [0.28, 0.1], 120 + l);
    dB[K(l)] = planted(32, 64, [0.2, 0.1], 130 + l);
    dB[DOWN(l)] = planted(64, 96, [0.3, 0.2, 0.12], 140 + l);
    Object.assign(trueRank, { [Q(l)]: 5, [V(l)]: 2, [K(l)]: 2, [DOWN(l)]: 3 });
  }
  const norm = 'model.layers.0.input_layernorm.weight';
  const b = withDeltas(base, { ...dB, [norm]: new Float32Array(64).fill(0.25) });
  const a = withDeltas(base, dA);
  const trueDelta: Record<string, Float32Array> = {};
  for (const name of Object.keys(trueRank)) {
    const zero = new Float32Array(base[name].data.length);
    trueDelta[name] = minus(dB[name] ?? zero, dA[name] ?? zero);
  }
  return { a, b, trueDelta, trueRank };
}

const fx = fixture();
const config = llamaConfig(TINY_LLAMA);
let bf16: { a: string; b: string };
let f32Sharded: { a: string; b: string };

before(async () => {
  root = await makeTempDir('loraforge-extract-');
  bf16 = await writePair(sub('bf16'), fx.a, fx.b, { dtype: 'BF16', config });
  f32Sharded = await writePair(sub('f32'), fx.a, fx.b, { dtype: 'F32', config, maxShardBytes: 40_000 });
});

/** The observed Δ (as stored in the two files, read as f32). */
async function observedDelta(pair: { a: string; b: string }, name: string): Promise<Float32Array> {
  const [a, b] = [await openCheckpoint(pair.a), await openCheckpoint(pair.b)];
  try {
    return minus(await b.read(name), await a.read(name));
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

/** Every LoRA module of an adapter folder rebuilt as scaling·B·A, keyed by tensor name. */
async function rebuild(dir: string): Promise<Map<string, { delta: Float32Array; rank: number; alpha: number; scaling: number }>> {
  const adapter = await openPeftAdapter(dir);
  try {
    const out = new Map<string, { delta: Float32Array; rank: number; alpha: number; scaling: number }>();
    for (const m of adapter.modules) {
      const mod = await adapter.load(m.name);
      out.set(`${m.name}.weight`, {
        delta: product(mod.B.data, mod.A.data, m.outFeatures, m.rank, m.inFeatures, m.scaling),
        rank: m.rank,
        alpha: m.alpha,
        scaling: m.scaling,
      });
    }
    return out;
  } finally {
    await adapter.close();
  }
}

function run(pair: { a: string; b: string }, extra: Partial<ExtractOptions> = {}) {
  const out = sub('out');
  return { out, report: extractLora({ modelA: pair.a, modelB: pair.b, out, ...extra }) };
}

async function rejectsLeavingNothing(p: Promise<unknown>, out: string, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(p, (err: Error) => {
    for (const re of patterns) assert.match(err.message, re);
    return true;
  });
  const siblings = await readdir(root);
  const base = out.slice(root.length + 1);
  assert.deepEqual(siblings.filter((n) => n === base || n.startsWith(`.${base}.`)), [], 'no output or temporary folder is left behind');
}

describe('extractLora on planted deltas', () => {
  it('energy mode finds every true rank and rebuilds Δ to the bf16 rounding floor (bf16, single file)', async () => {
    const { out, report } = run(bf16, { policy: { mode: 'energy', energy: 0.999, maxRank: 32 } });
    const r = await report;
    const found = Object.fromEntries(r.tensors.map((t) => [t.name, t.rank]));
    assert.deepEqual(found, fx.trueRank);
    const rebuilt = await rebuild(out);
    assert.deepEqual([...rebuilt.keys()].sort(), Object.keys(fx.trueRank).sort());
    for (const [name, m] of rebuilt) {
      assert.equal(m.scaling, 1, 'alpha defaults to the rank');
      // the best the inputs allow: the observed Δ is the true one plus two bf16 roundings
      const floor = relDiff(await observedDelta(bf16, name), fx.trueDelta[name]);
      const err = relDiff(m.delta, fx.trueDelta[name]);
      assert.ok(floor > 1e-3 && floor < 0.05, `${name}: floor ${floor}`);
      assert.ok(err < floor * 1.2 + 4e-3, `${name}: error ${err} vs bf16 floor ${floor}`);
    }
    assert.equal(r.dtype, 'BF16', 'the adapter takes the models dtype by default');
    assert.equal(r.totals.skippedIdentical, 6);
    assert.deepEqual(
      r.skippedIdentical.sort(),
      [0, 1].flatMap((l) => [L(l, 'mlp.gate_proj'), L(l, 'mlp.up_proj'), L(l, 'self_attn.o_proj')]).sort(),
    );
    assert.deepEqual(r.nonTargetDiffering.map((d) => [d.name, d.saved]), [['model.layers.0.input_layernorm.weight', false]]);
    assert.ok(Math.abs(r.nonTargetDiffering[0].relChange! - 0.25) < 1e-6);
    const onDisk = JSON.parse(await readFile(join(out, 'report.json'), 'utf8'));
    assert.deepEqual(onDisk.tensors.map((t: { rank: number }) => t.rank), r.tensors.map((t) => t.rank));
  });

  it('fixed rank below the true rank gives the optimal truncation error (f32, sharded)', async () => {
    const { out, report } = run(f32Sharded, { policy: { mode: 'rank', rank: 4 }, verify: true });
    const r = await report;
    const rebuilt = await rebuild(out);
    for (const t of r.tensors) {
      const truth = fx.trueDelta[t.name];
      const err = relDiff(rebuilt.get(t.name)!.delta, truth);
      if (fx.trueRank[t.name] <= 4) {
        assert.ok(err < 1e-4, `${t.name}: rank ≥ true rank must be exact in f32, got ${err}`);
      } else {
        // optimum = σ_5 / ‖Δ‖ from a dense SVD of the true Δ
        const s = svdSmall({ rows: 64, cols: 64, data: truth }).S;
        const optimum = s[4] / Math.sqrt(s.reduce((x, y) => x + y * y, 0));
        assert.ok(Math.abs(err - optimum) < 1e-3 * optimum + 1e-5, `${t.name}: error ${err} vs optimum ${optimum}`);
        assert.ok(Math.abs(t.relError - optimum) < 1e-3 * optimum + 1e-5, 'the reported error is the true one');
      }
      // the spectral error is a difference of two f32-accurate energies: good to ~1e-3 absolute
      assert.ok(Math.abs(t.exactRelError! - t.relError) < 1e-3, `${t.name}: exact ${t.exactRelError} vs spectral ${t.relError}`);
      assert.equal(t.rank, 4);
    }
    assert.equal(r.dtype, 'F32');
  });

  it('--max-rel-error picks the smallest rank meeting the bound', async () => {
    const { report } = run(f32Sharded, { policy: { mode: 'max-rel-error', maxRelError: 0.3, maxRank: 32 } });
    const r = await report;
    for (const t of r.tensors) {
      assert.ok(t.relError <= 0.3, `${t.name}: ${t.relError}`);
      const s = svdSmall({ rows: t.shape[0], cols: t.shape[1], data: fx.trueDelta[t.name] }).S;
      const total = s.reduce((x, y) => x + y * y, 0);
      const errAt = (k: number) => Math.sqrt(s.slice(k).reduce((x, y) => x + y * y, 0) / total);
      const smallest = [...Array(s.length).keys()].find((k) => k >= 1 && errAt(k) <= 0.3)!;
      assert.equal(t.rank, smallest, `${t.name}`);
    }
  });

  it('a fixed --alpha keeps alpha for every module and scales B so that scaling·B·A = Δ_r', async () => {
    const { out, report } = run(f32Sharded, { policy: { mode: 'energy', energy: 0.9999, maxRank: 32 }, alpha: 8 });
    await report;
    const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.lora_alpha, 8);
    assert.deepEqual(cfg.alpha_pattern, {});
    assert.ok(Object.keys(cfg.rank_pattern).length > 0, 'ranks vary, so rank_pattern is used');
    for (const [name, m] of await rebuild(out)) {
      assert.equal(m.scaling, 8 / m.rank);
      assert.ok(relDiff(m.delta, fx.trueDelta[name]) < 1e-4, name);
    }
  });

  it('the same --seed gives byte-identical adapter files', async () => {
    const opts = { policy: { mode: 'rank', rank: 3 } as const, seed: 7 };
    const first = run(bf16, opts);
    const second = run(bf16, opts);
    await Promise.all([first.report, second.report]);
    for (const file of ['adapter_model.safetensors', 'adapter_config.json']) {
      const [x, y] = [await readFile(join(first.out, file)), await readFile(join(second.out, file))];
      assert.ok(x.equals(y), `${file} differs between two runs with the same seed`);
    }
  });

  it('--target-modules, --include and --exclude choose the targets', async () => {
    const { report } = run(f32Sharded, { targetModules: ['q_proj', 'k_proj'], exclude: /layers\.1\./, policy: { mode: 'rank', rank: 2 } });
    assert.deepEqual((await report).tensors.map((t) => t.name).sort(), [K(0), Q(0)].sort());
    const inc = run(f32Sharded, { include: /down_proj/, policy: { mode: 'rank', rank: 2 } });
    assert.deepEqual((await inc.report).tensors.map((t) => t.name), [DOWN(0), DOWN(1)]);
  });

  it('--format both also writes a llama.cpp GGUF LoRA with the same deltas', async () => {
    const { out, report } = run(f32Sharded, { format: 'both', policy: { mode: 'rank', rank: 3 }, alpha: 6 });
    await report;
    assert.ok((await readdir(out)).includes('adapter_model.safetensors'));
    const gguf = await openGguf(join(out, 'adapter.gguf'));
    try {
      assert.equal(gguf.kv.get('general.type'), 'adapter');
      assert.equal(gguf.kv.get('general.architecture'), 'llama');
      // down_proj (no RoPE row permutation): the GGUF factors carry the whole scaling
      const a = await gguf.read('blk.1.ffn_down.weight.lora_a');
      const b = await gguf.read('blk.1.ffn_down.weight.lora_b');
      assert.deepEqual(gguf.info('blk.1.ffn_down.weight.lora_a').shape, [3, 96]);
      const rebuilt = product(b, a, 64, 3, 96);
      assert.ok(relDiff(rebuilt, fx.trueDelta[DOWN(1)]) < 1e-4);
      assert.ok(gguf.has('blk.0.attn_q.weight.lora_b') && !gguf.has('blk.0.attn_output.weight.lora_a'));
    } finally {
      await gguf.close();
    }
    const whole = run(f32Sharded, { format: 'gguf', saveModules: true });
    await rejectsLeavingNothing(whole.report, whole.out, /--save-modules save whole tensors, which a GGUF LoRA cannot hold/);
  });

  it('--save-modules writes differing non-target tensors whole (modules_to_save)', async () => {
    const { out, report } = run(f32Sharded, { saveModules: true, policy: { mode: 'rank', rank: 2 } });
    const r = await report;
    assert.deepEqual(r.nonTargetDiffering.map((d) => [d.name, d.saved]), [['model.layers.0.input_layernorm.weight', true]]);
    const adapter = await openPeftAdapter(out);
    try {
      assert.deepEqual(adapter.config.modules_to_save, ['input_layernorm']);
      const norm = await adapter.readFull('model.layers.0.input_layernorm.weight');
      assert.deepEqual([...norm], [...fx.b['model.layers.0.input_layernorm.weight'].data]);
    } finally {
      await adapter.close();
    }
  });
});

describe('extractLora refuses bad inputs and leaves no output', () => {
  it('a fixed rank larger than a tensor allows: names the tensor and the ways out', async () => {
    const { out, report } = run(bf16, { policy: { mode: 'rank', rank: 40 } });
    await rejectsLeavingNothing(report, out, /k_proj/, /\[32, 64\]/, /at most 32/, /--exclude/, /--energy/);
  });

  it('tensor names that differ', async () => {
    const dir = sub('names');
    const pair = await writePair(dir, fx.a, { ...fx.b, 'model.extra.weight': { shape: [4], data: new Float32Array(4) } }, { config });
    const { out, report } = run(pair);
    await rejectsLeavingNothing(report, out, /only in model B/, /model\.extra\.weight/);
  });

  it('shapes that differ', async () => {
    const dir = sub('shapes');
    const b = { ...fx.b, [Q(1)]: { shape: [32, 128], data: fx.b[Q(1)].data } };
    const pair = await writePair(dir, fx.a, b, { config });
    const { out, report } = run(pair);
    await rejectsLeavingNothing(report, out, /q_proj/, /\[64, 64\]/, /\[32, 128\]/);
  });

  it('a quantized (I8) tensor: names file and tensor, says to dequantize', async () => {
    const dir = sub('quant');
    const pair = await writePair(dir, fx.a, fx.b, { config });
    // replace model B's file with one whose q_proj is stored as I8
    const names = Object.keys(fx.b);
    const header: Record<string, unknown> = {};
    let offset = 0;
    const parts: Buffer[] = [];
    for (const name of names) {
      const t = fx.b[name];
      const quant = name === Q(0);
      const bytes = quant ? Buffer.alloc(t.data.length) : Buffer.from(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      header[name] = { dtype: quant ? 'I8' : 'F32', shape: t.shape, data_offsets: [offset, offset + bytes.length] };
      offset += bytes.length;
      parts.push(bytes);
    }
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    await writeFile(join(pair.b, 'model.safetensors'), Buffer.concat([len, Buffer.from(json), ...parts]));
    const { out, report } = run(pair);
    await rejectsLeavingNothing(report, out, /model\.safetensors/, /q_proj/, /I8/, /dequantize/);
  });

  it('NaN in an input tensor: names the file and the tensor', async () => {
    const dir = sub('nan');
    const bad = fx.b[DOWN(1)].data.slice();
    bad[17] = NaN;
    const pair = await writePair(dir, fx.a, { ...fx.b, [DOWN(1)]: { shape: fx.b[DOWN(1)].shape, data: bad } }, { config, maxShardBytes: 40_000 });
    const { out, report } = run(pair);
    await rejectsLeavingNothing(report, out, /model-\d+-of-\d+\.safetensors/, /layers\.1\.mlp\.down_proj/, /NaN at element 17/);
  });

  it('an existing non-empty output folder is kept unless overwrite is asked', async () => {
    const out = sub('existing');
    await mkdir(out);
    await writeFile(join(out, 'keep.txt'), 'mine');
    await assert.rejects(extractLora({ modelA: bf16.a, modelB: bf16.b, out }), /already exists/);
    assert.equal(await readFile(join(out, 'keep.txt'), 'utf8'), 'mine');
    await extractLora({ modelA: bf16.a, modelB: bf16.b, out, overwrite: true, policy: { mode: 'rank', rank: 2 } });
    assert.ok((await readdir(out)).includes('adapter_model.safetensors'));
  });

  it('an output inside an input is refused', async () => {
    await assert.rejects(extractLora({ modelA: bf16.a, modelB: bf16.b, out: join(bf16.b, 'adapter') }), /inside the input/);
  });
});
