/**
 * Each method end to end on tiny seeded models, against the method's formula written out here
 * independently (plain loops, sort-based top-k), entry by entry.
 */
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { maskRng, mergeModels } from '../../src/merge/index.js';
import { roundTo } from '../../src/tensor/dtype.js';
import { readModel, writeTinyModel, type TensorMap } from '../helpers/merge.js';
import { makeTempDir } from '../helpers/synthetic.js';

let dir: string;
let base: TensorMap;
let a: TensorMap;
let b: TensorMap;
let outCount = 0;

before(async () => {
  dir = await makeTempDir('loraforge-merge-methods-');
  base = await writeTinyModel(join(dir, 'base'), { seed: 1, tokenizer: 'from-base' });
  a = await writeTinyModel(join(dir, 'a'), { seed: 2, tokenizer: 'from-a' });
  b = await writeTinyModel(join(dir, 'b'), { seed: 3 });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function merge(config: Record<string, unknown>, seed?: number): Promise<{ out: string; tensors: Awaited<ReturnType<typeof readModel>> }> {
  const out = join(dir, `out-${outCount++}`);
  await mergeModels({ config, out, cwd: dir, seed });
  return { out, tensors: await readModel(out) };
}

/** Asserts every output tensor equals `expected(name)` within `tol` (relative to the magnitude). */
function assertTensors(got: Awaited<ReturnType<typeof readModel>>, expected: (name: string) => ArrayLike<number>, tol = 1e-6): void {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(base).sort());
  for (const [name, t] of Object.entries(got)) {
    const want = expected(name);
    assert.equal(t.data.length, want.length, name);
    for (let i = 0; i < want.length; i++) {
      assert.ok(Math.abs(t.data[i] - want[i]) <= tol * (1 + Math.abs(want[i])), `${name}[${i}]: got ${t.data[i]}, want ${want[i]}`);
    }
  }
}

/** Stable descending sort by |x|: the first k entries survive. */
function trim(delta: number[], density: number): number[] {
  if (density >= 1) return delta;
  const k = Math.trunc(density * delta.length);
  const order = delta.map((_, i) => i).sort((p, q) => Math.abs(delta[q]) - Math.abs(delta[p]) || p - q);
  const out = delta.map(() => 0);
  for (const i of order.slice(0, k)) out[i] = delta[i];
  return out;
}

/** TIES-style sign election over weighted deltas d[j][i]: sum of agreeing entries and of their weights. */
function elect(d: number[][], w: number[], i: number): { mixed: number; divisor: number } {
  const sum = d.reduce((s, dj) => s + dj[i], 0);
  const sign = sum >= 0 ? 1 : -1;
  let mixed = 0;
  let divisor = 0;
  d.forEach((dj, j) => {
    if (Math.sign(dj[i]) === sign) {
      mixed += dj[i];
      divisor += w[j];
    }
  });
  return { mixed, divisor };
}

const delta = (x: TensorMap, name: string) => Array.from(x[name].data, (v, i) => v - base[name].data[i]);

describe('merge methods vs their formulas', () => {
  it('linear: Σ w·x / Σ w', async () => {
    const { tensors } = await merge({ merge_method: 'linear', models: [{ model: './a', parameters: { weight: 0.3 } }, { model: './b', parameters: { weight: 0.9 } }] });
    assertTensors(tensors, (n) => Array.from(a[n].data, (v, i) => (0.3 * v + 0.9 * b[n].data[i]) / 1.2));
  });

  it('linear without normalize: Σ w·x', async () => {
    const { tensors } = await merge({ merge_method: 'linear', parameters: { normalize: false }, models: [{ model: './a', parameters: { weight: 0.3 } }, { model: './b', parameters: { weight: 0.9 } }] });
    assertTensors(tensors, (n) => Array.from(a[n].data, (v, i) => 0.3 * v + 0.9 * b[n].data[i]));
  });

  it('task_arithmetic: base + λ·Σ w·(x − base), not normalized by default', async () => {
    const { tensors } = await merge({
      merge_method: 'task_arithmetic',
      base_model: './base',
      parameters: { lambda: 0.8 },
      models: [{ model: './a', parameters: { weight: 0.5 } }, { model: './b', parameters: { weight: 0.7 } }],
    });
    assertTensors(tensors, (n) => {
      const da = delta(a, n);
      const db = delta(b, n);
      return Array.from(base[n].data, (v, i) => v + 0.8 * (0.5 * da[i] + 0.7 * db[i]));
    });
  });

  it('ties: trim to density, elect the sign of the sum, average agreeing entries by weight', async () => {
    const { tensors } = await merge({
      merge_method: 'ties',
      base_model: './base',
      models: [{ model: './a', parameters: { weight: 0.6, density: 0.5 } }, { model: './b', parameters: { weight: 0.4, density: 0.3 } }],
    });
    assertTensors(tensors, (n) => {
      const w = [0.6, 0.4];
      const d = [trim(delta(a, n), 0.5).map((x) => x * w[0]), trim(delta(b, n), 0.3).map((x) => x * w[1])];
      return Array.from(base[n].data, (v, i) => {
        const { mixed, divisor } = elect(d, w, i);
        return v + mixed / (divisor === 0 ? 1 : divisor);
      });
    });
  });

  it('dare_linear: seeded drop, L1 rescale, weighted sum', async () => {
    const seed = 11;
    const { tensors } = await merge(
      {
        merge_method: 'dare_linear',
        base_model: './base',
        models: [{ model: './a', parameters: { weight: 0.5, density: 0.4 } }, { model: './b', parameters: { weight: 1, density: 0.7 } }],
      },
      seed,
    );
    const dare = (x: TensorMap, n: string, input: number, density: number) => {
      const dl = delta(x, n);
      const rng = maskRng(seed, n, input);
      const kept = dl.map((v) => (rng.next() < density ? v : 0));
      const l1 = (v: number[]) => v.reduce((s, e) => s + Math.abs(e), 0);
      const scale = l1(kept) < 1e-7 ? 1 : l1(dl) / l1(kept);
      return kept.map((v) => v * scale);
    };
    assertTensors(tensors, (n) => {
      const da = dare(a, n, 0, 0.4);
      const db = dare(b, n, 1, 0.7);
      return Array.from(base[n].data, (v, i) => v + 0.5 * da[i] + db[i]);
    }, 1e-5);
  });

  it('dare_ties: seeded drop without rescale when asked, sign election, no normalization by default', async () => {
    const seed = 5;
    const { tensors } = await merge(
      {
        merge_method: 'dare_ties',
        base_model: './base',
        parameters: { rescale: false },
        models: [{ model: './a', parameters: { weight: 0.5, density: 0.5 } }, { model: './b', parameters: { weight: 0.8, density: 0.5 } }],
      },
      seed,
    );
    assertTensors(tensors, (n) => {
      const drop = (x: TensorMap, input: number) => {
        const rng = maskRng(seed, n, input);
        return delta(x, n).map((v) => (rng.next() < 0.5 ? v : 0));
      };
      const w = [0.5, 0.8];
      const d = [drop(a, 0).map((x) => x * w[0]), drop(b, 1).map((x) => x * w[1])];
      return Array.from(base[n].data, (v, i) => v + elect(d, w, i).mixed);
    });
  });

  it('della_linear: seeded per-input draws against magnitude-ranked keep probabilities along dim 1', async () => {
    const seed = 7;
    const { tensors } = await merge(
      {
        merge_method: 'della_linear',
        base_model: './base',
        parameters: { rescale: false },
        models: [{ model: './a', parameters: { weight: 0.5, density: 0.5, epsilon: 0.3 } }, { model: './b', parameters: { weight: 1, density: 0.6 } }],
      },
      seed,
    );
    const della = (x: TensorMap, n: string, input: number, density: number, eps: number) => {
      const dl = delta(x, n);
      const shape = base[n].shape;
      const cols = shape.length < 2 ? dl.length : shape[1];
      const p = dl.map(() => 0);
      for (let r = 0; r < dl.length / cols; r++) {
        const row = dl.slice(r * cols, (r + 1) * cols);
        const order = row.map((_, j) => j).sort((i, j) => Math.abs(row[i]) - Math.abs(row[j]));
        order.forEach((j, rank) => (p[r * cols + j] = density - eps + (2 * eps * rank) / (cols - 1)));
      }
      const rng = maskRng(seed, n, input);
      return dl.map((v, i) => (rng.next() < p[i] ? v : 0));
    };
    assertTensors(tensors, (n) => {
      const da = della(a, n, 0, 0.5, 0.3);
      const db = della(b, n, 1, 0.6, 0.15);
      return Array.from(base[n].data, (v, i) => v + 0.5 * da[i] + db[i]);
    }, 1e-5);
  });

  it('slerp: spherical interpolation from base_model by t', async () => {
    const { tensors } = await merge({ merge_method: 'slerp', base_model: './a', parameters: { t: 0.3 }, models: [{ model: './a' }, { model: './b' }] });
    assertTensors(tensors, (n) => {
      const v0 = Array.from(a[n].data);
      const v1 = Array.from(b[n].data);
      const norm = (v: number[]) => Math.hypot(...v);
      const cos = v0.reduce((s, x, i) => s + x * v1[i], 0) / (norm(v0) * norm(v1));
      const theta = Math.acos(cos);
      return v0.map((x, i) => (Math.sin(0.7 * theta) * x + Math.sin(0.3 * theta) * v1[i]) / Math.sin(theta));
    }, 1e-5);
  });
});

describe('parameters over layers and tensor names', () => {
  it('interpolates gradients across layers (t = layer / (layers − 1)) and uses t = 0 outside the layers', async () => {
    const { tensors } = await merge({ merge_method: 'linear', models: [{ model: './a', parameters: { weight: [0, 1] } }, { model: './b', parameters: { weight: 1 } }] });
    const weightOfA = (n: string) => {
      const m = /layers\.(\d+)\./.exec(n);
      return m ? Number(m[1]) / 2 : 0;
    };
    assertTensors(tensors, (n) => Array.from(a[n].data, (v, i) => (weightOfA(n) * v + b[n].data[i]) / (weightOfA(n) + 1)));
  });

  it('applies the first filter matching the tensor name, else the next level down', async () => {
    const { tensors } = await merge({
      merge_method: 'task_arithmetic',
      base_model: './base',
      parameters: { weight: 0.25 },
      models: [{ model: './a', parameters: { weight: [{ filter: 'self_attn', value: 2 }, { filter: 'mlp', value: [0, 1] }] } }],
    });
    assertTensors(tensors, (n) => {
      const layer = Number(/layers\.(\d+)\./.exec(n)?.[1] ?? 0);
      const w = n.includes('self_attn') ? 2 : n.includes('mlp') ? layer / 2 : 0.25;
      const da = delta(a, n);
      return Array.from(base[n].data, (v, i) => v + w * da[i]);
    });
  });

  it('slerp with the popular filtered gradient t: exact endpoints at t = 0 and 1', async () => {
    const { tensors } = await merge({
      merge_method: 'slerp',
      base_model: './a',
      slices: [{ sources: [{ model: './a', layer_range: [0, 3] }, { model: './b', layer_range: [0, 3] }] }],
      parameters: { t: [{ filter: 'self_attn', value: [0, 1] }, { filter: 'mlp', value: [1, 0] }, { value: 0.5 }] },
    });
    assert.deepEqual(tensors['model.layers.0.self_attn.q_proj.weight'].data, a['model.layers.0.self_attn.q_proj.weight'].data);
    assert.deepEqual(tensors['model.layers.2.self_attn.q_proj.weight'].data, b['model.layers.2.self_attn.q_proj.weight'].data);
    assert.deepEqual(tensors['model.layers.0.mlp.up_proj.weight'].data, b['model.layers.0.mlp.up_proj.weight'].data);
    assert.deepEqual(tensors['model.layers.2.mlp.up_proj.weight'].data, a['model.layers.2.mlp.up_proj.weight'].data);
    assert.notDeepEqual(tensors['model.norm.weight'].data, a['model.norm.weight'].data);
  });
});

describe('output dtype, config and tokenizer', () => {
  it('writes dtype, copies config.json (dtype set) and tokenizer files from the base, and stores the merge config', async () => {
    const { out, tensors } = await merge({
      merge_method: 'linear',
      base_model: './a',
      tokenizer_source: 'base',
      dtype: 'bfloat16',
      models: [{ model: './b', parameters: { weight: 1 } }, { model: './a', parameters: { weight: 1 } }],
    });
    for (const [name, t] of Object.entries(tensors)) {
      assert.equal(t.dtype, 'BF16');
      const want = roundTo(Float32Array.from(a[name].data, (v, i) => (v + b[name].data[i]) / 2), 'BF16');
      for (let i = 0; i < want.length; i++) assert.ok(Math.abs(t.data[i] - want[i]) <= 2 ** -7 * Math.abs(want[i]), `${name}[${i}]`);
    }
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    assert.equal(config.torch_dtype, 'bfloat16');
    assert.equal(config.num_hidden_layers, 3);
    assert.equal(JSON.parse(await readFile(join(out, 'tokenizer.json'), 'utf8')).marker, 'from-a');
    assert.equal(JSON.parse(await readFile(join(out, 'generation_config.json'), 'utf8')).marker, 'from-a');
    assert.match(await readFile(join(out, 'mergekit_config.yml'), 'utf8'), /merge_method: linear/);
  });

  it("carries the donor's other side files (model code, LICENSE) and sets every dtype key of its config, as apply does", async () => {
    await writeTinyModel(join(dir, 'coded'), { seed: 4, config: { dtype: 'float32', torch_dtype: 'float32', auto_map: { AutoModel: 'modeling_x.X' } } });
    await writeFile(join(dir, 'coded', 'modeling_x.py'), 'class X: pass\n');
    await writeFile(join(dir, 'coded', 'LICENSE'), 'terms\n');
    const { out } = await merge({ merge_method: 'linear', dtype: 'float16', models: [{ model: './coded', parameters: { weight: 1 } }] });
    assert.equal(await readFile(join(out, 'modeling_x.py'), 'utf8'), 'class X: pass\n');
    assert.equal(await readFile(join(out, 'LICENSE'), 'utf8'), 'terms\n');
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8'));
    assert.equal(config.dtype, 'float16');
    assert.equal(config.torch_dtype, 'float16');
  });

  it('keeps each tensor in its input dtype when no dtype is given', async () => {
    const { tensors } = await merge({ merge_method: 'linear', models: [{ model: './a', parameters: { weight: 1 } }] });
    assert.ok(Object.values(tensors).every((t) => t.dtype === 'F32'));
    assert.deepEqual(tensors['lm_head.weight'].data, a['lm_head.weight'].data);
  });
});
