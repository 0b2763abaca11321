/**
 * lm_head streamed in blocks of vocabulary rows (head.ts): the logits equal the whole-table
 * product, blocks or not; a resident engine, or a table replaced in memory, is used whole.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { LinalgBackend } from '../../src/linalg/backend.js';
import { getBackend } from '../../src/linalg/index.js';
import { Engine } from '../../src/model/engine.js';
import { batchSequence } from '../../src/model/layer.js';
import { tinyLlamaConfig, tinyLlamaWeights, writeTinyLlama } from '../helpers/llamacpp.js';
import { tempFolders } from '../helpers/synthetic.js';

const folder = tempFolders('loraforge-head-');
// 8 rows × 200-row blocks × hidden 64 stays above the native GEMM's threshold, as real blocks do
const SHAPE = { vocab: 1000, hidden: 64, layers: 1, heads: 4, kvHeads: 2, intermediate: 96 };
const TOKENS = [1, 5, 17, 999, 3, 5, 250, 42];

let backend: LinalgBackend;
before(async () => {
  backend = await getBackend();
});
after(() => backend.dispose?.());

async function finalStates(engine: Engine): Promise<Float32Array> {
  const b = { x: await engine.embed(TOKENS), rows: TOKENS.length, seqs: [batchSequence(engine.spec, 0, TOKENS.length)] };
  await engine.forward(b);
  return b.x;
}

describe('lm_head in blocks', () => {
  it('gives the logits of the whole table, whatever the block size', async () => {
    const dir = await folder('m');
    const weights = tinyLlamaWeights(SHAPE, 7);
    await writeTinyLlama(dir, weights, tinyLlamaConfig(SHAPE));
    const engine = await Engine.open(dir, [], backend);
    const resident = await Engine.open(dir, [], backend);
    try {
      resident.resident();
      const whole = await resident.head();
      assert.ok('whole' in whole, 'a resident engine holds lm_head whole');
      const expected = await resident.logits(whole, await finalStates(resident), TOKENS.length);
      const h = await finalStates(engine);
      for (const blockRows of [8192, 300, 200]) {
        engine.headBlockRows = blockRows;
        const head = await engine.head();
        assert.ok('stored' in head, 'a streaming engine leaves lm_head on disk');
        assert.deepEqual(await engine.logits(head, h, TOKENS.length), expected, `blocks of ${blockRows} rows`);
      }
      // a table replaced in memory is multiplied as it is
      const replaced = new Float32Array(SHAPE.vocab * SHAPE.hidden).fill(0.5);
      engine.setOverrides(new Map([['lm_head.weight', replaced]]));
      const head = await engine.head();
      assert.ok('whole' in head && head.whole.data === replaced);
    } finally {
      await engine.close();
      await resident.close();
    }
  });
});
