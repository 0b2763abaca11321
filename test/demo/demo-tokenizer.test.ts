import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeDemoTokenizer } from '../../src/demo/demo-tokenizer.js';
import { makeTempDir } from '../helpers/synthetic.js';

describe('the demo tokenizer', async () => {
  const dir = await makeTempDir('lf-demo-tok-');
  after(() => rm(dir, { recursive: true, force: true }));

  it('is a consistent byte-level BPE within the vocabulary, with BOS/EOS as special tokens', async () => {
    await writeDemoTokenizer(dir, 1000);
    const tok = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8'));
    const vocab = tok.model.vocab as Record<string, number>;
    const ids = Object.values(vocab).sort((x, y) => x - y);
    assert.deepEqual(ids, ids.map((_, i) => i), 'ids 0..n-1');
    assert.equal(ids.length >= 256 + 300, true, `${ids.length} tokens`);
    // every merge joins two known tokens into a known token (what tokenizers checks when loading)
    for (const m of tok.model.merges as string[]) {
      const [a, b] = m.split(' ');
      assert.ok(a in vocab && b in vocab && a + b in vocab, m);
    }
    assert.deepEqual(tok.added_tokens.map((t: { id: number; content: string }) => [t.id, t.content]), [
      [ids.length, '<|begin_of_text|>'],
      [ids.length + 1, '<|end_of_text|>'],
    ]);
    assert.ok(ids.length + 2 <= 1000, 'within the embedding rows');
    const config = JSON.parse(await readFile(join(dir, 'tokenizer_config.json'), 'utf8'));
    assert.deepEqual([config.bos_token, config.eos_token], ['<|begin_of_text|>', '<|end_of_text|>']);
  });
});
