/** A command's own mistakes are reported before any Hub download starts (here the Hub is off and the cache empty: a download would fail first). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { extractLora } from '../../../src/extract/index.js';
import { mergeModels } from '../../../src/merge/index.js';
import { mergeAdapters } from '../../../src/merge-adapters/index.js';
import { editDelta } from '../../../src/edit/edit.js';
import { tempFolders } from '../../helpers/synthetic.js';

const fresh = tempFolders('loraforge-hub-checks-');

describe('options are checked before anything is downloaded', () => {
  it('extract, merge, merge-adapters and edit refuse their bad options, not the missing Hub files', async () => {
    const dir = await fresh('x');
    const hub = { offline: true, cacheDir: join(dir, 'empty-cache') };
    const out = join(dir, 'out');
    await assert.rejects(extractLora({ modelA: 'org/a', modelB: 'org/b', out, seed: 1.5, hub }), /seed must be an integer, got 1\.5/);
    await assert.rejects(extractLora({ modelA: 'org/a', modelB: 'org/b', out: `${out}.safetensors`, targetModules: ['q_proj'], hub }), /apply\(ies\) to LLM adapters only/);
    await assert.rejects(
      mergeModels({ config: { merge_method: 'linear', models: [{ model: 'org/a', parameters: { weight: 1 } }] }, out, maxMemory: -1, hub }),
      /memory budget must be a positive number of bytes/,
    );
    await assert.rejects(mergeAdapters({ adapters: [{ path: 'org/lora', weight: Number.NaN }], method: 'linear', out, hub }), /org\/lora: weight NaN is not a finite number/);
    await assert.rejects(editDelta({ modelA: 'org/a', modelB: 'org/b', rank: 0, out, edit: { zero: [0] }, hub }), /rank must be an integer ≥ 1, got 0/);
  });
});
