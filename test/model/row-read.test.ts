/**
 * Embedding lookups read only the rows of the tokens asked for (row-read.ts through Engine.embed):
 * a NaN planted in an unused row is never read, one in a used row is refused naming the row; a
 * resident engine reads the table whole, and an in-memory table is looked up as it is.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { LinalgBackend } from '../../src/linalg/backend.js';
import { getBackend } from '../../src/linalg/index.js';
import { Engine } from '../../src/model/engine.js';
import { tinyLlamaConfig, tinyLlamaWeights, writeTinyLlama } from '../helpers/llamacpp.js';
import { tempFolders } from '../helpers/synthetic.js';

const folder = tempFolders('loraforge-row-read-');
const SHAPE = { vocab: 50, hidden: 8, layers: 1, heads: 2, kvHeads: 1, intermediate: 12 };
const EMBED = 'model.embed_tokens.weight';

let backend: LinalgBackend;
before(async () => {
  backend = await getBackend();
});
after(() => backend.dispose?.());

describe('embedding rows', () => {
  it('reads the rows of the tokens asked for and no other', async () => {
    const dir = await folder('m');
    const weights = tinyLlamaWeights(SHAPE, 3);
    const table = weights[EMBED]!.data;
    table[7 * SHAPE.hidden + 3] = NaN;
    await writeTinyLlama(dir, weights, tinyLlamaConfig(SHAPE));
    const engine = await Engine.open(dir, [], backend);
    const resident = await Engine.open(dir, [], backend);
    try {
      const ids = [0, 12, 49, 12];
      const x = await engine.embed(ids);
      ids.forEach((id, i) => assert.deepEqual(x.subarray(i * SHAPE.hidden, (i + 1) * SHAPE.hidden), table.subarray(id * SHAPE.hidden, (id + 1) * SHAPE.hidden)));
      await assert.rejects(engine.embed([3, 7]), /embed_tokens\.weight" \(row 7\) holds NaN at element 3/);
      // the whole table is read by a resident engine: the NaN is met whatever the tokens
      resident.resident();
      await assert.rejects(resident.embed([0]), /embed_tokens\.weight" holds NaN/);
      // a table replaced in memory is looked up there, not on disk
      const replaced = Float32Array.from({ length: SHAPE.vocab * SHAPE.hidden }, (_, i) => i);
      engine.setOverrides(new Map([[EMBED, replaced]]));
      assert.deepEqual([...(await engine.embed([7]))], [56, 57, 58, 59, 60, 61, 62, 63]);
    } finally {
      await engine.close();
      await resident.close();
    }
  });
});
