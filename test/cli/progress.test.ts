import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createProgress, lazyProgress, type ProgressStream } from '../../src/cli/progress.js';

function fakeTerminal(columns: number | undefined): ProgressStream & { out: string[] } {
  const out: string[] = [];
  return { isTTY: true, columns, out, write: (text: string) => out.push(text) };
}

describe('createProgress', () => {
  // `script -qfc`, some CI ptys: columns is 0, not undefined; the bar used to end the run with "Invalid count value: -1"
  for (const columns of [0, 1, 2, 5, 80, 1e9, undefined, Number.NaN]) {
    it(`draws and clears at ${columns} columns without throwing, never longer than the terminal`, () => {
      const stream = fakeTerminal(columns);
      const bar = createProgress('extract', 3, { stream });
      for (let i = 0; i < 4; i++) bar.tick(`model.layers.${i}.self_attn.q_proj.weight`); // one tick past the total too
      bar.done();
      assert.ok(stream.out.length >= 2, 'drew at least once and cleared');
      const limit = columns && columns >= 1 && Number.isFinite(columns) ? Math.min(columns, 1000) : 80;
      for (const w of stream.out) for (const line of w.split('\r')) assert.ok(line.length <= limit - 1, `${JSON.stringify(line)} fits ${limit} columns`);
      assert.match(stream.out.at(-1)!, /^\r *\r$/, 'done() leaves an empty line');
    });
  }

  it('is silent when the stream is not a terminal, or with quiet', () => {
    const pipe = { ...fakeTerminal(80), isTTY: false };
    createProgress('x', 2, { stream: pipe }).tick('a');
    const quiet = fakeTerminal(80);
    createProgress('x', 2, { stream: quiet, quiet: true }).tick('a');
    assert.deepEqual([pipe.out, quiet.out], [[], []]);
  });

  it('lazyProgress clears only a bar it drew', () => {
    const stream = fakeTerminal(0);
    const p = lazyProgress('apply', false, stream);
    p.done();
    assert.equal(stream.out.length, 0);
    p.tick({ index: 0, name: 'w', total: 1 });
    p.done();
    assert.match(stream.out.at(-1)!, /^\r *\r$/);
  });
});
