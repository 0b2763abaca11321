/**
 * loadTokenizer's inputs: what a broken or missing tokenizer file reports, which files are noted
 * as inputs of the run, and a folder with tokenizer.json alone.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { InputError } from '../../src/errors.js';
import { inputsSoFar, withInputTracking } from '../../src/io/inputs.js';
import { loadTokenizer } from '../../src/tokenizer/tokenizer.js';
import { tempFolders } from '../helpers/synthetic.js';
import { TINYFAM } from '../helpers/tinyfam.js';

const fresh = tempFolders('loraforge-tokenizer-');
const LLAMA = join(TINYFAM, 'llama-base');

async function rejectsWith(folder: string, file: string, message: RegExp): Promise<void> {
  await assert.rejects(loadTokenizer(folder), (err: Error) => {
    assert.ok(err instanceof InputError, `${err.constructor.name}: ${err.message}`);
    assert.equal(err.file, file);
    assert.match(err.message, message);
    assert.ok(err.message.startsWith(file), err.message);
    return true;
  });
}

describe('loadTokenizer', () => {
  test('no tokenizer.json: an InputError naming it and saying where to get it', async () => {
    const dir = await fresh('missing');
    await rejectsWith(dir, join(dir, 'tokenizer.json'), /: not found; .*copy tokenizer\.json \(and tokenizer_config\.json\) from the model's original release/);
    await rejectsWith(join(dir, 'nowhere'), join(dir, 'nowhere'), /: no such model folder: check the path$/);
  });

  test('a tokenizer.json that is cut short, not a tokenizer, or not a file', async () => {
    const cut = await fresh('cut');
    await writeFile(join(cut, 'tokenizer.json'), '{"model": {"type": "BPE", "vocab": {');
    await rejectsWith(cut, join(cut, 'tokenizer.json'), /: not valid JSON \(.*\): the file is damaged or cut short/);
    const alien = await fresh('alien');
    await writeFile(join(alien, 'tokenizer.json'), '{"model": {"type": "NoSuchModel"}}');
    await rejectsWith(alien, join(alien, 'tokenizer.json'), /: not a tokenizer @huggingface\/tokenizers can load \(.+\); restore the file/);
    const array = await fresh('array');
    await writeFile(join(array, 'tokenizer.json'), '[]');
    await rejectsWith(array, join(array, 'tokenizer.json'), /: expected a JSON object/);
    const folder = await fresh('folder');
    await mkdir(join(folder, 'tokenizer.json'));
    await rejectsWith(folder, join(folder, 'tokenizer.json'), /tokenizer\.json: /);
  });

  test('a corrupt tokenizer_config.json is named too', async () => {
    const dir = await fresh('config');
    await copyFile(join(LLAMA, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    await writeFile(join(dir, 'tokenizer_config.json'), '{"add_bos_token": tru');
    await rejectsWith(dir, join(dir, 'tokenizer_config.json'), /not valid JSON/);
  });

  test('tokenizer.json alone (with config.json for EOS): BOS from its post-processor', async () => {
    const dir = await fresh('alone');
    await copyFile(join(LLAMA, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    await writeFile(join(dir, 'config.json'), JSON.stringify({ eos_token_id: 2 }));
    const tok = await loadTokenizer(dir);
    assert.deepEqual([tok.bosId, tok.addBos, tok.eosId], [1, true, 2]);
    assert.deepEqual(tok.encode('Hello world', { addSpecialTokens: true }), [1, 22557, 1526]);
    assert.deepEqual(tok.encode('Hello world'), [22557, 1526]);
  });

  test('every file read is an input of the run', async () => {
    const read = await withInputTracking(async () => {
      await loadTokenizer(LLAMA);
      return inputsSoFar();
    });
    for (const name of ['tokenizer.json', 'tokenizer_config.json', 'config.json', 'generation_config.json']) assert.ok(read.includes(join(LLAMA, name)), name);
  });
});
