/**
 * The files extract and edit write for MoE inputs (PEFT expert stacks, target_parameters) are
 * pinned here: adapter_config.json byte for byte, and the tensors by their header and (where the
 * numbers come from extract's decomposition or the exact SVD of an adapter's factors) a SHA-256
 * of adapter_model.safetensors. The literals were produced by the implementation in which two
 * post-hoc config rewriters patched the writer's output (extract/moe.ts rewriteConfigForExperts,
 * edit/edit-experts.ts restoreExpertConfig); the writer now builds the same files itself.
 *
 * The pair: three layers, 2 experts of 12×16 (gate_up) and 16×6 (down), qwen3_moe (out-in).
 * Layer 0 changes q_proj (rank 2), o_proj (rank 3), gate_up (expert e rank e + 1) and down
 * (expert 1, rank 2); layer 1 q_proj and gate_up (rank 1 each), its down_proj does not change (so
 * it stays listed, nested as planned); layer 2 q_proj only (its experts are not listed).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLora } from '../../src/extract/index.js';
import { editAdapter, editDelta } from '../../src/edit/edit.js';
import { getBackend } from '../../src/linalg/index.js';
import { createAdapterSink } from '../../src/lora/sink.js';
import { createRng } from '../../src/linalg/random.js';
import { openSafetensors, writeSafetensorsFile } from '../../src/io/safetensors.js';
import type { LinalgBackend } from '../../src/linalg/backend.js';
import { planted, withDeltas, writePair, type Tensors } from '../helpers/extract.js';
import { makeTempDir } from '../helpers/synthetic.js';

const E = 2;
const H = 16;
const I = 6;
const L = (l: number, rest: string) => `model.layers.${l}.${rest}`;

function noise(shape: number[], seed: number): { shape: number[]; data: Float32Array } {
  const data = new Float32Array(shape.reduce((x, y) => x * y, 1));
  createRng(seed).fillNormal(data);
  for (let i = 0; i < data.length; i++) data[i] *= 0.02;
  return { shape, data };
}

/** [E, out, in] from each expert's out × in ΔW (a missing expert does not change). */
function stacked(perExpert: Array<Float32Array | undefined>, out: number, inF: number): Float32Array {
  const data = new Float32Array(E * out * inF);
  perExpert.forEach((w, e) => w && data.set(w, e * out * inF));
  return data;
}

function moePair(): { a: Tensors; b: Tensors } {
  const a: Tensors = {};
  let seed = 1;
  for (let l = 0; l < 3; l++) {
    a[L(l, 'self_attn.q_proj.weight')] = noise([H, H], seed++);
    a[L(l, 'self_attn.o_proj.weight')] = noise([H, H], seed++);
    a[L(l, 'mlp.experts.gate_up_proj')] = noise([E, 2 * I, H], seed++);
    a[L(l, 'mlp.experts.down_proj')] = noise([E, H, I], seed++);
  }
  const b = withDeltas(a, {
    [L(0, 'self_attn.q_proj.weight')]: planted(H, H, [0.2, 0.1], 70),
    [L(0, 'self_attn.o_proj.weight')]: planted(H, H, [0.3, 0.2, 0.1], 71),
    [L(0, 'mlp.experts.gate_up_proj')]: stacked([planted(2 * I, H, [0.3], 72), planted(2 * I, H, [0.3, 0.2], 73)], 2 * I, H),
    [L(0, 'mlp.experts.down_proj')]: stacked([undefined, planted(H, I, [0.3, 0.1], 74)], H, I),
    [L(1, 'self_attn.q_proj.weight')]: planted(H, H, [0.2, 0.1], 75),
    [L(1, 'mlp.experts.gate_up_proj')]: stacked([planted(2 * I, H, [0.25], 76), planted(2 * I, H, [0.2], 77)], 2 * I, H),
    [L(2, 'self_attn.q_proj.weight')]: planted(H, H, [0.2], 78),
  });
  return { a, b };
}

