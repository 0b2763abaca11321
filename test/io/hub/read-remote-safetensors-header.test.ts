import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { tempFolders } from '../../helpers/synthetic.js';
import { startMockHub } from '../../helpers/mock-hub.js';
import { downloadSnapshot, HubError, readRemoteSafetensorsHeader } from '../../../src/io/hub/index.js';
import { shard2, sharded } from './fixtures.js';

const fresh = tempFolders('loraforge-hub-header-');
const headerLength = Number(new DataView(shard2.buffer).getBigUint64(0, true));

describe('readRemoteSafetensorsHeader', () => {
  it('fetches only the header bytes, by two range requests', async (t) => {
    const h = await startMockHub([sharded]);
    t.after(() => h.close());
    const cache = await fresh('range');
    const header = await readRemoteSafetensorsHeader({ ref: { repo: 'org/sharded' }, path: 'model-00002-of-00002.safetensors', cacheDir: cache, endpoint: h.endpoint });
    assert.deepEqual(header['layers.1.w'], { dtype: 'F32', shape: [100], data_offsets: [0, 400] });
    const storage = h.hits.filter((x) => x.url.startsWith('/cdn/'));
    assert.deepEqual(storage.map((x) => x.range), ['bytes=0-7', `bytes=8-${7 + headerLength}`]);
    assert.equal(storage.reduce((n, x) => n + x.bytes, 0), 8 + headerLength, 'not one tensor byte');
  });

  it('reads a cached file from the cache, and offline names a file the cache lacks', async (t) => {
    const h = await startMockHub([sharded]);
    t.after(() => h.close());
    const cache = await fresh('cached');
    await downloadSnapshot({ ref: { repo: 'org/sharded' }, files: (p) => p === 'model-00002-of-00002.safetensors', cacheDir: cache, endpoint: h.endpoint });
    const before = h.hits.length;
    const header = await readRemoteSafetensorsHeader({ ref: { repo: 'org/sharded', revision: sharded.commit }, path: 'model-00002-of-00002.safetensors', cacheDir: cache, endpoint: h.endpoint });
    assert.deepEqual(Object.keys(header), ['layers.1.w']);
    const offline = await readRemoteSafetensorsHeader({ ref: { repo: 'org/sharded' }, path: 'model-00002-of-00002.safetensors', cacheDir: cache, offline: true });
    assert.deepEqual(offline, header);
    assert.equal(h.hits.length, before, 'a commit in the cache needs no request');
    await assert.rejects(
      readRemoteSafetensorsHeader({ ref: { repo: 'org/sharded' }, path: 'model-00001-of-00002.safetensors', cacheDir: cache, offline: true }),
      (err: unknown) => err instanceof HubError && err.kind === 'offline-miss' && /model-00001-of-00002\.safetensors is not in the cache/.test(err.message),
    );
  });
});
