/**
 * The fault corpus: small, valid inputs generated at test time plus the broken things around
 * them (a regular file where a folder is expected, a symlink loop, a dangling link). Each fault
 * test derives its bad case from these in a few lines, so new cases join without new fixtures.
 */
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createGgufSink, GgufValueType, kvArray, kvString, kvU32 } from '../../src/io/gguf.js';
import { createRng } from '../../src/linalg/random.js';
import { writePeftFixture } from '../helpers/dora.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';

const HIDDEN = 8;
const FF = 16;
const VOCAB = 16;

export interface FaultCorpus {
  root: string;
  /** a one-layer Llama folder (config.json + model.safetensors, no tokenizer files) */
  model: string;
  /** a GGUF holding only a tokenizer matching `model`'s vocabulary, for to-gguf --vocab-from */
  vocab: string;
  /** a PEFT LoRA adapter (rank 2 on q_proj and v_proj) for `model` */
  adapter: string;
  /** a regular file (paths "under" it fail with ENOTDIR) */
  file: string;
  /** loop1 → loop2 → loop1 */
  loop: string;
  /** a symbolic link to nothing */
  dangling: string;
  remove(): Promise<void>;
}

function random(shape: number[], seed: number): { shape: number[]; data: Float32Array } {
  const rng = createRng(seed);
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = (rng.next() - 0.5) * 0.2;
  return { shape, data };
}

function mat(rows: number, cols: number, seed: number): number[][] {
  const { data } = random([rows, cols], seed);
  return Array.from({ length: rows }, (_, i) => Array.from(data.subarray(i * cols, (i + 1) * cols)));
}

export async function makeFaultCorpus(): Promise<FaultCorpus> {
  const root = await makeTempDir('loraforge-faults-');
  const model = join(root, 'model');
  await writeModelFolder(
    model,
    {
      'model.embed_tokens.weight': random([VOCAB, HIDDEN], 1),
      'model.layers.0.input_layernorm.weight': random([HIDDEN], 2),
      'model.layers.0.self_attn.q_proj.weight': random([HIDDEN, HIDDEN], 3),
      'model.layers.0.self_attn.k_proj.weight': random([HIDDEN, HIDDEN], 4),
      'model.layers.0.self_attn.v_proj.weight': random([HIDDEN, HIDDEN], 5),
      'model.layers.0.self_attn.o_proj.weight': random([HIDDEN, HIDDEN], 6),
      'model.layers.0.post_attention_layernorm.weight': random([HIDDEN], 7),
      'model.layers.0.mlp.gate_proj.weight': random([FF, HIDDEN], 8),
      'model.layers.0.mlp.up_proj.weight': random([FF, HIDDEN], 9),
      'model.layers.0.mlp.down_proj.weight': random([HIDDEN, FF], 10),
      'model.norm.weight': random([HIDDEN], 11),
      'lm_head.weight': random([VOCAB, HIDDEN], 12),
    },
    {
      config: {
        architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: HIDDEN, intermediate_size: FF,
        num_attention_heads: 2, num_key_value_heads: 2, num_hidden_layers: 1, vocab_size: VOCAB,
        max_position_embeddings: 64, rms_norm_eps: 1e-5,
      },
    },
  );

  const vocab = join(root, 'vocab.gguf');
  const tokens = Array.from({ length: VOCAB }, (_, i) => `tok${i}`);
  const sink = await createGgufSink(vocab, {
    kv: [
      ['general.architecture', kvString('llama')],
      ['tokenizer.ggml.model', kvString('llama')],
      ['tokenizer.ggml.tokens', kvArray(GgufValueType.STRING, tokens)],
      ['tokenizer.ggml.token_type', kvArray(GgufValueType.INT32, tokens.map(() => 1))],
      ['tokenizer.ggml.bos_token_id', kvU32(1)],
    ],
  });
  await sink.finish();

  const adapter = join(root, 'adapter');
  await writePeftFixture(adapter, {
    config: { r: 2, lora_alpha: 4, target_modules: ['q_proj', 'v_proj'] },
    modules: ['q_proj', 'v_proj'].map((m, i) => ({
      name: `model.layers.0.self_attn.${m}`,
      kind: 'linear' as const,
      A: mat(2, HIDDEN, 20 + i),
      B: mat(HIDDEN, 2, 30 + i),
    })),
  });

  const file = join(root, 'file');
  await writeFile(file, 'not a folder\n');
  const loop = join(root, 'loop1');
  await symlink('loop2', loop);
  await symlink('loop1', join(root, 'loop2'));
  const dangling = join(root, 'dangling');
  await symlink(join(root, 'nowhere'), dangling);
  await mkdir(join(root, 'work'));

  return { root, model, vocab, adapter, file, loop, dangling, remove: () => rm(root, { recursive: true, force: true }) };
}