/**
 * An adapter as PEFT saves one (not as loraforge writes it): target_parameters as path suffixes,
 * unsorted, and a 2-D parameter; a per-parameter rank and alpha; an extra key; a saved whole tensor.
 */
const HAND_CONFIG = {
  peft_type: 'LORA',
  r: 2,
  lora_alpha: 4,
  target_modules: ['q_proj'],
  target_parameters: ['mlp.experts.gate_up_proj', 'model.layers.0.mlp.experts.down_proj', 'self_attn.o_proj.weight'],
  rank_pattern: { 'layers.0.mlp.experts.down_proj': 3 },
  alpha_pattern: { 'layers.1.mlp.experts.gate_up_proj': 5 },
  layers_pattern: null,
  modules_to_save: ['norm'],
};

async function writeHandAdapter(dir: string): Promise<void> {
  const P = 'base_model.model.';
  const mods: Array<[key: string, r: number, out: number, inF: number]> = [
    [L(0, 'self_attn.q_proj'), 2, H, H],
    [L(0, 'self_attn.o_proj'), 2, H, H],
    [L(0, 'mlp.experts.base_layer'), 2 * E, 2 * I, H],
    [L(0, 'mlp.experts'), 3 * E, H, I],
    [L(1, 'self_attn.q_proj'), 2, H, H],
    [L(1, 'mlp.experts'), 2 * E, 2 * I, H],
  ];
  const tensors: Array<{ name: string; shape: number[]; data: Float32Array }> = [];
  let seed = 100;
  for (const [key, r, out, inF] of mods) {
    tensors.push({ name: `${P}${key}.lora_A.weight`, ...noise([r, inF], seed++) });
    tensors.push({ name: `${P}${key}.lora_B.weight`, ...noise([out, r], seed++) });
  }
  tensors.push({ name: `${P}model.norm.weight`, ...noise([H], seed++) });
  await mkdir(dir, { recursive: true });
  await writeSafetensorsFile(join(dir, 'adapter_model.safetensors'), tensors.map((t) => ({ ...t, dtype: 'F32' as const })));
  await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(HAND_CONFIG, null, 2));
}

