import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempFolders } from '../../helpers/synthetic.js';
import { resolveHubOptions } from '../../../src/io/hub/index.js';

const fresh = tempFolders('loraforge-hub-options-');

describe('resolveHubOptions', () => {
  it('reads the environment variables huggingface_hub reads, options first', async () => {
    const home = await fresh('home');
    await writeFile(join(home, 'token'), 'hf_fromfile\n');
    const env = { HF_HOME: home, HF_ENDPOINT: 'http://mirror.local/', HF_HUB_OFFLINE: 'TRUE' };
    const o = resolveHubOptions({}, env);
    assert.equal(o.cacheDir, join(home, 'hub'));
    assert.equal(o.endpoint, 'http://mirror.local');
    assert.equal(o.token, 'hf_fromfile');
    assert.equal(o.offline, true);
    const p = resolveHubOptions({}, { ...env, HF_HUB_CACHE: '/c', HF_TOKEN: 'hf_env', HF_HUB_OFFLINE: '0' });
    assert.deepEqual([p.cacheDir, p.token, p.offline], ['/c', 'hf_env', false]);
    const q = resolveHubOptions({ cacheDir: '/o', token: 'hf_opt', endpoint: 'http://e', offline: true }, { HF_HUB_CACHE: '/c', HF_TOKEN: 'hf_env' });
    assert.deepEqual([q.cacheDir, q.token, q.endpoint, q.offline], ['/o', 'hf_opt', 'http://e', true]);
    const d = resolveHubOptions({}, { HOME: '/nohome', XDG_CACHE_HOME: '/xdg' });
    assert.deepEqual([d.cacheDir, d.endpoint, d.token], ['/xdg/huggingface/hub', 'https://huggingface.co', undefined]);
  });
});
