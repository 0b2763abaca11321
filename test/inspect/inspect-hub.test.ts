import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tempFolders } from '../helpers/synthetic.js';
import { runCli } from '../helpers/cli.js';
import { safetensorsBytes, startMockHub, type MockRepo } from '../helpers/mock-hub.js';
import { inspectPath } from '../../src/inspect/inspect.js';
import { HubError } from '../../src/io/hub/index.js';
import { shard1, shard2, sharded } from '../io/hub/fixtures.js';

const fresh = tempFolders('loraforge-inspect-hub-');
const headerBytes = (file: Uint8Array): number => 8 + Number(new DataView(file.buffer).getBigUint64(0, true));
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

const adapters: MockRepo = {
  repo: 'org/adapters',
  commit: 'a'.repeat(40),
  files: [
    { path: 'math/adapter_config.json', content: text('{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["q_proj"]}') },
    { path: 'math/adapter_model.safetensors', content: safetensorsBytes({ 'base_model.model.q_proj.lora_A.weight': 8, 'base_model.model.q_proj.lora_B.weight': 8 }), lfs: true },
  ],
};

async function hub(t: TestContext) {
  const h = await startMockHub([sharded, adapters]);
  t.after(() => h.close());
  return h;
}

/** Storage (LFS) transfers: each must be a range, and together only the shards' headers. */
function storageBytes(hits: { url: string; range?: string; bytes: number }[]): number {
  const storage = hits.filter((x) => x.url.startsWith('/cdn/'));
  assert.ok(storage.every((x) => x.range !== undefined), 'no whole-file transfer');
  return storage.reduce((n, x) => n + x.bytes, 0);
}

describe('inspect on Hub ids', () => {
  it('lists a 2-shard repo from its index and the shards\' headers, downloading no weights', async (t) => {
    const h = await hub(t);
    const cache = await fresh('sharded');
    const r = await inspectPath({ path: 'org/sharded', hub: { cacheDir: cache, endpoint: h.endpoint } });
    assert.equal(r.path, 'org/sharded');
    assert.equal(r.kind, 'checkpoint');
    assert.deepEqual(r.tensors.map((x) => [x.name, x.shape]), [['layers.0.w', [100]], ['layers.0.v', [50]], ['layers.1.w', [100]]]);
    assert.deepEqual([r.totalParameters, r.totalBytes, r.dtypes], [250, 1000, { F32: 3 }]);
    assert.equal(r.config?.model_type, 'llama');
    assert.equal(storageBytes(h.hits), headerBytes(shard1) + headerBytes(shard2), 'only header bytes of the shards');
    const snap = join(cache, 'models--org--sharded', 'snapshots', sharded.commit);
    assert.deepEqual((await readdir(snap)).sort(), ['config.json', 'model.safetensors.index.json']);

    // offline: the side files are cached, the shards are not, and the miss names the shard
    const before = h.hits.length;
    await assert.rejects(
      inspectPath({ path: 'org/sharded', hub: { cacheDir: cache, endpoint: h.endpoint, offline: true } }),
      (err: unknown) => err instanceof HubError && err.kind === 'offline-miss' && /model-00001-of-00002\.safetensors is not in the cache/.test(err.message),
    );
    assert.equal(h.hits.length, before, 'offline never touches the network');
  });

  it('reads one named file, and a PEFT adapter in a repo folder', async (t) => {
    const h = await hub(t);
    const cache = await fresh('file');
    const hubOpts = { cacheDir: cache, endpoint: h.endpoint };
    const file = await inspectPath({ path: `org/sharded@${sharded.commit}/model-00002-of-00002.safetensors`, hub: hubOpts });
    assert.deepEqual([file.kind, file.tensors.map((x) => x.name)], ['safetensors', ['layers.1.w']]);
    const adapter = await inspectPath({ path: 'org/adapters/math', hub: hubOpts });
    assert.equal(adapter.kind, 'peft-adapter');
    assert.deepEqual([adapter.config?.r, adapter.tensors.length, adapter.totalParameters], [2, 2, 16]);
    assert.equal(storageBytes(h.hits), headerBytes(shard2) + headerBytes(adapters.files[1]!.content));
  });

  it('CLI: inspect org/name prints the tensors through HF_ENDPOINT / HF_HUB_CACHE', async (t) => {
    const h = await hub(t);
    const cache = await fresh('cli');
    const env: NodeJS.ProcessEnv = { ...process.env, HF_ENDPOINT: h.endpoint, HF_HUB_CACHE: cache, HF_TOKEN_PATH: join(cache, 'no-token') };
    delete env.HF_TOKEN;
    delete env.HF_HUB_OFFLINE;
    const r = await runCli(['inspect', 'org/sharded'], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^org\/sharded \(checkpoint\)\n3 tensors, 250 parameters/);
    for (const name of ['layers.0.w', 'layers.0.v', 'layers.1.w']) assert.match(r.stdout, new RegExp(`\\b${name.replace(/\./g, '\\.')}\\b`));
    assert.equal(storageBytes(h.hits), headerBytes(shard1) + headerBytes(shard2));
  });
});
