import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WorkerClient } from '../../src/pipeline/worker-rpc.js';
import { startWorker } from '../../src/pipeline/worker-thread.js';

type Request = { op: 'double'; data: Float32Array } | { op: 'fail'; tensor: string } | { op: 'exit' } | { op: 'count' };

async function client(onFailure?: (err: Error) => void): Promise<WorkerClient<Request, Float32Array | number, string>> {
  const worker = await startWorker(import.meta.url, 'rpc-worker');
  assert.ok(worker, 'the test worker starts');
  return new WorkerClient(worker, 'the test worker', onFailure);
}

describe('worker-rpc', () => {
  it('answers each request by id, moves transferred arrays, and errors cross with file and tensor', async () => {
    const rpc = await client();
    try {
      const inputs = [1, 2, 3].map((v) => new Float32Array([v, -v]));
      const sent = inputs[0];
      const replies = await Promise.all(inputs.map((data, i) => rpc.request({ op: 'double', data }, i === 0 ? [data.buffer] : [])));
      assert.deepEqual(replies, [new Float32Array([2, -2]), new Float32Array([4, -4]), new Float32Array([6, -6])]);
      assert.equal(sent.byteLength, 0, 'a listed buffer moves to the worker instead of being copied');
      const err = await rpc.request({ op: 'fail', tensor: 'model.layers.0.q_proj.weight' }).then(
        () => assert.fail('the request should fail'),
        (e: Error & { file?: string; tensor?: string }) => e,
      );
      assert.equal(err.message, '/models/b/model.safetensors: tensor "model.layers.0.q_proj.weight" could not be read');
      assert.equal(err.file, '/models/b/model.safetensors');
      assert.equal(err.tensor, 'model.layers.0.q_proj.weight');
      assert.equal(err.name, 'ReadError');
      rpc.notify('one');
      rpc.notify('two');
      assert.equal(await rpc.request({ op: 'count' }), 2, 'notices arrive in order, before later requests, and the thread lives on after an error');
    } finally {
      await rpc.close();
    }
    await assert.rejects(rpc.request({ op: 'count' }), /^Error: the test worker was closed$/);
  });

  it('an unexpected exit fails pending and later requests and tells the owner once', async () => {
    const failures: Error[] = [];
    const rpc = await client((err) => failures.push(err));
    await assert.rejects(rpc.request({ op: 'exit' }), /^Error: the test worker exited unexpectedly \(code 7\)$/);
    await assert.rejects(rpc.request({ op: 'count' }), /exited unexpectedly/);
    assert.equal(failures.length, 1);
    await rpc.close();
  });
});
