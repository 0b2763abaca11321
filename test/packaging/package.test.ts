/**
 * What `npm i loraforge` gets: no dependency that runs an install script (onnxruntime-node after
 * 1.17.0 downloads CUDA binaries from NuGet in its postinstall, which fails offline), a tarball with
 * LICENSE, README and nothing of the checkout's tests or sources, and no npm warning in the checkout.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
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

  it('builds only src/ into dist/src, where main, types, exports and the bin look', async () => {
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8'));
    for (const script of ['build', 'prepack']) assert.equal(pkg.scripts[script], 'tsc -p tsconfig.build.json', script);
    const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const { stdout } = await run(process.execPath, [tsc, '--showConfig', '-p', 'tsconfig.build.json'], { cwd: REPO_ROOT });
    const config = JSON.parse(stdout) as { compilerOptions: { outDir: string; rootDir: string; noEmit?: boolean }; files: string[] };
    assert.deepEqual([config.compilerOptions.rootDir, config.compilerOptions.outDir, config.compilerOptions.noEmit], ['./src', './dist/src', false]);
    assert.deepEqual(config.files.filter((f) => !f.startsWith('./src/')), [], 'tests or benches would be compiled into dist');
    assert.ok(config.files.includes('./src/index.ts') && config.files.includes('./src/cli/main.ts'));
    // src/x.ts is built to dist/src/x.js
    assert.deepEqual([pkg.main, pkg.types, pkg.exports['.'].import, pkg.exports['.'].types], ['dist/src/index.js', 'dist/src/index.d.ts', './dist/src/index.js', './dist/src/index.d.ts']);
    assert.match(await readFile(join(REPO_ROOT, 'bin', 'loraforge.js'), 'utf8'), /join\(root, 'dist', 'src', 'cli', 'main\.js'\)/);
    // the checkout's own config type-checks tests and benches but never emits
    const { stdout: own } = await run(process.execPath, [tsc, '--showConfig', '-p', 'tsconfig.json'], { cwd: REPO_ROOT });
    const ownConfig = JSON.parse(own) as { compilerOptions: { noEmit?: boolean }; files: string[] };
    assert.equal(ownConfig.compilerOptions.noEmit, true);
    assert.ok(ownConfig.files.some((f) => f.startsWith('./test/')) && ownConfig.files.some((f) => f.startsWith('./bench/')));
  });

  it('depends at run time only on packages src/ imports (what only tests use is a devDependency)', async () => {
    const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    const sources = (await readdir(join(REPO_ROOT, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts'));
    const text = (await Promise.all(sources.map((f) => readFile(join(REPO_ROOT, 'src', f), 'utf8')))).join('\n');
    const unused = Object.keys(pkg.dependencies).filter((d) => !text.includes(`'${d}'`) && !text.includes(`'${d}/`));
    assert.deepEqual(unused, []);
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
