/**
 * One target classifier for extract, spectrum and edit (issue 15): an MoE router
 * (`mlp.gate.weight`), a shared-expert gate and a 2-D `rotary_emb.weight` are no LoRA target.
 * edit used to write a LoRA for them and spectrum gave them a spectrum; now all three commands
 * leave them out and list them as differing non-targets, with their relative change.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { classifyTensor, mayBeTarget } from '../../src/delta/targets.js';
import { editDelta } from '../../src/edit/edit.js';
import { extractLora } from '../../src/extract/index.js';
import { getBackend } from '../../src/linalg/index.js';
import { deltaSpectrum } from '../../src/spectrum/spectrum.js';
import { runCli } from '../helpers/cli.js';
import { addInto, planted, writePair, type Tensors } from '../helpers/extract.js';
import { makeTempDir } from '../helpers/synthetic.js';

const H = 16;
const Q = 'model.layers.0.self_attn.q_proj.weight';
const NON_TARGETS = ['model.layers.0.mlp.gate.weight', 'model.layers.0.mlp.shared_expert_gate.weight', 'model.layers.0.self_attn.rotary_emb.weight'];
const SHAPES: Record<string, number[]> = {
  [Q]: [H, H],
  [NON_TARGETS[0]]: [4, H],
  [NON_TARGETS[1]]: [1, H],
  [NON_TARGETS[2]]: [8, H],
  'model.layers.0.input_layernorm.weight': [H],
};

let root: string;
let pair: { a: string; b: string };
before(async () => {
  root = await makeTempDir('loraforge-targets-');
  const a: Tensors = {};
  for (const [name, shape] of Object.entries(SHAPES)) {
    const n = shape.reduce((x, y) => x * y, 1);
    a[name] = { shape, data: Float32Array.from({ length: n }, (_, i) => 0.5 + Math.sin(i + name.length)) };
  }
  // every 2-D tensor differs by a rank-1 update, the norm does not
  const b: Tensors = { ...a };
  for (const name of [Q, ...NON_TARGETS]) b[name] = { shape: a[name].shape, data: addInto(a[name].data, planted(a[name].shape[0], H, [0.3], 7)) };
  pair = await writePair(join(root, 'pair'), a, b, { dtype: 'F32' });
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('one target classifier', () => {
  it('classifies the router, the shared-expert gate and rotary_emb as no target', () => {
    for (const name of NON_TARGETS) assert.deepEqual(classifyTensor(name, SHAPES[name]), { kind: 'other' }, name);
    assert.equal(classifyTensor(Q, SHAPES[Q]).kind, 'linear');
  });

  it('extract, edit and spectrum target the same tensors and list the same differing non-targets', async () => {
    const backend = await getBackend({ prefer: 'ref' });
    const extracted = await extractLora({ modelA: pair.a, modelB: pair.b, out: join(root, 'extract'), policy: { mode: 'rank', rank: 2 }, backend });
    assert.deepEqual(extracted.tensors.map((t) => t.name), [Q]);
    assert.deepEqual(extracted.nonTargetDiffering.map((t) => t.name).sort(), NON_TARGETS);

    const edited = await editDelta({ backend, modelA: pair.a, modelB: pair.b, rank: 2, out: join(root, 'edit'), edit: { scale: new Map([[0, 2]]) } });
    assert.deepEqual(edited.modules.map((m) => m.name), ['model.layers.0.self_attn.q_proj'], 'no LoRA for the router, gate or rotary_emb');
    const config = JSON.parse(await readFile(join(root, 'edit', 'adapter_config.json'), 'utf8')) as { target_modules: string[] };
    assert.deepEqual(config.target_modules, ['q_proj']);
    assert.deepEqual(edited.nonTargetDiffering.map((t) => t.name), NON_TARGETS);
    assert.deepEqual(edited.skipped.map((t) => t.name), ['model.layers.0.input_layernorm.weight'], 'the unchanged norm stays among the skipped');

    const spectrum = await deltaSpectrum({ backend, modelA: pair.a, modelB: pair.b, top: 4 });
    assert.deepEqual(spectrum.tensors.map((t) => t.name), [Q], 'no spectrum entry for the non-targets');
    assert.deepEqual(spectrum.nonTargetDiffering?.map((t) => t.name), NON_TARGETS);
    assert.deepEqual(spectrum.changed1d, []);

    // the relative changes agree with extract's
    const byName = new Map(extracted.nonTargetDiffering.map((t) => [t.name, t.relChange]));
    for (const t of [...edited.nonTargetDiffering, ...spectrum.nonTargetDiffering!]) {
      assert.ok(Math.abs(t.relChange! - byName.get(t.name)!) < 1e-12, `${t.name}: ${t.relChange} vs ${byName.get(t.name)}`);
    }
  });

  it('edit says so in the terminal', async () => {
    const edit = await runCli(['edit', '--model-a', pair.a, '--model-b', pair.b, '--rank', '2', '--zero', '0', '--out', join(root, 'edit-cli'), '--quiet']);
    assert.equal(edit.code, 0, edit.stderr);
    assert.match(edit.stdout, /3 tensor\(s\) outside the LoRA targets differ, not written \(as extract\): model\.layers\.0\.mlp\.gate\.weight/);
  });
});

describe('mayBeTarget (which tensors a Hub download must bring, before shapes are known)', () => {
  it('accepts what classifyTensor could target with some shape, and embeddings only when asked', () => {
    const sel = { targetModules: ['q_proj', 'gate_up_proj'] };
    assert.equal(mayBeTarget('model.layers.0.self_attn.q_proj.weight', sel, false), true);
    assert.equal(mayBeTarget('model.layers.0.self_attn.k_proj.weight', sel, false), false);
    assert.equal(mayBeTarget('model.layers.0.mlp.experts.gate_up_proj', sel, false), true);
    assert.equal(mayBeTarget('model.norm.weight', sel, false), false);
    assert.equal(mayBeTarget('model.embed_tokens.weight', sel, false), false);
    assert.equal(mayBeTarget('lm_head.weight', sel, true), true);
    assert.equal(mayBeTarget('model.layers.1.self_attn.q_proj.weight', { include: /layers\.0\./ }, false), false);
    assert.equal(mayBeTarget('model.layers.0.self_attn.q_proj.weight', { include: /layers\.0\./ }, false), true);
  });
});
