/**
 * Single experts of fused 3-D expert stacks: read alone from disk (BF16 decoded, a NaN in another
 * expert not touched, one in this expert refused naming the tensor), and transposed to out × in
 * for families that store (E, in, out).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openCheckpoint } from '../../src/io/checkpoint.js';
import { RawTensorReader } from '../../src/io/raw-read.js';
import { expertWeight, readExpert } from '../../src/model/expert-slice.js';
import { tempFolders, writeModelFolder } from '../helpers/synthetic.js';

const folder = tempFolders('loraforge-expert-slice-');

describe('expert slices', () => {
  it('reads expert e alone (BF16), refusing a NaN only in the expert read', async () => {
    const dir = await folder('m');
    // 3 experts of 2 × 4; integers are exact in BF16; expert 2 holds a NaN
    const data = Float32Array.from({ length: 24 }, (_, i) => i);
    data[20] = NaN;
    await writeModelFolder(dir, { 'model.layers.0.mlp.experts.down_proj': { shape: [3, 2, 4], data } }, { dtype: 'BF16' });
    const ckpt = await openCheckpoint(dir);
    const raw = new RawTensorReader();
    try {
      const loc = ckpt.locate('model.layers.0.mlp.experts.down_proj');
      assert.deepEqual([...readExpert(raw, loc, 1)], [8, 9, 10, 11, 12, 13, 14, 15]);
      assert.deepEqual([...readExpert(raw, loc, 0)], [0, 1, 2, 3, 4, 5, 6, 7]);
      assert.throws(() => readExpert(raw, loc, 2), /down_proj" \(expert 2\) holds NaN at element 4/);
      assert.throws(() => readExpert(raw, loc, 3), /expert 3 of a 3-D/);
    } finally {
      raw.close();
      await ckpt.close();
    }
  });

  it('gives out × in weights: as stored for (E, out, in), transposed for (E, in, out) families', () => {
    const data = Float32Array.from({ length: 6 }, (_, i) => i);
    const outIn = expertWeight({ model_type: 'mixtral', hidden_size: 3 }, 'model.layers.0.mlp.experts.gate_up_proj', [4, 2, 3], data);
    assert.deepEqual([outIn.rows, outIn.cols, ...outIn.data], [2, 3, 0, 1, 2, 3, 4, 5]);
    // gpt_oss stores (E, in, out): hidden 3 is the input of gate_up
    const inOut = expertWeight({ model_type: 'gpt_oss', hidden_size: 3 }, 'model.layers.0.mlp.experts.gate_up_proj', [4, 3, 2], data);
    assert.deepEqual([inOut.rows, inOut.cols, ...inOut.data], [2, 3, 0, 2, 4, 1, 3, 5]);
  });
});
