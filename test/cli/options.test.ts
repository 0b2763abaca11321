import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../../src/cli/errors.js';
import { mergekitFlagNotes } from '../../src/cli/mergekit-flags.js';
import { parseAdapterFlag, parseDtype } from '../../src/cli/options.js';
import { makeTempDir } from '../helpers/synthetic.js';

describe('parseDtype', () => {
  it('takes every common spelling, in any case, and nothing else', () => {
    for (const v of ['f32', 'fp32', 'float32', 'float', 'F32']) assert.equal(parseDtype(v), 'F32', v);
    for (const v of ['f16', 'fp16', 'float16', 'half', 'FP16']) assert.equal(parseDtype(v), 'F16', v);
    for (const v of ['bf16', 'bfloat16', 'BF16']) assert.equal(parseDtype(v), 'BF16', v);
    for (const v of ['garbage', 'f8', 'q8_0', 'int8', '']) assert.equal(parseDtype(v), undefined, v);
  });
});

describe('parseAdapterFlag', () => {
  it('splits a numeric weight, refuses a non-numeric one, and keeps an existing path with a colon whole', async () => {
    assert.deepEqual(parseAdapterFlag('./a:0.5'), { dir: './a', weight: 0.5 });
    assert.deepEqual(parseAdapterFlag('./a:-1e-1'), { dir: './a', weight: -0.1 });
    assert.deepEqual(parseAdapterFlag('./a'), { dir: './a' });
    // a colon followed by a path is part of the path (C:/x, runs:3/adapter)
    assert.deepEqual(parseAdapterFlag('runs:3/adapter'), { dir: 'runs:3/adapter' });
    assert.deepEqual(parseAdapterFlag('C:/adapters/x'), { dir: 'C:/adapters/x' });
    for (const bad of ['dir:abc', 'dir:', './a:0.5x']) {
      assert.throws(() => parseAdapterFlag(bad), (e: Error) => e instanceof UsageError && /is not a number; write DIR:WEIGHT/.test(e.message), bad);
    }
    const tmp = await makeTempDir('lf-adapter-flag-');
    try {
      for (const name of ['run:abc', 'run:0.5']) {
        await mkdir(join(tmp, name));
        assert.deepEqual(parseAdapterFlag(join(tmp, name)), { dir: join(tmp, name) }, name);
      }
      assert.deepEqual(parseAdapterFlag(`${join(tmp, 'run:abc')}:2`), { dir: join(tmp, 'run:abc'), weight: 2 });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe('mergekitFlagNotes', () => {
  it('notes harmless mergekit-yaml flags and refuses the ones asking for what loraforge does not do', () => {
    const notes = mergekitFlagNotes({ cuda: true, lazyUnpickle: true, allowCrimes: true, copyTokenizer: true, trustRemoteCode: true, lowCpuMemory: true });
    assert.equal(notes.length, 6);
    for (const n of notes) assert.match(n, /^--[a-z-]+ is a mergekit-yaml flag: .+/);
    assert.match(notes[0], /--cuda .* on the CPU/);
    assert.deepEqual(mergekitFlagNotes({ cuda: false }).length, 1);
    assert.throws(() => mergekitFlagNotes({ outShardSize: '5B' }), /--out-shard-size is a mergekit-yaml flag: .*--shard-size 5GB/);
    assert.throws(() => mergekitFlagNotes({ copyTokenizer: false }), /--no-copy-tokenizer is a mergekit-yaml flag/);
    // model+LoRA references are applied on the fly: mergekit's cache for merged LoRA models has nothing to do
    assert.match(mergekitFlagNotes({ loraMergeCache: './cache' })[0], /--lora-merge-cache is a mergekit-yaml flag: .*MODEL\+ADAPTER.*ignored/);
    assert.deepEqual(mergekitFlagNotes({}), []);
  });
});
