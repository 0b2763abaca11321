/** A worker for test/pipeline/worker-rpc.test.ts: doubles arrays, fails or dies on request. */
import { serveRequests } from '../../src/pipeline/worker-rpc.js';

type Request = { op: 'double'; data: Float32Array } | { op: 'fail'; tensor: string } | { op: 'exit' } | { op: 'count' };

class ReadError extends Error {
  constructor(
    readonly file: string,
    readonly tensor: string,
  ) {
    super(`${file}: tensor "${tensor}" could not be read`);
    this.name = 'ReadError';
  }
}

let notices = 0;
serveRequests<Request, Float32Array | number, string>({
  request(m) {
    if (m.op === 'fail') throw new ReadError('/models/b/model.safetensors', m.tensor);
    if (m.op === 'exit') process.exit(7);
    if (m.op === 'count') return notices;
    return m.data.map((x) => 2 * x);
  },
  transfer: (value) => (typeof value === 'number' ? [] : [value.buffer as ArrayBuffer]),
  notice: () => void notices++,
  close() {},
});
