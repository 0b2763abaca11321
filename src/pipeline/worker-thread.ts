/**
 * Starting worker threads that run our own modules, from the build (plain JS) or from source
 * (TypeScript, loaded through tsx's programmatic API: a Node 20 worker inherits neither the
 * parent's module hooks nor `--import` hooks given in its execArgv).
 *
 * A worker module signals that it has loaded by posting `{ ready: true }` first.
 */
import { Worker } from 'node:worker_threads';

export interface ReadyMessage {
  ready: true;
}

/** The worker module `name` (no extension) beside the module at `callerUrl`, built or source alike. */
function spawn(callerUrl: string, name: string): Worker {
  if (!callerUrl.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, callerUrl));
  const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  const entry = JSON.stringify(new URL(`./${name}.ts`, callerUrl).href);
  return new Worker(`import(${api}).then((tsx) => { tsx.register(); return import(${entry}); });`, { eval: true });
}

/**
 * Starts the worker module `name` beside `callerUrl` (pass `import.meta.url`); resolves once it
 * has loaded, or to undefined when it cannot start (callers then do the work on their own thread).
 */
export function startWorker(callerUrl: string, name: string): Promise<Worker | undefined> {
  let worker: Worker;
  try {
    worker = spawn(callerUrl, name);
  } catch {
    return Promise.resolve(undefined);
  }
  return new Promise((resolve) => {
    const fail = () => {
      void worker.terminate();
      resolve(undefined);
    };
    worker.once('error', fail);
    worker.once('exit', fail);
    worker.once('message', (m: unknown) => {
      worker.off('error', fail);
      worker.off('exit', fail);
      if (typeof m === 'object' && m !== null && (m as Partial<ReadyMessage>).ready === true) resolve(worker);
      else fail();
    });
  });
}
