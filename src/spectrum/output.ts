/**
 * Writes everything `loraforge spectrum` produces into one folder, atomically:
 *   spectrum.json, report.html, charts/<id>.svg and charts/<id>.png.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertNotInput, withAtomicOutput } from '../io/atomic.js';
import { spectrumCharts } from '../report/charts.js';
import { encodePng } from '../report/png.js';
import { rasterize } from '../report/raster.js';
import { renderReportHtml } from '../report/report-html.js';
import type { SpectrumResult } from './spectrum.js';
import { svgFile } from '../report/svg.js';
import { withInputTracking } from '../io/inputs.js';

export const SPECTRUM_JSON = 'spectrum.json';
export const REPORT_HTML = 'report.html';
export const CHARTS_DIR = 'charts';

export interface SpectrumOutputOptions {
  /** what adapterSpectrum or deltaSpectrum returned */
  result: SpectrumResult;
  /** the output folder */
  out: string;
  /** replace a non-empty output folder */
  overwrite?: boolean;
  /** also write PNG copies of the charts (default true) */
  png?: boolean;
}

/** Paths of the inputs a spectrum was computed from (the output must not touch them). */
function inputsOf(result: SpectrumResult): string[] {
  return result.source.kind === 'adapter' ? [result.source.adapter] : [result.source.modelA, result.source.modelB];
}

/** Writes the outputs to `out` and returns their paths relative to it. */
export function writeSpectrumOutputs(params: SpectrumOutputOptions): Promise<string[]> {
  const { result, out, ...opts } = params;
  return withInputTracking(() => writeSpectrumOutputsInRun(result, out, opts));
}

async function writeSpectrumOutputsInRun(result: SpectrumResult, out: string, opts: Omit<SpectrumOutputOptions, 'result' | 'out'>): Promise<string[]> {
  assertNotInput(out, inputsOf(result));
  const charts = spectrumCharts(result);
  const png = opts.png ?? true;
  return withAtomicOutput(out, { overwrite: opts.overwrite }, async (tmpPath) => {
    const files: Array<[string, string | Uint8Array]> = [
      [SPECTRUM_JSON, JSON.stringify(result, null, 1) + '\n'],
      [REPORT_HTML, renderReportHtml(result, charts, png)],
    ];
    for (const c of charts) {
      files.push([join(CHARTS_DIR, `${c.id}.svg`), svgFile(c.scene)]);
      if (png) files.push([join(CHARTS_DIR, `${c.id}.png`), encodePng(rasterize(c.scene))]);
    }
    await mkdir(join(tmpPath, CHARTS_DIR));
    for (const [name, data] of files) await writeFile(join(tmpPath, name), data);
    return files.map(([name]) => name);
  });
}
