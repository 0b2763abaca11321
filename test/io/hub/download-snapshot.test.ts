import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, readlink, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempFolders } from '../../helpers/synthetic.js';
import { gitBlobSha1, sha256, startMockHub, type MockHubFaults, type MockRepo } from '../../helpers/mock-hub.js';
import { downloadSnapshot, HubError, MODEL_FILES, type HubErrorKind } from '../../../src/io/hub/index.js';
import type { ProgressEvent } from '../../../src/progress.js';
import { fileOf, sharded, tiny } from './fixtures.js';

const fresh = tempFolders('loraforge-hub-');

async function hub(t: TestContext, repos: MockRepo[] = [tiny, sharded], faults: MockHubFaults = {}) {
  const h = await startMockHub(repos, faults);
  t.after(() => h.close());
  return h;
}

const repoDir = (cache: string, repo: MockRepo) => join(cache, `models--${repo.repo.replace('/', '--')}`);
const tinyFiles = (p: string) => MODEL_FILES(p) || p.startsWith('sub/');
const transfers = (hits: { url: string }[]) => hits.filter((h) => h.url.includes('/resolve/') || h.url.startsWith('/cdn/'));

async function rejectsKind(p: Promise<unknown>, kind: HubErrorKind, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof HubError, String(err));
    assert.equal(err.kind, kind);
    assert.match(err.message, message);
    assert.ok(!err.message.includes('\n'));
    return true;
  });
}

