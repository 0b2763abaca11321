/**
 * A progress bar on stderr. Silent when stderr is not a terminal (logs, CI, pipes) or with --quiet,
 * so scripted runs only ever see the final summary.
 */
export interface Progress {
  tick(label?: string): void;
  done(): void;
}

export function createProgress(title: string, total: number, opts: { quiet?: boolean } = {}): Progress {
  const stream = process.stderr;
  if (opts.quiet || !stream.isTTY || total <= 0) return { tick() {}, done() {} };
  let count = 0;
  const started = Date.now();
  let lastDraw = 0;
  const draw = (label: string) => {
    const width = 24;
    const filled = Math.round((count / total) * width);
    const elapsed = (Date.now() - started) / 1000;
    const eta = count > 0 ? (elapsed / count) * (total - count) : 0;
    const line = `${title} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${count}/${total} ${elapsed.toFixed(0)}s eta ${eta.toFixed(0)}s ${label}`;
    const cols = stream.columns ?? 100;
    stream.write(`\r${line.slice(0, cols - 1).padEnd(cols - 1)}`);
  };
  return {
    tick(label = '') {
      count++;
      const now = Date.now();
      // redraw at most ~10 times a second: a terminal write per tiny tensor would dominate
      if (now - lastDraw > 100 || count === total) {
        lastDraw = now;
        draw(label);
      }
    },
    done() {
      stream.write('\r' + ' '.repeat((stream.columns ?? 100) - 1) + '\r');
    },
  };
}

/** A bar created on the first tick, when the total is known; done() clears it (safe to call when nothing ticked). */
export function lazyProgress(title: string, quiet: boolean): { tick: (p: { name: string; total: number }) => void; done: () => void } {
  let bar: Progress | undefined;
  return {
    tick(p) {
      bar ??= createProgress(title, p.total, { quiet });
      bar.tick(p.name);
    },
    done() {
      bar?.done();
    },
  };
}
