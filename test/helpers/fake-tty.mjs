// Preloaded (node --import) by runCli({ tty }): makes stderr look like a terminal of FAKE_TTY_COLUMNS columns,
// so the progress bar draws, and records every stdout/stderr write, in order, to FAKE_TTY_LOG (one JSON
// [stream, text] per line): the order of the two streams is otherwise lost in two pipes.
import { appendFileSync } from 'node:fs';

const log = process.env.FAKE_TTY_LOG;
Object.defineProperty(process.stderr, 'isTTY', { value: true, configurable: true });
Object.defineProperty(process.stderr, 'columns', { value: Number(process.env.FAKE_TTY_COLUMNS), configurable: true });
for (const name of ['stdout', 'stderr']) {
  const stream = process[name];
  const write = stream.write.bind(stream);
  stream.write = (chunk, ...rest) => {
    if (log) appendFileSync(log, JSON.stringify([name, String(chunk)]) + '\n');
    return write(chunk, ...rest);
  };
}
