/** Messages speak of the user's files, modules and flags, never of our functions. */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fromSvd } from '../../src/lowrank/low-rank.js';
import { matrix } from '../../src/tensor/matrix.js';
import { writePeftFixture } from '../helpers/dora.js';
import { REPO_ROOT, runCli } from '../helpers/cli.js';
import { makeTempDir, writeModelFolder } from '../helpers/synthetic.js';
import { rm } from 'node:fs/promises';

/** A thrown message that opens with a camelCase identifier and a colon: `factorsFromSvd: …`. */
const FUNCTION_PREFIX = /new Error\(\s*[`'"][a-z]+[A-Z][A-Za-z0-9]*:/;

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sourceFiles(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

describe('no internal names in messages', () => {
  it('no error in src opens with a function name', async () => {
    const offenders: string[] = [];
    for (const file of await sourceFiles(join(REPO_ROOT, 'src'))) {
      (await readFile(file, 'utf8')).split('\n').forEach((line, i) => {
        if (FUNCTION_PREFIX.test(line)) offenders.push(`${file.slice(REPO_ROOT.length + 1)}:${i + 1}: ${line.trim()}`);
      });
    }
    assert.deepEqual(offenders, []);
  });

  it('every JSON file is parsed by io/json-file.ts, which names the file on an error', async () => {
    // the safetensors header is JSON inside a binary file (local or read by range from the Hub): its readers name the file themselves
    const allowed = new Set(['src/io/json-file.ts', 'src/io/safetensors.ts', 'src/io/hub/read-remote-safetensors-header.ts']);
    const offenders: string[] = [];
    for (const file of await sourceFiles(join(REPO_ROOT, 'src'))) {
      const rel = file.slice(REPO_ROOT.length + 1);
      if (!allowed.has(rel) && /JSON\.parse\(/.test(await readFile(file, 'utf8'))) offenders.push(rel);
    }
    assert.deepEqual(offenders, []);
  });

  it('an unreachable rank names the update and points at non-finite inputs', () => {
    const svd = { U: matrix(4, 0), S: new Float64Array(0), V: matrix(4, 0) };
    assert.throws(() => fromSvd(svd, 1, { what: 'ad: module q_proj' }), /^Error: ad: module q_proj: cannot keep rank 1: .*NaN or infinite values/);
  });

  describe('convert --base <model with NaN>', () => {
    let dir = '';
    before(async () => {
      dir = await makeTempDir('loraforge-faults-names-');
      const H = 8;
      const q = Float32Array.from({ length: H * H }, (_, i) => Math.sin(i * 1.3) * 0.1);
      q[5] = NaN;
      await writeModelFolder(join(dir, 'base'), { 'model.layers.0.self_attn.q_proj.weight': { shape: [H, H], data: q } });
      const m = (rows: number, cols: number, s: number) => Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => Math.cos(i * 7 + j + s) * 0.1));
      await writePeftFixture(join(dir, 'dora'), {
        config: { r: 2, lora_alpha: 4, use_dora: true, target_modules: ['q_proj'] },
        modules: [{ name: 'model.layers.0.self_attn.q_proj', kind: 'linear', A: m(2, H, 1), B: m(H, 2, 2), magnitude: Array(H).fill(1) }],
      });
    });
    after(() => rm(dir, { recursive: true, force: true }));

    it('fails with one line about the user’s data, no function name', async () => {
      const r = await runCli(['convert', '--adapter', join(dir, 'dora'), '--base', join(dir, 'base'), '--out', join(dir, 'out'), '--quiet']);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, /NaN/);
      assert.doesNotMatch(r.stderr, /factorsFromSvd|fromSvd|loraforge: [a-z]+[A-Z]\w*:/);
    });
  });
});
