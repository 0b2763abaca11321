// `loraforge … --help | head -1`: the reader closing the pipe early ends the CLI quietly, not with an EPIPE stack trace.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { it } from 'node:test';
import { REPO_ROOT } from '../helpers/cli.js';

it('a closed stdout pipe ends --help with exit 0 and nothing on stderr', async () => {
  const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'loraforge.js'), 'extract', '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy(); // the reader is gone before the help is written
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /EPIPE|Error/);
});
