import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/synthetic.js';
import { runCli } from '../helpers/cli.js';
import { extractOptionsFromFlags } from '../../src/cli/extract.js';
import { UsageError } from '../../src/cli/errors.js';
import { SDXL_SHAPES, baseOf, plantAll, writeDiffusionPair } from '../helpers/diffusion.js';

let root: string;
before(async () => {
  root = await makeTempDir('loraforge-extract-diffusion-cli-');
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

const flags = (extra: Record<string, string | boolean>) => ({ modelA: 'a', modelB: 'b', out: 'lora.safetensors', seed: '0', ...extra });

describe('extract CLI: diffusion flags', () => {
  it('--conv_dim is --conv-rank; both, or either with a folder --out, or LLM flags with a file --out, are usage errors', () => {
    assert.deepEqual(extractOptionsFromFlags(flags({ conv_dim: '8' })).convPolicy, { mode: 'rank', rank: 8 });
    assert.deepEqual(extractOptionsFromFlags(flags({ convRank: '4' })).convPolicy, { mode: 'rank', rank: 4 });
    assert.throws(() => extractOptionsFromFlags(flags({ convRank: '4', conv_dim: '4' })), UsageError);
    assert.throws(() => extractOptionsFromFlags(flags({ out: 'adapter', convRank: '4' })), /\.safetensors/);
    assert.throws(() => extractOptionsFromFlags(flags({ out: 'adapter', textEncoders: true })), UsageError);
    assert.throws(() => extractOptionsFromFlags(flags({ format: 'gguf' })), /LoRA file for diffusion checkpoints.*--format/);
  });

  it('writes one kohya file with its report beside it (exit 0)', async () => {
    const a = baseOf(SDXL_SHAPES, 1);
    const p = await writeDiffusionPair(root, a, plantAll(a, ['model.diffusion_model.input_blocks.1.0.out_layers.3.weight', 'model.diffusion_model.input_blocks.4.1.proj_in.weight']).b);
    const out = join(root, 'lora.safetensors');
    const r = await runCli(['extract', '--model-a', p.a, '--model-b', p.b, '--out', out, '--rank', '2', '--conv_dim', '2', '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Extracted 2 LoRA module\(s\).*\(kohya, F32\)/);
    assert.match(r.stdout, /lora\.report\.json/);
  });
});
