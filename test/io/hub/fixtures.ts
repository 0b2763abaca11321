/** The repos the Hub tests serve: a small one (with a nested folder and a .bin never fetched) and a two-shard one with an index. */
import { createHash } from 'node:crypto';
import { safetensorsBytes, type MockRepo } from '../../helpers/mock-hub.js';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const commitOf = (s: string): string => createHash('sha1').update(s).digest('hex');

export const tiny: MockRepo = {
  repo: 'org/tiny',
  commit: commitOf('tiny'),
  refs: ['v1'],
  files: [
    { path: 'config.json', content: text('{"model_type":"llama"}') },
    { path: 'tokenizer.json', content: text('{"model":{"type":"BPE"}}') },
    { path: 'README.md', content: text('# tiny\n') },
    { path: 'model.safetensors', content: safetensorsBytes({ a: 600, b: 400 }), lfs: true },
    { path: 'pytorch_model.bin', content: text('pickle'), lfs: true },
    { path: 'sub/deep/adapter_config.json', content: text('{"r":4}') },
  ],
};

export const shard1 = safetensorsBytes({ 'layers.0.w': 100, 'layers.0.v': 50 });
export const shard2 = safetensorsBytes({ 'layers.1.w': 100 });

export const sharded: MockRepo = {
  repo: 'org/sharded',
  commit: commitOf('sharded'),
  files: [
    { path: 'config.json', content: text('{"model_type":"llama"}') },
    {
      path: 'model.safetensors.index.json',
      content: text(JSON.stringify({
        metadata: { total_size: 1000 },
        weight_map: { 'layers.0.w': 'model-00001-of-00002.safetensors', 'layers.0.v': 'model-00001-of-00002.safetensors', 'layers.1.w': 'model-00002-of-00002.safetensors' },
      })),
    },
    { path: 'model-00001-of-00002.safetensors', content: shard1, lfs: true },
    { path: 'model-00002-of-00002.safetensors', content: shard2, lfs: true },
    { path: 'consolidated.safetensors', content: safetensorsBytes({ x: 10 }), lfs: true },
  ],
};

export const fileOf = (repo: MockRepo, path: string): Uint8Array => repo.files.find((f) => f.path === path)!.content;
