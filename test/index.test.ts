import { it } from 'node:test';
import assert from 'node:assert/strict';
import * as loraforge from '../src/index.js';

it('the library entry point exposes every capability', () => {
  for (const name of ['extractLora', 'mergeAdapters', 'mergeModels', 'applyAdapters', 'convertAdapter', 'edoraInit', 'adapterSpectrum', 'deltaSpectrum', 'convertToGguf', 'inspectPath', 'openCheckpoint', 'openPeftAdapter', 'getBackend', 'describeOsError']) {
    assert.equal(typeof (loraforge as Record<string, unknown>)[name], 'function', name);
  }
});
