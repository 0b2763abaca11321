import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempFolders } from '../../helpers/synthetic.js';
import { startMockHub } from '../../helpers/mock-hub.js';
import { downloadSnapshot } from '../../../src/io/hub/index.js';
import { lockFile } from '../../../src/io/hub/blob-lock.js';
import { tiny } from './fixtures.js';

const fresh = tempFolders('loraforge-hub-lock-');

describe('one writer per blob', () => {
  it('two downloads of the same repo at once fetch each file once and leave no lock behind', async (t) => {
    const h = await startMockHub([tiny]);
    t.after(() => h.close());
    const cache = await fresh('twice');
    const req = { ref: { repo: 'org/tiny' }, files: (p: string) => p === 'model.safetensors' || p === 'config.json', cacheDir: cache, endpoint: h.endpoint };
    const [a, b] = await Promise.all([downloadSnapshot(req), downloadSnapshot(req)]);
    assert.equal(a.dir, b.dir);
    assert.equal(a.downloadedBytes + b.downloadedBytes, tiny.files.filter((f) => req.files(f.path)).reduce((n, f) => n + f.content.length, 0));
    const blobs = await readdir(join(cache, 'models--org--tiny', 'blobs'));
    assert.equal(blobs.filter((f) => f.endsWith('.lock') || f.endsWith('.incomplete')).length, 0, blobs.join());
  });

  it('takes over the lock of a process that is gone, and waits for a live holder', async () => {
    const dir = await fresh('stale');
    const partial = join(dir, 'blob.incomplete');
    const gone = spawnSync(process.execPath, ['-e', '0']).pid!;
    await writeFile(`${partial}.lock`, String(gone));
    const release = await lockFile(partial);
    let second = false;
    const waited: number[] = [];
    const next = lockFile(partial, (pid) => waited.push(pid)).then((r) => {
      second = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 450));
    assert.equal(second, false, 'the second lock waits while the first is held');
    assert.deepEqual(waited, [process.pid]);
    await release();
    await (await next)();
    assert.equal(second, true);
    assert.deepEqual(await readdir(dir), []);
  });
});
