/**
 * Commands on Hub ids, end to end through the CLI against the mock Hub: what comes down, where it
 * goes, and that the result equals the same command on the local folders.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startMockHub, type MockHub, type MockRepo } from '../../helpers/mock-hub.js';
import { runCli } from '../../helpers/cli.js';
import { llamaBase, planted, TINY_LLAMA, withDeltas, writePair } from '../../helpers/extract.js';
import { makeTempDir } from '../../helpers/synthetic.js';

/** A local model folder served as a Hub repo (weights in LFS, as the Hub stores them). */
async function repoOf(repo: string, dir: string): Promise<MockRepo> {
  const files = [];
  for (const name of (await readdir(dir)).sort()) files.push({ path: name, content: new Uint8Array(await readFile(join(dir, name))), lfs: name.endsWith('.safetensors') });
  return { repo, commit: createHash('sha1').update(repo).digest('hex'), files };
}

/** The environment of a user pointed at the mock Hub, with no token and no offline setting inherited. */
function hubEnv(endpoint: string, cache: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HF_ENDPOINT: endpoint, HF_HUB_CACHE: cache, HF_HOME: join(cache, 'home') };
  delete env.HF_TOKEN;
  delete env.HF_HUB_OFFLINE;
  return env;
}

/** The weight files whose bytes the Hub served (LFS files come from /cdn/<sha256>), one entry per transfer, by file name (equal shards of two repos share a sha). */
const served = (h: MockHub, repos: MockRepo[]): string[] => {
  const bySha = new Map(repos.flatMap((r) => r.files.map((f) => [createHash('sha256').update(f.content).digest('hex'), f.path] as const)));
  return h.hits.filter((x) => x.url.startsWith('/cdn/') && x.bytes > 0).map((x) => bySha.get(x.url.slice('/cdn/'.length)) ?? x.url);
};

describe('commands on Hub ids (mock Hub)', () => {
  let root: string;
  let hub: MockHub;
  let local: { a: string; b: string };
  let cache: string;
  let env: NodeJS.ProcessEnv;
  let weightMap: Record<string, string>;
  let repos: MockRepo[];

  before(async () => {
    root = await makeTempDir('loraforge-hub-cmd-');
    const base = llamaBase(TINY_LLAMA, 1);
    const q = base['model.layers.1.self_attn.q_proj.weight'];
    const tuned = withDeltas(base, { 'model.layers.1.self_attn.q_proj.weight': planted(q.shape[0], q.shape[1], [3, 2, 1], 7) });
    // small shards, so that q_proj of layer 1 lies in some of them only
    local = await writePair(root, base, tuned, { maxShardBytes: 24_000 });
    weightMap = JSON.parse(await readFile(join(local.a, 'model.safetensors.index.json'), 'utf8')).weight_map;
    repos = [await repoOf('org/base', local.a), await repoOf('org/tuned', local.b)];
    hub = await startMockHub(repos);
    cache = join(root, 'hf-cache');
    env = hubEnv(hub.endpoint, cache);
  });
  after(async () => {
    await hub.close();
    await rm(root, { recursive: true, force: true });
  });

  it('extract --target-modules brings only the shards holding a target, names the base by its Hub id, equals the local run, and runs again offline', async () => {
    const args = ['--target-modules', 'q_proj', '--rank', '3', '--quiet'];
    const fromHub = await runCli(['extract', '--model-a', 'org/base', '--model-b', 'org/tuned', '--out', join(root, 'hub-lora'), ...args], { env, cwd: root });
    assert.equal(fromHub.code, 0, fromHub.stderr);
    const wanted = new Set(Object.entries(weightMap).filter(([t]) => t.includes('q_proj')).map(([, f]) => f));
    const shardCount = new Set(Object.values(weightMap)).size;
    assert.ok(wanted.size < shardCount, `the fixture needs shards without q_proj (${wanted.size} of ${shardCount})`);
    const expected = [...wanted, ...wanted].sort();
    assert.deepEqual(served(hub, repos).sort(), expected);

    const config = JSON.parse(await readFile(join(root, 'hub-lora', 'adapter_config.json'), 'utf8'));
    assert.equal(config.base_model_name_or_path, 'org/base');
    const fromFolders = await runCli(['extract', '--model-a', local.a, '--model-b', local.b, '--out', join(root, 'local-lora'), ...args], { env, cwd: root });
    assert.equal(fromFolders.code, 0, fromFolders.stderr);
    assert.deepEqual(await readFile(join(root, 'hub-lora', 'adapter_model.safetensors')), await readFile(join(root, 'local-lora', 'adapter_model.safetensors')));

    const hitsBefore = hub.hits.length;
    const offline = await runCli(['extract', '--model-a', 'org/base', '--model-b', 'org/tuned', '--out', join(root, 'offline-lora'), '--offline', ...args], { env, cwd: root });
    assert.equal(offline.code, 0, offline.stderr);
    assert.equal(hub.hits.length, hitsBefore, 'an offline run asks the Hub nothing');
  });

  it('merge takes Hub ids in the YAML (the shards still missing come down) and writes what the local merge writes', async () => {
    const yaml = (a: string, b: string) => `merge_method: linear\nmodels:\n  - model: ${a}\n    parameters: {weight: 0.25}\n  - model: ${b}\n    parameters: {weight: 0.75}\ndtype: float32\n`;
    await writeFile(join(root, 'hub.yaml'), yaml('org/base', 'org/tuned'));
    await writeFile(join(root, 'local.yaml'), yaml(local.a, local.b));
    const fromHub = await runCli(['merge', 'hub.yaml', join(root, 'hub-merged'), '--quiet'], { env, cwd: root });
    assert.equal(fromHub.code, 0, fromHub.stderr);
    const fromFolders = await runCli(['merge', 'local.yaml', join(root, 'local-merged'), '--quiet'], { env, cwd: root });
    assert.equal(fromFolders.code, 0, fromFolders.stderr);
    const weights = (await readdir(join(root, 'local-merged'))).filter((f) => f.endsWith('.safetensors'));
    assert.ok(weights.length > 0);
    for (const f of weights) assert.deepEqual(await readFile(join(root, 'hub-merged', f)), await readFile(join(root, 'local-merged', f)), f);
    // the config stored with the output keeps the Hub ids as written
    assert.match(await readFile(join(root, 'hub-merged', 'mergekit_config.yml'), 'utf8'), /model: org\/base/);
  });

  it('a repo the Hub does not have exits 1 with one line naming it', async () => {
    const r = await runCli(['extract', '--model-a', 'org/missing', '--model-b', 'org/tuned', '--out', join(root, 'never')], { env, cwd: root });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /org\/missing/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });
});