let root: string;
let pair: { a: string; b: string };
let backend: LinalgBackend;
before(async () => {
  root = await makeTempDir('loraforge-stack-output-');
  const { a, b } = moePair();
  pair = await writePair(join(root, 'pair'), a, b, { dtype: 'F32', config: { model_type: 'qwen3_moe', hidden_size: H, num_local_experts: E } });
  backend = await getBackend({ prefer: 'ref' });
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Written {
  config: string;
  header: string[];
  sha256: string;
}

async function written(dir: string): Promise<Written> {
  // base_model_name_or_path names the temporary pair
  const config = (await readFile(join(dir, 'adapter_config.json'), 'utf8')).split(root).join('<root>');
  const weights = join(dir, 'adapter_model.safetensors');
  const file = await openSafetensors(weights);
  try {
    const header = file.list().map((t) => `${t.name} ${t.dtype} ${t.shape.join('x')}`);
    const sha256 = createHash('sha256').update(await readFile(weights)).digest('hex');
    return { config, header, sha256 };
  } finally {
    await file.close();
  }
}

/** `got` against the pinned literals: the config as written (JSON.stringify(…, null, 2) + newline, key order included). */
function assertSame(got: Written, config: Record<string, unknown>, header: string[], sha256?: string): void {
  if (process.env.PRINT_EXPECTED) console.log('EXPECTED ' + JSON.stringify({ ...got, config: JSON.parse(got.config) }));
  assert.equal(got.config, JSON.stringify(config, null, 2) + '\n');
  assert.deepEqual(got.header, header);
  if (sha256 !== undefined) assert.equal(got.sha256, sha256);
}

describe('expert stacks: the files extract and edit write stay as before', () => {
  it('extract (energy policy, alpha = rank)', async () => {
    const out = join(root, 'extract-energy');
    await extractLora({ modelA: pair.a, modelB: pair.b, out, policy: { mode: 'energy', energy: 0.9999, maxRank: 8 }, backend });
    assertSame(await written(out), EXTRACT_ENERGY.config, EXTRACT_ENERGY.header, EXTRACT_ENERGY.sha256);
  });

  it('extract (fixed rank, one alpha, expert tensors only)', async () => {
    const out = join(root, 'extract-experts');
    await extractLora({ modelA: pair.a, modelB: pair.b, out, policy: { mode: 'rank', rank: 2 }, alpha: 4, include: /experts/, backend });
    assertSame(await written(out), EXTRACT_EXPERTS.config, EXTRACT_EXPERTS.header, EXTRACT_EXPERTS.sha256);
  });

  it('edit from a model pair', async () => {
    const out = join(root, 'edit-delta');
    await editDelta({ backend, modelA: pair.a, modelB: pair.b, rank: 2, out, edit: { zero: [1] }, select: { layers: new Set([0]) } });
    // the factors come from edit's randomized SVD, whose settings are not this test's business: header only
    assertSame(await written(out), EDIT_DELTA.config, EDIT_DELTA.header);
  });

  it('edit of an extracted adapter', async () => {
    const out = join(root, 'edit-extracted');
    const adapter = join(root, 'extract-energy');
    await editAdapter({ backend, adapter, out, edit: { keep: [0] }, select: { layers: new Set([0]) } });
    assertSame(await written(out), EDIT_EXTRACTED.config, EDIT_EXTRACTED.header, EDIT_EXTRACTED.sha256);
  });

  it('edit of an adapter PEFT saved (suffix target_parameters, a 2-D parameter, saved tensors)', async () => {
    const adapter = join(root, 'hand');
    await writeHandAdapter(adapter);
    const out = join(root, 'edit-hand');
    await editAdapter({ backend, adapter, out, edit: { zero: [0] }, select: { layers: new Set([1]) } });
    assertSame(await written(out), EDIT_HAND.config, EDIT_HAND.header, EDIT_HAND.sha256);
  });
});

describe('the adapter writer takes expert stacks itself', () => {
  const GU = L(0, 'mlp.experts.gate_up_proj');
  const DN = L(0, 'mlp.experts.down_proj');
  const factors = (rows: number, cols: number) => ({ rows, cols, data: new Float32Array(rows * cols).fill(0.5) });

  it('saves a stack where PEFT nests it (declared siblings count), and lists the siblings', async () => {
    const dir = join(root, 'writer');
    const sink = await createAdapterSink(dir, { format: 'peft', experts: { parameters: [DN, GU], source: 'new', ggufRefusal: 'unused' } });
    assert.equal(await sink.addExpertStack({ parameter: GU, count: E, A: factors(2 * E, H), B: factors(2 * I, 2 * E), alpha: 2 }), L(0, 'mlp.experts.base_layer'));
    await assert.rejects(sink.addExpertStack({ parameter: L(1, 'mlp.experts.down_proj'), count: E, A: factors(E, I), B: factors(H, E), alpha: 1 }), /internal error.*was not declared/);
    await sink.finish();
    const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
    assert.deepEqual([config.target_parameters, config.target_modules, config.r, config.lora_alpha], [[DN, GU], [], 2, 2]);
  });

  it('a GGUF output (gguf or both) is refused with the command’s sentence before anything is written', async () => {
    for (const format of ['gguf', 'both'] as const) {
      const dir = join(root, `refused-${format}`);
      await mkdir(dir);
      await assert.rejects(
        createAdapterSink(dir, { format, baseConfig: { model_type: 'qwen3_moe' }, experts: { parameters: [GU], source: 'new', ggufRefusal: 'stacks cannot go to GGUF' } }),
        { message: 'stacks cannot go to GGUF' },
      );
      assert.deepEqual(await readdir(dir), []);
    }
  });
});

// ---- literals from the implementation before the writer took expert stacks; the configs since one rule for
// new and edited adapters: a stack counts at its per-expert r for the common r/lora_alpha, patterns in writing order ----
const EXTRACT_ENERGY = {
  config: {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: '<root>/pair/a',
    r: 2,
    lora_alpha: 2,
    target_modules: [
      'o_proj',
      'q_proj',
    ],
    rank_pattern: {
      'layers.0.self_attn.o_proj': 3,
      'layers.1.mlp.experts.gate_up_proj': 1,
      'layers.2.self_attn.q_proj': 1,
    },
    alpha_pattern: {
      'layers.0.self_attn.o_proj': 3,
      'layers.1.mlp.experts.gate_up_proj': 1,
      'layers.2.self_attn.q_proj': 1,
    },
    lora_dropout: 0,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    inference_mode: true,
    target_parameters: [
      'model.layers.0.mlp.experts.down_proj',
      'model.layers.0.mlp.experts.gate_up_proj',
      'model.layers.1.mlp.experts.down_proj',
      'model.layers.1.mlp.experts.gate_up_proj',
    ]
  },
  header: [
    'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight F32 2x16',
    'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight F32 16x2',
    'base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight F32 3x16',
    'base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight F32 16x3',
    'base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight F32 4x16',
    'base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight F32 12x4',
    'base_model.model.model.layers.0.mlp.experts.lora_A.weight F32 4x6',
    'base_model.model.model.layers.0.mlp.experts.lora_B.weight F32 16x4',
    'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight F32 2x16',
    'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight F32 16x2',
    'base_model.model.model.layers.1.mlp.experts.base_layer.lora_A.weight F32 2x16',
    'base_model.model.model.layers.1.mlp.experts.base_layer.lora_B.weight F32 12x2',
    'base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight F32 1x16',
    'base_model.model.model.layers.2.self_attn.q_proj.lora_B.weight F32 16x1',
  ],
  sha256: '509955d899f0c8dff3c76f11f5516a694f2749d0aeff374333ca5eb1c5045220',
};

const EXTRACT_EXPERTS = {
  config: {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: '<root>/pair/a',
    r: 2,
    lora_alpha: 4,
    target_modules: [],
    rank_pattern: {},
    alpha_pattern: {},
    lora_dropout: 0,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    inference_mode: true,
    target_parameters: [
      'model.layers.0.mlp.experts.down_proj',
      'model.layers.0.mlp.experts.gate_up_proj',
      'model.layers.1.mlp.experts.down_proj',
      'model.layers.1.mlp.experts.gate_up_proj',
    ]
  },
  header: [
    'base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight F32 4x16',
    'base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight F32 12x4',
    'base_model.model.model.layers.0.mlp.experts.lora_A.weight F32 4x6',
    'base_model.model.model.layers.0.mlp.experts.lora_B.weight F32 16x4',
    'base_model.model.model.layers.1.mlp.experts.base_layer.lora_A.weight F32 4x16',
    'base_model.model.model.layers.1.mlp.experts.base_layer.lora_B.weight F32 12x4',
  ],
  sha256: '16b4117d43382c31a2c7fbd110cf1b5f211d08ced6c91d3b3ef962c01f6debe5',
};

const EDIT_DELTA = {
  config: {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: '<root>/pair/a',
    r: 1,
    lora_alpha: 2,
    target_modules: [
      'o_proj',
      'q_proj',
    ],
    rank_pattern: {
      'layers.1.mlp.experts.gate_up_proj': 2,
      'layers.1.self_attn.q_proj': 2,
      'layers.2.self_attn.q_proj': 2,
    },
    alpha_pattern: {},
    lora_dropout: 0,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    inference_mode: true,
    target_parameters: [
      'model.layers.0.mlp.experts.down_proj',
      'model.layers.0.mlp.experts.gate_up_proj',
      'model.layers.1.mlp.experts.down_proj',
      'model.layers.1.mlp.experts.gate_up_proj',
    ]
  },
  header: [
    'base_model.model.model.layers.0.mlp.experts.lora_A.weight F32 2x6',
    'base_model.model.model.layers.0.mlp.experts.lora_B.weight F32 16x2',
    'base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight F32 2x16',
    'base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight F32 12x2',
    'base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight F32 1x16',
    'base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight F32 16x1',
    'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight F32 1x16',
    'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight F32 16x1',
    'base_model.model.model.layers.1.mlp.experts.base_layer.lora_A.weight F32 4x16',
    'base_model.model.model.layers.1.mlp.experts.base_layer.lora_B.weight F32 12x4',
    'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight F32 2x16',
    'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight F32 16x2',
    'base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight F32 2x16',
    'base_model.model.model.layers.2.self_attn.q_proj.lora_B.weight F32 16x2',
  ]
};

const EDIT_EXTRACTED = {
  config: {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: '<root>/pair/a',
    r: 1,
    lora_alpha: 2,
    target_modules: [
      'o_proj',
      'q_proj',
    ],
    rank_pattern: {
      'layers.1.self_attn.q_proj': 2,
    },
    alpha_pattern: {
      'layers.0.self_attn.o_proj': 3,
      'layers.1.mlp.experts.gate_up_proj': 1,
      'layers.2.self_attn.q_proj': 1,
    },
    lora_dropout: 0,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    modules_to_save: null,
    inference_mode: true,
    target_parameters: [
      'model.layers.0.mlp.experts.down_proj',
      'model.layers.0.mlp.experts.gate_up_proj',
      'model.layers.1.mlp.experts.down_proj',
      'model.layers.1.mlp.experts.gate_up_proj',
    ]
  },
  header: [
    'base_model.model.model.layers.0.mlp.experts.lora_A.weight F32 2x6',
    'base_model.model.model.layers.0.mlp.experts.lora_B.weight F32 16x2',
    'base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight F32 2x16',
    'base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight F32 12x2',
    'base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight F32 1x16',
    'base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight F32 16x1',
    'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight F32 1x16',
    'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight F32 16x1',
    'base_model.model.model.layers.1.mlp.experts.base_layer.lora_A.weight F32 2x16',
    'base_model.model.model.layers.1.mlp.experts.base_layer.lora_B.weight F32 12x2',
    'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight F32 2x16',
    'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight F32 16x2',
    'base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight F32 1x16',
    'base_model.model.model.layers.2.self_attn.q_proj.lora_B.weight F32 16x1',
  ],
  sha256: '8fba1675594726a8a420d73fe5e32c3df247c10eea6c79c2e729a9c2ff7d08b9',
};

const EDIT_HAND = {
  config: {
    peft_type: 'LORA',
    r: 2,
    lora_alpha: 4,
    target_modules: [
      'o_proj',
      'q_proj',
    ],
    target_parameters: [
      'mlp.experts.gate_up_proj',
      'model.layers.0.mlp.experts.down_proj',
      'self_attn.o_proj.weight',
    ],
    rank_pattern: {
      'layers.0.mlp.experts.down_proj': 3,
      'layers.1.mlp.experts.gate_up_proj': 1,
      'layers.1.self_attn.q_proj': 1,
    },
    alpha_pattern: {
      'layers.1.mlp.experts.gate_up_proj': 5,
    },
    layers_pattern: null,
    modules_to_save: [
      'norm',
    ],
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: null,
    lora_dropout: 0,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    inference_mode: true,
  },
  header: [
    'base_model.model.model.layers.0.mlp.experts.lora_A.weight F32 6x6',
    'base_model.model.model.layers.0.mlp.experts.lora_B.weight F32 16x6',
    'base_model.model.model.layers.0.mlp.experts.base_layer.lora_A.weight F32 4x16',
    'base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight F32 12x4',
    'base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight F32 2x16',
    'base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight F32 16x2',
    'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight F32 2x16',
    'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight F32 16x2',
    'base_model.model.model.layers.1.mlp.experts.lora_A.weight F32 2x16',
    'base_model.model.model.layers.1.mlp.experts.lora_B.weight F32 12x2',
    'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight F32 1x16',
    'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight F32 16x1',
    'base_model.model.model.norm.weight F32 16',
  ],
  sha256: '49171862c9330206d194cb9a7267e5ef49bb1bd6e543445413c875cfe30f5c94',
};
