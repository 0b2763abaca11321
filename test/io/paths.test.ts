import assert from 'node:assert/strict';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathExists } from '../../src/io/paths.js';

describe('pathExists', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'loraforge-paths-'));
    await writeFile(join(dir, 'file'), 'x');
    await symlink(join(dir, 'nowhere'), join(dir, 'dangling'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('finds files and folders either way', async () => {
    for (const as of ['input', 'output'] as const) {
      assert.equal(await pathExists(join(dir, 'file'), as), true);
      assert.equal(await pathExists(dir, as), true);
    }
  });

  it('answers false for a missing entry and for a path through a file', async () => {
    for (const as of ['input', 'output'] as const) {
      assert.equal(await pathExists(join(dir, 'missing'), as), false);
      assert.equal(await pathExists(join(dir, 'file', 'inside'), as), false);
    }
  });

  it('counts a dangling link as an output that exists but not as an input', async () => {
    assert.equal(await pathExists(join(dir, 'dangling'), 'input'), false);
    assert.equal(await pathExists(join(dir, 'dangling'), 'output'), true);
  });

  it('throws other failures instead of calling the path missing', async () => {
    // a name longer than the file system allows fails with ENAMETOOLONG, not ENOENT
    await assert.rejects(pathExists(join(dir, 'x'.repeat(300)), 'input'), /ENAMETOOLONG/);
  });
});
