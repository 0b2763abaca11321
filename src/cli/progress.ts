/**
 * A progress bar on stderr. Silent when stderr is not a terminal (logs, CI, pipes) or with --quiet,
 * so scripted runs only ever see the final summary.
 */
import type { OnProgress, ProgressEvent } from '../progress.js';
import { formatBytes } from './format.js';

export interface Progress {
  tick(label?: string): void;
  done(): void;
}

/** What the bar writes to: process.stderr, or a fake one in tests. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

/** Width assumed when the terminal reports none: `script`, some CI ptys and serial consoles report 0 columns. */
const FALLBACK_COLUMNS = 80;
/** A bar line never gets longer than this, whatever the terminal claims (one write per redraw). */
const MAX_COLUMNS = 1000;
const BAR_WIDTH = 24;

/** Characters a line may take: one less than the width, so the cursor never wraps to the next line. */
function lineWidth(stream: ProgressStream): number {
  const cols = stream.columns;
  const usable = typeof cols === 'number' && Number.isFinite(cols) && cols >= 1 ? Math.min(Math.floor(cols), MAX_COLUMNS) : FALLBACK_COLUMNS;
  return usable - 1;
}

export function createProgress(title: string, total: number, opts: { quiet?: boolean; stream?: ProgressStream } = {}): Progress {
  const stream = opts.stream ?? process.stderr;
  if (opts.quiet || !stream.isTTY || total <= 0) return { tick() {}, done() {} };
  let count = 0;
  const started = Date.now();
  let lastDraw = 0;
  let drawn = false;
  const draw = (label: string) => {
    // a tick past the total (a library that counts one more) must not make repeat() negative
    const filled = Math.min(BAR_WIDTH, Math.round((Math.min(count, total) / total) * BAR_WIDTH));
    const elapsed = (Date.now() - started) / 1000;
    const eta = count > 0 ? (elapsed / count) * Math.max(0, total - count) : 0;
    const line = `${title} [${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${count}/${total} ${elapsed.toFixed(0)}s eta ${eta.toFixed(0)}s ${label}`;
    const width = lineWidth(stream);
    stream.write(`\r${line.slice(0, width).padEnd(width)}`);
    drawn = true;
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
      if (drawn) stream.write('\r' + ' '.repeat(lineWidth(stream)) + '\r');
      drawn = false;
    },
  };
}

/** A bar of bytes (Hub downloads): the whole phase's bytes, and the file now arriving with its own. */
function createByteProgress(title: string, opts: { quiet?: boolean; stream?: ProgressStream }): { update(p: ProgressEvent): void; done(): void } {
  const stream = opts.stream ?? process.stderr;
  if (opts.quiet || !stream.isTTY) return { update() {}, done() {} };
  let lastDraw = 0;
  let drawn = false;
  return {
    update(p) {
      const now = Date.now();
      if (!p.bytes || (now - lastDraw <= 100 && p.partial)) return;
      lastDraw = now;
      const { done, total, item, itemTotal } = p.bytes;
      const filled = total > 0 ? Math.min(BAR_WIDTH, Math.round((Math.min(done, total) / total) * BAR_WIDTH)) : 0;
      const line = `${title} [${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${formatBytes(done)}/${formatBytes(total)} file ${p.index + 1}/${p.total} ${p.name} ${formatBytes(item)}/${formatBytes(itemTotal)}`;
      const width = lineWidth(stream);
      stream.write(`\r${line.slice(0, width).padEnd(width)}`);
      drawn = true;
    },
    done() {
      if (drawn) stream.write('\r' + ' '.repeat(lineWidth(stream)) + '\r');
      drawn = false;
    },
  };
}

/** The phase of Hub downloads: its events carry bytes and go to a byte bar of their own. */
const DOWNLOAD_PHASE = 'download';

/**
 * A bar created on the first tick, when the total is known; done() clears it (safe to call when
 * nothing ticked). `tick` is any library entry point's `onProgress`; Hub downloads before the
 * command's work (phase 'download') get a byte bar, cleared when the work begins.
 */
export function lazyProgress(title: string, quiet: boolean, stream?: ProgressStream): { tick: OnProgress; done: () => void } {
  let bar: Progress | undefined;
  let download: ReturnType<typeof createByteProgress> | undefined;
  return {
    tick(p) {
      if (p.phase === DOWNLOAD_PHASE) {
        download ??= createByteProgress('download', { quiet, stream });
        download.update(p);
        return;
      }
      download?.done();
      bar ??= createProgress(title, p.total, { quiet, stream });
      bar.tick(p.name);
    },
    done() {
      download?.done();
      bar?.done();
    },
  };
}
