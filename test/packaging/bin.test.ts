/**
 * bin/loraforge.js runs the source in a checkout, even beside a stale dist/ (so the CLI tests, which
 * start the bin, always test the source), and dist/ in the installed package, which has no src/.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/synthetic.js';

const run = promisify(execFile);

describe('bin/loraforge.js', () => {
  let root = '';
  before(async () => {
    root = await makeTempDir('lf-bin-');
    await mkdir(join(root, 'bin'));
    await copyFile(join(REPO_ROOT, 'bin', 'loraforge.js'), join(root, 'bin', 'loraforge.js'));
    await writeFile(join(root, 'package.json'), '{"type":"module"}\n');
    await symlink(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules')); // tsx, as in a checkout
    await mkdir(join(root, 'dist', 'src', 'cli'), { recursive: true });
    await writeFile(join(root, 'dist', 'src', 'cli', 'main.js'), "console.log('dist');\n");
    await mkdir(join(root, 'src', 'cli'), { recursive: true });
    await writeFile(join(root, 'src', 'cli', 'main.ts'), "const from: string = 'source';\nconsole.log(from);\n");
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('runs the source in a checkout even when dist/ exists', async () => {
    const { stdout } = await run(process.execPath, [join(root, 'bin', 'loraforge.js')]);
    assert.equal(stdout.trim(), 'source');
  });

  it('runs dist/ where there is no source (the installed package)', async () => {
    await rm(join(root, 'src'), { recursive: true });
    const { stdout } = await run(process.execPath, [join(root, 'bin', 'loraforge.js')]);
    assert.equal(stdout.trim(), 'dist');
  });
});