describe('downloadSnapshot', () => {
  it("lays the files out exactly as huggingface_hub does, and a second run fetches nothing", async (t) => {
    const h = await hub(t);
    const cache = await fresh('layout');
    const events: ProgressEvent[] = [];
    const snap = await downloadSnapshot({ ref: { repo: 'org/tiny' }, files: tinyFiles, cacheDir: cache, endpoint: h.endpoint, onProgress: (e) => events.push(e) });
    const dir = repoDir(cache, tiny);
    assert.equal(snap.dir, join(dir, 'snapshots', tiny.commit));
    assert.deepEqual([snap.commit, snap.revision], [tiny.commit, 'main']);
    assert.deepEqual(snap.files, ['README.md', 'config.json', 'model.safetensors', 'sub/deep/adapter_config.json', 'tokenizer.json']);
    assert.equal(await readFile(join(dir, 'refs', 'main'), 'utf8'), tiny.commit, 'refs/main holds the commit, no newline');
    const etag = (p: string) => (p.endsWith('.safetensors') ? sha256(fileOf(tiny, p)) : gitBlobSha1(fileOf(tiny, p)));
    assert.deepEqual((await readdir(join(dir, 'blobs'))).sort(), snap.files.map(etag).sort(), 'blobs named by sha256 (LFS) and git sha1; no .bin, no .incomplete');
    assert.equal(await readlink(join(snap.dir, 'config.json')), `../../blobs/${etag('config.json')}`);
    assert.equal(await readlink(join(snap.dir, 'model.safetensors')), `../../blobs/${etag('model.safetensors')}`);
    assert.equal(await readlink(join(snap.dir, 'sub/deep/adapter_config.json')), `../../../../blobs/${etag('sub/deep/adapter_config.json')}`);
    assert.deepEqual(await readFile(join(snap.dir, 'model.safetensors')), Buffer.from(fileOf(tiny, 'model.safetensors')));
    const total = snap.files.reduce((n, p) => n + fileOf(tiny, p).length, 0);
    assert.equal(snap.downloadedBytes, total);
    const last = events.filter((e) => !e.partial).at(-1)!;
    assert.deepEqual([last.phase, last.index + 1, last.total, last.bytes?.done, last.bytes?.total], ['download', 5, 5, total, total]);

    const before = h.hits.length;
    const again = await downloadSnapshot({ ref: { repo: 'org/tiny' }, files: tinyFiles, cacheDir: cache, endpoint: h.endpoint });
    assert.equal(again.downloadedBytes, 0);
    assert.deepEqual(h.hits.slice(before).map((x) => x.url.split('?')[0]), [`/api/models/org/tiny/revision/main`], 'only the revision is asked for');
  });

  it('brings only the shards holding a wanted tensor, then the rest on demand', async (t) => {
    const h = await hub(t);
    const cache = await fresh('shards');
    const snap = await downloadSnapshot({ ref: { repo: 'org/sharded' }, files: MODEL_FILES, tensors: (n) => n.startsWith('layers.1.'), cacheDir: cache, endpoint: h.endpoint });
    assert.deepEqual(snap.files, ['config.json', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
    assert.deepEqual(await readdir(snap.dir).then((d) => d.sort()), snap.files);
    assert.ok(!transfers(h.hits).some((x) => x.url.includes('00001') || x.url.includes('consolidated')));
    const all = await downloadSnapshot({ ref: { repo: 'org/sharded' }, files: MODEL_FILES, cacheDir: cache, endpoint: h.endpoint });
    assert.equal(all.downloadedBytes, fileOf(sharded, 'model-00001-of-00002.safetensors').length, 'only the missing shard');
  });

  it('resumes a transfer that breaks off with a range request', async (t) => {
    const h = await hub(t, [tiny], { dieOnce: { path: 'model.safetensors', after: 1000 } });
    const cache = await fresh('resume');
    const snap = await downloadSnapshot({ ref: { repo: 'org/tiny' }, files: (p) => p === 'model.safetensors', cacheDir: cache, endpoint: h.endpoint });
    assert.deepEqual(await readFile(join(snap.dir, 'model.safetensors')), Buffer.from(fileOf(tiny, 'model.safetensors')));
    const ranges = h.hits.filter((x) => x.url.startsWith('/cdn/')).map((x) => x.range);
    assert.equal(ranges.length, 2);
    assert.equal(ranges[0], undefined);
    // resumed from what reached the disk: the 1000 bytes sent, unless the client had not read them all when the link broke
    const from = Number(/^bytes=(\d+)-$/.exec(ranges[1] ?? '')?.[1]);
    assert.ok(from > 0 && from <= 1000, `second request ${ranges[1]}`);
  });

  it('resumes a .incomplete blob left by an earlier run', async (t) => {
    const h = await hub(t, [tiny]);
    const cache = await fresh('resume-run');
    const content = fileOf(tiny, 'model.safetensors');
    await mkdir(join(repoDir(cache, tiny), 'blobs'), { recursive: true });
    await writeFile(join(repoDir(cache, tiny), 'blobs', `${sha256(content)}.incomplete`), content.subarray(0, 500));
    const snap = await downloadSnapshot({ ref: { repo: 'org/tiny' }, files: (p) => p === 'model.safetensors', cacheDir: cache, endpoint: h.endpoint });
    assert.equal(snap.downloadedBytes, content.length - 500);
    assert.deepEqual(h.hits.filter((x) => x.url.startsWith('/cdn/')).map((x) => [x.range, x.bytes]), [['bytes=500-', content.length - 500]]);
    assert.deepEqual(await readFile(join(snap.dir, 'model.safetensors')), Buffer.from(content));
  });

  it('uses what Python cached as it is: a blob already there is linked, not fetched', async (t) => {
    const h = await hub(t, [tiny]);
    const cache = await fresh('python');
    const dir = repoDir(cache, tiny);
    const content = fileOf(tiny, 'model.safetensors');
    const blob = join(dir, 'blobs', sha256(content));
    await mkdir(join(dir, 'blobs'), { recursive: true });
    await writeFile(blob, content);
    const config = fileOf(tiny, 'config.json');
    await writeFile(join(dir, 'blobs', gitBlobSha1(config)), config);
    await mkdir(join(dir, 'snapshots', tiny.commit), { recursive: true });
    await symlink(`../../blobs/${gitBlobSha1(config)}`, join(dir, 'snapshots', tiny.commit, 'config.json'));
    const inode = (await stat(blob)).ino;
    const snap = await downloadSnapshot({ ref: { repo: 'org/tiny' }, files: (p) => p === 'model.safetensors' || p === 'config.json', cacheDir: cache, endpoint: h.endpoint });
    assert.equal(snap.downloadedBytes, 0);
    assert.deepEqual(transfers(h.hits), []);
    assert.equal((await stat(join(snap.dir, 'model.safetensors'))).ino, inode);
  });

  it('works offline from the cache alone and names a missing file', async (t) => {
    const h = await hub(t);
    const cache = await fresh('offline');
    await downloadSnapshot({ ref: { repo: 'org/sharded' }, files: MODEL_FILES, tensors: (n) => n.startsWith('layers.1.'), cacheDir: cache, endpoint: h.endpoint });
    const before = h.hits.length;
    const off = { cacheDir: cache, endpoint: h.endpoint, offline: true };
    const snap = await downloadSnapshot({ ref: { repo: 'org/sharded' }, files: MODEL_FILES, tensors: (n) => n === 'layers.1.w', ...off });
    assert.deepEqual([snap.commit, snap.files], [sharded.commit, ['config.json', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']]);
    const byCommit = await downloadSnapshot({ ref: { repo: 'org/sharded', revision: sharded.commit }, files: (p) => p === 'config.json', ...off });
    assert.deepEqual(byCommit.files, ['config.json']);
    await rejectsKind(downloadSnapshot({ ref: { repo: 'org/sharded' }, files: MODEL_FILES, ...off }), 'offline-miss', /org\/sharded@main: model-00001-of-00002\.safetensors is not in the cache .*run once online/);
    await rejectsKind(downloadSnapshot({ ref: { repo: 'org/tiny' }, files: MODEL_FILES, ...off }), 'offline-miss', /^org\/tiny@main is not in the cache /);
    assert.equal(h.hits.length, before, 'offline never touches the network');
  });

  it('writes refs/<tag> for a tag and no ref for a commit', async (t) => {
    const h = await hub(t, [tiny]);
    const cache = await fresh('refs');
    await downloadSnapshot({ ref: { repo: 'org/tiny', revision: 'v1' }, files: (p) => p === 'config.json', cacheDir: cache, endpoint: h.endpoint });
    await downloadSnapshot({ ref: { repo: 'org/tiny', revision: tiny.commit }, files: (p) => p === 'README.md', cacheDir: cache, endpoint: h.endpoint });
    assert.deepEqual(await readdir(join(repoDir(cache, tiny), 'refs')), ['v1']);
    assert.equal(await readFile(join(repoDir(cache, tiny), 'refs', 'v1'), 'utf8'), tiny.commit);
  });

  it('says what went wrong in one line: not found, private, unknown revision, checksum, unreachable', async (t) => {
    const h = await hub(t, [tiny, { ...sharded, repo: 'org/private', token: 'hf_secret' }]);
    const cache = await fresh('errors');
    const o = { cacheDir: cache, endpoint: h.endpoint, files: MODEL_FILES };
    await rejectsKind(downloadSnapshot({ ref: { repo: 'org/nope' }, ...o }), 'not-found', /^repository org\/nope not found on http:\/\/127\.0\.0\.1:\d+; check the id, or set HF_TOKEN if it is private$/);
    await rejectsKind(downloadSnapshot({ ref: { repo: 'org/private' }, ...o }), 'unauthorized', /answered 401 \(no token was sent\).*set HF_TOKEN .*accept the licence/);
    await rejectsKind(downloadSnapshot({ ref: { repo: 'org/private' }, ...o, token: 'hf_wrong' }), 'unauthorized', /the token was refused/);
    const ok = await downloadSnapshot({ ref: { repo: 'org/private' }, ...o, token: 'hf_secret', tensors: () => false });
    assert.deepEqual(ok.files, ['config.json', 'model.safetensors.index.json']);
    await rejectsKind(downloadSnapshot({ ref: { repo: 'org/tiny', revision: 'nope' }, ...o }), 'revision', /^revision nope not found in org\/tiny/);
    const closed = await startMockHub([]);
    await closed.close();
    await rejectsKind(downloadSnapshot({ ref: { repo: 'org/private' }, ...o, endpoint: closed.endpoint }), 'network', /cannot reach .*\(ECONNREFUSED\).*holds org\/private@main \(commit [0-9a-f]{7}, 2 files\); run with --offline/);
    await rejectsKind(downloadSnapshot({ ref: { repo: 'org/tiny' }, ...o, endpoint: closed.endpoint }), 'network', /holds nothing for org\/tiny/);
  });

  it('uses the cached revision, with a warning, when the Hub cannot be reached (as huggingface_hub does)', async (t) => {
    const h = await hub(t);
    const cache = await fresh('fallback');
    const online = await downloadSnapshot({ ref: { repo: 'org/tiny' }, files: MODEL_FILES, cacheDir: cache, endpoint: h.endpoint });
    const closed = await startMockHub([]);
    await closed.close();
    const warnings: string[] = [];
    const cached = await downloadSnapshot({ ref: { repo: 'org/tiny' }, files: MODEL_FILES, cacheDir: cache, endpoint: closed.endpoint, onWarning: (m) => warnings.push(m) });
    assert.equal(cached.dir, online.dir);
    assert.deepEqual(cached.files, online.files);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /cannot reach .*; using the cached org\/tiny@main \(commit [0-9a-f]{7}\)$/);
  });

  it('deletes a download whose checksum is wrong and links nothing', async (t) => {
    const h = await hub(t, [tiny], { corrupt: 'model.safetensors' });
    const cache = await fresh('checksum');
    await rejectsKind(downloadSnapshot({ ref: { repo: 'org/tiny' }, files: (p) => p === 'model.safetensors', cacheDir: cache, endpoint: h.endpoint }), 'checksum', /org\/tiny\/model\.safetensors: the downloaded bytes do not match/);
    assert.deepEqual(await readdir(join(repoDir(cache, tiny), 'blobs')), []);
    assert.deepEqual(await readdir(join(repoDir(cache, tiny), 'snapshots')).catch(() => []), []);
  });
});
