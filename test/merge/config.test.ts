import assert from 'node:assert/strict';
import { HubError } from '../../src/io/hub/index.js';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { UsageError } from '../../src/errors.js';
import { mergeModels, parseMergeConfig, validateMergeConfig } from '../../src/merge/index.js';
import { makeTempDir } from '../helpers/synthetic.js';

/** The message of the UsageError (exit 2) `text` is refused with: every config mistake, YAML syntax included. */
function parseError(text: string): string {
  try {
    parseMergeConfig(text, 'merge.yaml');
  } catch (err) {
    assert.ok(err instanceof UsageError, `not a UsageError: ${(err as Error).message}`);
    return (err as Error).message;
  }
  assert.fail('expected the config to be refused');
}

describe('parseMergeConfig', () => {
  it('reads models, parameters of every shape, dtype and tokenizer_source into a typed config', () => {
    const c = parseMergeConfig(
      `merge_method: ties
base_model: ./base
models:
  - model: ./a
    parameters:
      weight: [0.2, 0.8]
      density: [{filter: mlp, value: 0.3}, {value: 0.6}]
  - model: ./b
    parameters: {weight: 0.5}
parameters:
  normalize: false
  lambda: 1.5
dtype: float16
tokenizer_source: base
`,
      'merge.yaml',
    );
    assert.equal(c.method.name, 'ties');
    assert.equal(c.baseModel?.name, './base');
    assert.equal(c.dtype, 'F16');
    assert.equal(c.tokenizer?.source, 'base');
    assert.deepEqual(c.models?.map((m) => m.model.name), ['./a', './b']);
    assert.deepEqual(c.models?.[0].parameters, { weight: [0.2, 0.8], density: [{ filter: 'mlp', value: 0.3 }, { value: 0.6 }] });
    assert.deepEqual(c.parameters, { normalize: false, lambda: 1.5 });
    assert.match(c.models?.[1].model.where ?? '', /^merge\.yaml:8:12: models\[1\]\.model$/);
  });

  it('reads tokenizer_source, the tokenizer: block (mergekit defaults) and chat_template', () => {
    const top = 'merge_method: linear\nmodels: [{model: ./a}, {model: ./b}]\n';
    assert.equal(parseMergeConfig(`${top}tokenizer_source: union\n`).tokenizer?.source, 'union');
    assert.equal((parseMergeConfig(`${top}tokenizer_source: ./b\n`).tokenizer?.source as { name: string }).name, './b');
    const c = parseMergeConfig(`${top}chat_template: auto\ntokenizer:\n  pad_to_multiple_of: 64\n  tokens:\n    "<|im_end|>": {source: ./b, force: true}\n    "<x>": {source: {kind: zero}}\n    "<y>": {source: {kind: model_token, model: ./a, token_id: 3}}\n`);
    assert.equal(c.chatTemplate, 'auto');
    assert.equal(c.tokenizer?.source, 'union');
    assert.equal(c.tokenizer?.padToMultipleOf, 64);
    assert.deepEqual([...(c.tokenizer?.tokens.keys() ?? [])], ['<|im_end|>', '<x>', '<y>']);
    assert.equal(c.tokenizer?.tokens.get('<|im_end|>')?.force, true);
    assert.deepEqual(c.tokenizer?.tokens.get('<x>')?.source, { kind: 'zero' });
    assert.equal((c.tokenizer?.tokens.get('<y>')?.source as { tokenId: number }).tokenId, 3);
    assert.match(parseError(`${top}tokenizer_source: base\ntokenizer: {source: union}\n`), /either tokenizer_source or a tokenizer: block, not both/);
    assert.match(parseError(`${top}tokenizer: {pad_to_multiple_of: 0}\n`), /merge\.yaml:3:33: tokenizer\.pad_to_multiple_of: expected a positive whole number/);
    assert.match(parseError(`${top}tokenizer: {tokens: {"<x>": {force: true}}}\n`), /each token needs a source/);
    assert.match(parseError(`${top}tokenizer: {tokens: {"<x>": {source: {kind: model_token, model: ./a}}}}\n`), /exactly one of token .* or token_id/);
    assert.match(parseError(`${top}tokenizer: {tokens: {"<x>": {source: {kind: mean}}}}\n`), /expected kind: zero or kind: model_token/);
  });

  it('reads slices with layer ranges and per-slice parameters', () => {
    const c = parseMergeConfig(
      `merge_method: slerp
base_model: ./a
slices:
  - sources:
      - {model: ./a, layer_range: [0, 4]}
      - {model: ./b, layer_range: [2, 6]}
    parameters: {t: [0, 1]}
`,
    );
    assert.deepEqual(c.slices?.[0].sources.map((s) => s.layerRange), [[0, 4], [2, 6]]);
    assert.deepEqual(c.slices?.[0].parameters, { t: [0, 1] });
  });

  it('reports YAML syntax errors with their line', () => {
    const msg = parseError('merge_method: linear\nmodels:\n  - model: ./a\n    parameters: {weight: 0.5\n  - model: ./b\n');
    assert.match(msg, /^merge\.yaml: not valid YAML: .*line 5, column 3/s);
    assert.match(parseError('merge_method: linear\nmerge_method: ties\n'), /unique.*line 2/s);
  });

  it('names unknown methods and lists the valid ones', () => {
    const msg = parseError('merge_method: tie\nmodels: [{model: ./a}]\n');
    assert.match(msg, /merge\.yaml:1:15: merge_method: unknown or unsupported merge_method "tie"; valid: linear, task_arithmetic, ties, dare_linear, dare_ties, slerp, passthrough/);
    assert.match(parseError('models: [{model: ./a}]\n'), /merge_method is missing; valid methods: linear/);
  });

  it('names unknown parameters with their line and lists the valid ones', () => {
    const msg = parseError('merge_method: ties\nbase_model: ./b\nmodels:\n  - model: ./a\n    parameters:\n      weigth: 0.5\n');
    assert.match(msg, /^merge\.yaml:6:15: models\[0\]\.parameters\.weigth: unknown parameter "weigth"; valid per-model parameters for ties: weight, density$/);
    const top = parseError('merge_method: slerp\nbase_model: ./a\nmodels: [{model: ./a}, {model: ./b}]\nparameters: {t: 0.5, weight: 1}\n');
    assert.match(top, /unknown parameter "weight"; valid parameters for slerp: t$/);
    assert.match(parseError('merge_method: slerp\nmodels: [{model: ./a, parameters: {weight: 1}}]\n'), /slerp takes no per-model parameters/);
  });

  it('refuses merge-wide parameters set on one model', () => {
    const msg = parseError('merge_method: ties\nbase_model: ./b\nmodels:\n  - model: ./a\n    parameters: {weight: 1, normalize: true}\n');
    assert.match(msg, /parameters\.normalize: "normalize" applies to the whole merge, not to one model/);
  });

  it('checks value types and list shapes', () => {
    assert.match(parseError('merge_method: linear\nmodels: [{model: ./a, parameters: {weight: high}}]\n'), /weight must be a number.*got "high"/);
    assert.match(parseError('merge_method: linear\nparameters: {normalize: 0.5}\nmodels: [{model: ./a}]\n'), /normalize must be true or false, got 0\.5/);
    assert.match(parseError('merge_method: linear\nmodels: [{model: ./a, parameters: {weight: []}}]\n'), /weight is an empty list/);
    assert.match(parseError('merge_method: linear\nmodels: [{model: ./a, parameters: {weight: [1, {value: 2}]}}]\n'), /mixes plain values and \{filter, value\} entries/);
    assert.match(parseError('merge_method: linear\nmodels: [{model: ./a, parameters: {weight: [{filter: mlp, valu: 2}]}}]\n'), /unknown key "valu"; valid keys here: filter, value/);
  });

  it('checks the overall structure', () => {
    assert.match(parseError(''), /the config is empty/);
    assert.match(parseError('merge_method: linear\n'), /give the models to merge under models \(or slices\)/);
    assert.match(parseError('merge_method: linear\nmodels: [{model: ./a}]\nslices: [{sources: [{model: ./a, layer_range: [0, 1]}]}]\n'), /either models or slices, not both/);
    assert.match(parseError('merge_method: linear\nmodules: {}\nmodels: [{model: ./a}]\n'), /modules: per-module configs are not supported yet/);
    assert.match(parseError('merge_method: linear\nmodel: ./a\n'), /unknown key "model"; valid keys here: merge_method, base_model, models, slices/);
    assert.match(parseError('merge_method: linear\ndtype: int8\nmodels: [{model: ./a}]\n'), /unknown dtype "int8"; valid: bfloat16, float16, float32/);
    assert.match(parseError('merge_method: passthrough\nslices: [{sources: [{model: ./a, layer_range: [5, 2]}]}]\n'), /merge\.yaml:2:47: .*layer_range \[5, 2\] ends before it starts/);
    assert.match(parseError('merge_method: passthrough\nslices: [{sources: [{model: ./a, layer_range: [0]}]}]\n'), /expected \[first, end\] layer indices/);
    assert.match(parseError('merge_method: passthrough\nslices: [{sources: [{model: ./a}]}]\n'), /each source needs a layer_range/);
  });

  it('refuses values that select or keep nothing, or leave the interpolation, naming the YAML line', () => {
    const empty = parseError('merge_method: passthrough\nslices:\n  - sources: [{model: ./a, layer_range: [0, 2]}]\n  - sources:\n      - model: ./a\n        layer_range: [1, 1]\n');
    assert.match(empty, /^merge\.yaml:6:22: slices\[1\]\.sources\[0\]\.layer_range: layer_range \[1, 1\] selects no layer \(the end is exclusive\): use \[1, 2\] for layer 1$/);
    const ties = (density: string) => parseError(`merge_method: ties\nbase_model: ./b\nmodels:\n  - model: ./a\n    parameters: {weight: 1, density: ${density}}\n`);
    assert.match(ties('0'), /^merge\.yaml:5:38: models\[0\]\.parameters\.density: density must lie in \(0, 1\], got 0 \(fraction of task-vector entries kept\)$/);
    assert.match(ties('1.5'), /density must lie in \(0, 1\], got 1\.5/);
    assert.match(ties('[0.5, -0.1]'), /models\[0\]\.parameters\.density\[1\]: density must lie in \(0, 1\], got -0\.1/);
    assert.match(parseError('merge_method: dare_linear\nbase_model: ./b\nmodels: [{model: ./a, parameters: {weight: 1, density: 0}}]\n'), /density must lie in \(0, 1\]/);
    // without sparsification density does nothing, so nothing is refused
    parseMergeConfig('merge_method: task_arithmetic\nbase_model: ./b\nmodels: [{model: ./a, parameters: {weight: 1, density: 0}}]\n', 'merge.yaml');
    const slerp = (t: string) => parseError(`merge_method: slerp\nbase_model: ./a\nmodels: [{model: ./a}, {model: ./b}]\nparameters: {t: ${t}}\n`);
    assert.match(slerp('1.2'), /^merge\.yaml:4:17: parameters\.t: t must lie in \[0, 1\], got 1\.2 \(interpolation position: 0 = base_model, 1 = the other model\)$/);
    assert.match(slerp('-0.5'), /t must lie in \[0, 1\], got -0\.5/);
    assert.match(slerp('[{filter: mlp, value: 2}, {value: 0.5}]'), /parameters\.t\[0\]\.value: t must lie in \[0, 1\], got 2/);
  });

  it('checks object configs the same way, locating errors by key path', () => {
    assert.throws(() => validateMergeConfig({ merge_method: 'linear', models: [{ model: './a', parameters: { wieght: 1 } }] }), /^Error: merge config: models\[0\]\.parameters\.wieght: unknown parameter/);
  });
});

