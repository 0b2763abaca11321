import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { evaluateSetting, resolveParameter } from '../../src/merge/params.js';

describe('evaluateSetting (mergekit evaluate_setting)', () => {
  it('returns scalars as they are, whatever t', () => {
    assert.equal(evaluateSetting(0.3, 'x', 0.7), 0.3);
    assert.equal(evaluateSetting(true, 'x', 0), true);
  });

  it('interpolates numeric gradients linearly across t', () => {
    // [1, 2, 4]: t·(n−1) = 1.5 at t = 0.75, halfway between 2 and 4
    assert.equal(evaluateSetting([1, 2, 4], 'x', 0.75), 3);
    assert.equal(evaluateSetting([1, 2, 4], 'x', 0), 1);
    assert.equal(evaluateSetting([1, 2, 4], 'x', 1), 4);
    assert.equal(evaluateSetting([0, 1], 'x', 0.25), 0.25);
    // a one-entry gradient is constant
    assert.equal(evaluateSetting([0.4], 'x', 0.9), 0.4);
  });

  it('picks entries of boolean gradients by ⌊t·(n−1)⌋', () => {
    assert.equal(evaluateSetting([true, false, true], 'x', 0.49), true);
    assert.equal(evaluateSetting([true, false, true], 'x', 0.5), false);
    assert.equal(evaluateSetting([true, false, true], 'x', 1), true);
  });

  it('takes the first filter that is a substring of the tensor name, or none', () => {
    const setting = [
      { filter: 'self_attn', value: 0.1 },
      { filter: 'mlp', value: [0, 1] },
    ];
    assert.equal(evaluateSetting(setting, 'model.layers.3.self_attn.q_proj.weight', 0.5), 0.1);
    assert.equal(evaluateSetting(setting, 'model.layers.3.mlp.up_proj.weight', 0.5), 0.5);
    assert.equal(evaluateSetting(setting, 'model.norm.weight', 0.5), undefined);
    assert.equal(evaluateSetting([...setting, { value: 7 }], 'model.norm.weight', 0.5), 7);
    assert.equal(evaluateSetting([{ filter: '*', value: 2 }], 'anything', 0), 2);
  });
});

describe('resolveParameter (ConfigReader.parameter levels)', () => {
  it('falls through levels whose setting does not apply to the tensor', () => {
    const model = { weight: [{ filter: 'mlp', value: 0.9 }] };
    const slice = { weight: 0.5 };
    const top = { weight: 0.1, density: 0.3 };
    assert.equal(resolveParameter('weight', [model, slice, top], 'x.mlp.y', 0), 0.9);
    assert.equal(resolveParameter('weight', [model, slice, top], 'x.self_attn.y', 0), 0.5);
    assert.equal(resolveParameter('weight', [model, undefined, top], 'x.self_attn.y', 0), 0.1);
    assert.equal(resolveParameter('density', [model, slice, top], 'x', 0), 0.3);
    assert.equal(resolveParameter('lambda', [model, slice, top], 'x', 0), undefined);
  });
});
