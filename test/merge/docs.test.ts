/**
 * docs/usage/merge.md's method table is written by hand (the README's Commands section is built
 * from it): every method of the table in methods.ts has its row there, naming all its parameters.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { it } from 'node:test';
import { MERGE_METHODS, METHOD_NAMES } from '../../src/merge/methods.js';
import { REPO_ROOT } from '../helpers/cli.js';

it('docs/usage/merge.md has a row for every method, naming its parameters', () => {
  const doc = readFileSync(join(REPO_ROOT, 'docs', 'usage', 'merge.md'), 'utf8');
  for (const name of METHOD_NAMES) {
    const row = doc.split('\n').find((l) => l.startsWith(`| \`${name}\` |`));
    assert.ok(row, `no row for ${name}`);
    const { params, tensorParams } = MERGE_METHODS[name];
    for (const p of [...params, ...tensorParams].filter((q) => q.name !== 'int8_mask')) {
      assert.ok(row.includes(`\`${p.name}\``), `${name}: the row does not name ${p.name}`);
    }
  }
});