describe('model references', () => {
  const usage = (message: RegExp) => (err: Error) => err instanceof UsageError && message.test(err.message);

  it('takes Hub ids to the Hub (here: offline, nothing cached), and refuses MODEL+ADAPTER references without an adapter folder and missing folders with a clear message (config mistakes: UsageError, exit 2)', async () => {
    const dir = await makeTempDir('loraforge-merge-cfg-');
    try {
      const out = join(dir, 'out');
      await assert.rejects(
        mergeModels({ config: { merge_method: 'linear', models: [{ model: 'meta-llama/Llama-3.2-1B', parameters: { weight: 1 } }] }, out, cwd: dir, hub: { offline: true, cacheDir: join(dir, 'hub') } }),
        (err: Error) => err instanceof HubError && err.kind === 'offline-miss' && /models\[0\]\.model: meta-llama\/Llama-3\.2-1B@main is not in the cache/.test(err.message),
      );
      await assert.rejects(mergeModels({ config: { merge_method: 'linear', models: [{ model: './m+./lora', parameters: { weight: 1 } }] }, out, cwd: dir }), usage(/"\.\/m\+\.\/lora" is neither a model folder nor MODEL\+ADAPTER: "\.\/lora" after its last "\+" is not a PEFT adapter folder/));
      await assert.rejects(mergeModels({ config: { merge_method: 'linear', models: [{ model: './nope', parameters: { weight: 1 } }] }, out, cwd: dir }), usage(/model folder "\.\/nope" does not exist/));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
