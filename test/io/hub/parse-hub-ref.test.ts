import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseHubRef } from '../../../src/io/hub/index.js';

describe('parseHubRef', () => {
  it('reads org/name, a revision and a path inside the repo', () => {
    assert.deepEqual(parseHubRef('meta-llama/Llama-3.1-8B-Instruct'), { repo: 'meta-llama/Llama-3.1-8B-Instruct' });
    assert.deepEqual(parseHubRef('Qwen/Qwen2.5-0.5B@main'), { repo: 'Qwen/Qwen2.5-0.5B', revision: 'main' });
    assert.deepEqual(parseHubRef('org/name/sub/file.safetensors'), { repo: 'org/name', path: 'sub/file.safetensors' });
    assert.deepEqual(parseHubRef('org/name@v1.0/adapter'), { repo: 'org/name', revision: 'v1.0', path: 'adapter' });
    assert.deepEqual(parseHubRef('org/name@refs/pr/3/model.safetensors'), { repo: 'org/name', revision: 'refs/pr/3', path: 'model.safetensors' });
  });

  it('leaves local paths alone', () => {
    for (const text of ['model', './org/name', '../org/name', '/abs/org/name', '~/models/x', 'C:\\models\\x', 'org/name/', 'org//name',
      'out/model.safetensors', 'dir/config.json', 'org/na--me', 'org/.hidden', 'org/name/../x', 'org/name@', 'org/name@../x', 'org/name@a b']) {
      assert.equal(parseHubRef(text), undefined, text);
    }
  });
});
