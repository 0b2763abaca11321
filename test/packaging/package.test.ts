/**
 * What `npm i loraforge` gets: no dependency that runs an install script (onnxruntime-node after
 * 1.17.0 downloads CUDA binaries from NuGet in its postinstall, which fails offline), a tarball with
 * LICENSE, README and nothing of the checkout's tests or sources, and no npm warning in the checkout.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/cli.js';

const run = promisify(execFile);
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

interface LockEntry {
  dev?: boolean;
  hasInstallScript?: boolean;
}

describe('the npm package', () => {
  it('installs no dependency that runs an install script', async () => {
    const lock = JSON.parse(await readFile(join(REPO_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
    const scripted = Object.entries(lock.packages)
      .filter(([path, entry]) => path !== '' && !entry.dev && entry.hasInstallScript)
      .map(([path]) => path);
    assert.deepEqual(scripted, []);
  });

  it('packs LICENSE, README, package.json and bin, and nothing from src/ or test/', async () => {
    const { stdout } = await run(NPM, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO_ROOT });
    const files = (JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
    for (const f of ['LICENSE', 'README.md', 'package.json', 'bin/loraforge.js']) assert.ok(files.includes(f), `${f} missing from ${files.join(', ')}`);
    assert.deepEqual(files.filter((f) => !/^(LICENSE|README\.md|package\.json|bin\/loraforge\.js|dist\/src\/.*)$/.test(f)), []);
  });

  it('names its license, repository and homepage', async () => {
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8'));
    assert.equal(pkg.license, 'MIT');
    assert.match(await readFile(join(REPO_ROOT, 'LICENSE'), 'utf8'), /^MIT License\n\nCopyright \(c\) 2026 the loraforge authors\n/);
    assert.match(pkg.repository?.url ?? '', /^git\+https:\/\/github\.com\/loraforge\/loraforge\.git$/);
    assert.match(pkg.homepage ?? '', /^https:\/\/github\.com\/loraforge\/loraforge#readme$/);
  });

  it('npm runs in the checkout without warnings about its config', async () => {
    const { stderr } = await run(NPM, ['pkg', 'get', 'name'], { cwd: REPO_ROOT });
    assert.doesNotMatch(stderr, /npm warn/i);
  });
});
