import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '../../src/cli/errors.js';
import { sourceFlags } from '../../src/cli/spectrum.js';
import { isSelected } from '../../src/edit/selectors.js';
import { layerIndexOf, moduleTypeOf, naturalCompare } from '../../src/lora/module-names.js';
import { parseIndexList, parseNameList, parseRegexFlag, parseScaleList } from '../../src/cli/selector-flags.js';

describe('selectors', () => {
  it('parses index lists with ranges, sorted and without duplicates', () => {
    assert.deepEqual(parseIndexList('--zero', '0,1,2'), [0, 1, 2]);
    assert.deepEqual(parseIndexList('--keep', '0-3'), [0, 1, 2, 3]);
    assert.deepEqual(parseIndexList('--layers', '20-22, 5 ,21'), [5, 20, 21, 22]);
    assert.deepEqual(parseIndexList('--keep', '7'), [7]);
  });

  it('refuses malformed index lists with a usage error naming the flag', () => {
    for (const [text, message] of [
      ['a', /--zero: "a" in "a" is not a non-negative integer/],
      ['-1', /not a non-negative integer/],
      ['1.5', /not a non-negative integer/],
      ['1,,2', /empty entry/],
      ['3-1', /runs backwards; write 1-3/],
      ['0-99999999', /more than 1000000/],
    ] as const) {
      assert.throws(() => parseIndexList('--zero', text), (e: unknown) => e instanceof UsageError && message.test(e.message), text);
    }
  });

  it('parses --scale INDEX:FACTOR and RANGE:FACTOR entries', () => {
    assert.deepEqual([...parseScaleList('--scale', '0:0.5,1:2')], [[0, 0.5], [1, 2]]);
    assert.deepEqual([...parseScaleList('--scale', '2-4:-1e-1')], [[2, -0.1], [3, -0.1], [4, -0.1]]);
    for (const [text, message] of [
      ['0', /must be INDEX:FACTOR/],
      ['0:', /must be INDEX:FACTOR/],
      ['0:x', /factor "x"/],
      ['0:Infinity', /not a finite number/],
      ['0:1,0-1:2', /component 0 is given two factors/],
      ['a:1', /not a non-negative integer/],
    ] as const) {
      assert.throws(() => parseScaleList('--scale', text), (e: unknown) => e instanceof UsageError && message.test(e.message), text);
    }
  });

  it('parses module names and regular expressions', () => {
    assert.deepEqual(parseNameList('--modules', 'q_proj, v_proj,q_proj'), ['q_proj', 'v_proj']);
    assert.throws(() => parseNameList('--modules', 'q_proj,'), UsageError);
    assert.equal(parseRegexFlag('--include', 'self_attn\\.').test('model.layers.0.self_attn.q_proj'), true);
    assert.throws(() => parseRegexFlag('--include', '('), /--include: "\(" is not a valid regular expression/);
  });

  it('reads the layer and module type from a module path', () => {
    assert.equal(layerIndexOf('model.layers.31.mlp.down_proj'), 31);
    assert.equal(layerIndexOf('layers.0.attention.wq'), 0);
    assert.equal(layerIndexOf('model.embed_tokens'), null);
    assert.equal(layerIndexOf('model.sublayers.3.x'), null, '"sublayers." is not "layers."');
    assert.equal(moduleTypeOf('model.layers.3.self_attn.q_proj.weight'), 'q_proj');
    assert.equal(moduleTypeOf('model.layers.3.self_attn.q_proj'), 'q_proj');
  });

  it('selects by layer and module type; --layers leaves modules outside the layer stack alone', () => {
    const sel = { layers: new Set([20, 21]), modules: new Set(['q_proj', 'v_proj']) };
    assert.equal(isSelected(sel, 'model.layers.20.self_attn.q_proj'), true);
    assert.equal(isSelected(sel, 'model.layers.20.self_attn.k_proj'), false);
    assert.equal(isSelected(sel, 'model.layers.2.self_attn.q_proj'), false);
    assert.equal(isSelected({ layers: new Set([0]) }, 'model.embed_tokens'), false);
    assert.equal(isSelected({}, 'model.embed_tokens'), true);
  });

  it('orders names naturally (layers.2 before layers.10)', () => {
    const names = ['model.layers.10.q', 'model.layers.2.v', 'model.layers.2.q', 'lm_head', 'model.layers.1.q'];
    assert.deepEqual([...names].sort(naturalCompare), ['lm_head', 'model.layers.1.q', 'model.layers.2.q', 'model.layers.2.v', 'model.layers.10.q']);
  });

  it('takes either an adapter or a full model pair', () => {
    assert.deepEqual(sourceFlags({ adapter: 'a' }), { adapter: 'a' });
    assert.deepEqual(sourceFlags({ modelA: 'x', modelB: 'y' }), { modelA: 'x', modelB: 'y' });
    assert.throws(() => sourceFlags({ adapter: 'a', modelA: 'x' }), /not both/);
    assert.throws(() => sourceFlags({ modelA: 'x' }), /both --model-a PATH and --model-b PATH/);
    assert.throws(() => sourceFlags({}), UsageError);
  });
});
