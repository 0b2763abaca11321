/**
 * `npm test` installs what the tests drive itself (pretest: scripts/setup-test-deps.mjs); by the time
 * the tests run everything is in place, so a second run must find nothing to do and stay offline.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/cli.js';

const run = promisify(execFile);

it('npm test sets up its own test clients, and a second set-up does nothing', async () => {
  const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.scripts.pretest, 'node scripts/setup-test-deps.mjs');
  const { stdout, stderr } = await run(process.execPath, [join(REPO_ROOT, 'scripts', 'setup-test-deps.mjs')], {
    env: { ...process.env, npm_config_offline: 'true' },
    timeout: 20_000,
  });
  assert.equal(stdout + stderr, '');
});
