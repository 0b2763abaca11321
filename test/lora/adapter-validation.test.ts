/**
 * Adapters whose config and tensors disagree (issue 13, "exit 0 with wrong numbers" 3 and
 * "accepted though invalid"): the shared reader refuses them as PEFT would, so apply,
 * merge-adapters, spectrum, edit and convert all stop with the same message.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { randomMat, writePeftFixture, type PeftModuleFixture } from '../helpers/dora.js';
import { tinyTensors } from '../helpers/merge.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { openPeftAdapter } from '../../src/lora/adapter.js';
import { writeSafetensorsFile } from '../../src/io/safetensors.js';
import { getBackend } from '../../src/linalg/index.js';
import { mergeAdapters } from '../../src/merge-adapters/index.js';
import { adapterSpectrum } from '../../src/spectrum/spectrum.js';
import { editAdapter } from '../../src/edit/edit.js';
import { convertAdapter } from '../../src/convert/convert.js';

const Q = 'model.layers.0.self_attn.q_proj';
const V = 'model.layers.0.self_attn.v_proj';
const EMB = 'model.embed_tokens';

function linear(name: string, rank: number, seed: number, out = 8): PeftModuleFixture {
  return { name, kind: 'linear', A: randomMat(rank, 8, seed, 0.1), B: randomMat(out, rank, seed + 1, 0.1) };
}

let root: string;
let base: string;
const dir = (name: string) => join(root, name);
before(async () => {
  root = await makeTempDir('loraforge-adapter-validation-');
  base = dir('base');
  await writeModelFolder(base, tinyTensors({ seed: 1 }), { config: { architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 8, num_hidden_layers: 3, vocab_size: 12 } });
  // r says 4, the tensors have rank 2: PEFT fails to load this (size mismatch); apply scaled by alpha/2
  await writePeftFixture(dir('r-mismatch'), { config: { r: 4, lora_alpha: 8, target_modules: ['q_proj'] }, modules: [linear(Q, 2, 1)] });
  await writePeftFixture(dir('good'), { config: { r: 2, lora_alpha: 4, target_modules: ['q_proj'] }, modules: [linear(Q, 2, 3)] });
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

const rMismatch = /r-mismatch\/adapter_model\.safetensors: module "model\.layers\.0\.self_attn\.q_proj": adapter_config\.json gives it "r": 4, but lora_A is 2×8 \(rank 2\); PEFT refuses/;

describe('config r against the tensors', () => {
  it('every command refuses an r that is not the tensors’ rank, naming module, r and shape', async () => {
    const backend = await getBackend();
    await assert.rejects(openPeftAdapter(dir('r-mismatch')), rMismatch);
    await assert.rejects(mergeAdapters({ adapters: [{ path: dir('good'), weight: 1 }, { path: dir('r-mismatch'), weight: 1 }], method: 'linear', out: dir('o1') }), rMismatch);
    await assert.rejects(adapterSpectrum({ backend, adapter: dir('r-mismatch') }), rMismatch);
    await assert.rejects(editAdapter({ backend, adapter: dir('r-mismatch'), out: dir('o2'), edit: { zero: [0] } }), rMismatch);
    await assert.rejects(convertAdapter({ adapter: dir('r-mismatch'), base, out: dir('o3') }), rMismatch);
    const r = await runCli(['apply', '--base', base, '--adapter', dir('r-mismatch'), '--out', dir('o4')]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, rMismatch);
  });

  it('rank_pattern decides per module (PEFT’s suffix regex); a wrong entry is named', async () => {
    const modules = [linear(Q, 4, 5), linear(V, 2, 7, 4)];
    await writePeftFixture(dir('pattern'), { config: { r: 2, lora_alpha: 2, rank_pattern: { 'self_attn.q_proj': 4 }, target_modules: ['q_proj', 'v_proj'] }, modules });
    const ok = await openPeftAdapter(dir('pattern'));
    assert.deepEqual(ok.modules.map((m) => [m.name, m.rank, m.scaling]), [[Q, 4, 0.5], [V, 2, 1]]);
    await ok.close();
    await writePeftFixture(dir('bad-pattern'), { config: { r: 4, lora_alpha: 2, rank_pattern: { 'v_proj': 3 }, target_modules: ['q_proj', 'v_proj'] }, modules });
    await assert.rejects(openPeftAdapter(dir('bad-pattern')), /module "model\.layers\.0\.self_attn\.v_proj": adapter_config\.json gives it rank_pattern entry "v_proj": 3, but lora_A is 2×8 \(rank 2\)/);
  });

  it('embedding LoRA and EDoRA are checked on their own factors', async () => {
    const emb: PeftModuleFixture = { name: EMB, kind: 'embedding', A: randomMat(3, 12, 9), B: randomMat(8, 3, 10) };
    await writePeftFixture(dir('emb'), { config: { r: 2, lora_alpha: 2, target_modules: ['embed_tokens'] }, modules: [emb] });
    await assert.rejects(openPeftAdapter(dir('emb')), /module "model\.embed_tokens": adapter_config\.json gives it "r": 2, but lora_embedding_A is 3×12 \(rank 3\)/);
    const edora = { ...linear(Q, 2, 11), magnitude: Array(8).fill(1), latent: randomMat(2, 2, 12) };
    await writePeftFixture(dir('edora'), { config: { r: 2, lora_alpha: 2, use_dora: true, target_modules: ['q_proj'] }, modules: [edora] });
    const ok = await openPeftAdapter(dir('edora'));
    assert.equal(ok.modules[0].rank, 2);
    await ok.close();
  });

  it('r: 0, a fractional r and an adapter without tensors are refused', async () => {
    await writePeftFixture(dir('r0'), { config: { r: 0, lora_alpha: 2, target_modules: ['q_proj'] }, modules: [linear(Q, 2, 13)] });
    await assert.rejects(openPeftAdapter(dir('r0')), /r0\/adapter_config\.json: "r" is 0; a LoRA rank must be a positive integer/);
    await writePeftFixture(dir('r1.5'), { config: { r: 1.5, lora_alpha: 2, target_modules: ['q_proj'] }, modules: [linear(Q, 2, 13)] });
    await assert.rejects(openPeftAdapter(dir('r1.5')), /"r" is 1\.5; a LoRA rank must be a positive integer/);
    await mkdir(dir('empty'));
    await writeSafetensorsFile(join(dir('empty'), 'adapter_model.safetensors'), []);
    await writeFile(join(dir('empty'), 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 2 }));
    await assert.rejects(openPeftAdapter(dir('empty')), /empty\/adapter_model\.safetensors holds no tensors/);
  });
});

describe('use_dora: true without magnitude vectors', () => {
  it('is refused by every reader, naming the missing tensor (not read as plain LoRA)', async () => {
    await writePeftFixture(dir('no-mag'), { config: { r: 2, lora_alpha: 2, use_dora: true, target_modules: ['q_proj'] }, modules: [linear(Q, 2, 15)] });
    const missing = /no-mag: adapter_config\.json has use_dora: true but module "model\.layers\.0\.self_attn\.q_proj" has no tensor "base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_magnitude_vector"/;
    const backend = await getBackend();
    await assert.rejects(mergeAdapters({ adapters: [{ path: dir('no-mag'), weight: 1 }], method: 'linear', out: dir('o5') }), missing);
    await assert.rejects(adapterSpectrum({ backend, adapter: dir('no-mag') }), missing);
    await assert.rejects(editAdapter({ backend, adapter: dir('no-mag'), out: dir('o6'), edit: { zero: [0] } }), missing);
  });
});
