/**
 * report.html in a real headless Chromium: it loads without console errors or network requests
 * and contains the charts. Needs the Chromium that scripts/setup-test-deps.mjs installs (`npm test`
 * runs it first); fails (never skips) without it. Set LORAFORGE_REPORT_SCREENSHOT=/path/shot.png to keep a full-page
 * screenshot for a look by eye.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { getBackend } from '../../src/linalg/index.js';
import { writeSpectrumOutputs } from '../../src/spectrum/output.js';
import { adapterSpectrum } from '../../src/spectrum/spectrum.js';
import { launchChromium } from '../helpers/browser.js';
import { plantedLora, writeAdapter } from '../helpers/spectrum.js';
import { makeTempDir } from '../helpers/synthetic.js';

const TYPES: Array<[string, number, number]> = [
  ['self_attn.q_proj', 24, 16],
  ['self_attn.v_proj', 8, 16],
  ['mlp.down_proj', 16, 32],
];
const LAYERS = 4;
const RANK = 8;

interface PageFacts {
  title: string;
  charts: Array<[string, { w: number; h: number } | null]>;
  svgCount: number;
  cellCount: number;
  firstCell: string;
  energyCurves: string[];
  summaryRows: number;
  scripts: number;
}

/** Runs inside the page (plain JavaScript): what the assertions look at. */
const PAGE_FACTS = `(() => {
  const box = (id) => {
    const el = document.getElementById(id);
    if (!el || el.tagName.toLowerCase() !== 'svg') return null;
    const r = el.getBoundingClientRect();
    return { w: r.width, h: r.height };
  };
  const heat = document.getElementById('heatmap-q_proj');
  const cells = heat ? [...heat.querySelectorAll('rect')].filter((r) => (r.querySelector('title')?.textContent ?? '').includes(' component ')) : [];
  const energy = document.getElementById('energy');
  return {
    title: document.title,
    charts: ['energy', 'heatmap-q_proj', 'heatmap-v_proj', 'heatmap-down_proj', 'falloff-q_proj', 'falloff-v_proj', 'falloff-down_proj'].map((id) => [id, box(id)]),
    svgCount: document.querySelectorAll('svg').length,
    cellCount: cells.length,
    firstCell: cells[0] ? getComputedStyle(cells[0]).fill : '',
    energyCurves: energy ? [...energy.querySelectorAll('polyline')].filter((p) => p.querySelector('title')).map((p) => p.querySelector('title').textContent) : [],
    summaryRows: document.querySelectorAll('#summary-table tr').length,
    scripts: document.querySelectorAll('script').length,
  };
})()`;

describe('report.html in headless Chromium', async () => {
  const dir = await makeTempDir('lf-report-');
  after(() => rm(dir, { recursive: true, force: true }));

  const adapterDir = join(dir, 'adapter');
  const modules = [];
  let seed = 1;
  for (let layer = 0; layer < LAYERS; layer++) {
    for (const [path, out, inF] of TYPES) {
      const sigma = Array.from({ length: RANK }, (_, i) => (1 + layer) * (0.4 + 0.1 * layer) ** i);
      modules.push(plantedLora({ name: `model.layers.${layer}.${path}`, out, in: inF, sigma, alpha: 16, seed: (seed += 3) }).module);
    }
  }
  await writeAdapter(adapterDir, modules);
  const result = await adapterSpectrum(await getBackend(), adapterDir, { top: RANK });
  const out = join(dir, 'spectrum');
  await writeSpectrumOutputs(result, out);

  it('writes the JSON, the report, and SVG + PNG files of every chart', async () => {
    const charts = (await readdir(join(out, 'charts'))).sort();
    const ids = ['energy', ...['q_proj', 'v_proj', 'down_proj'].flatMap((t) => [`heatmap-${t}`, `falloff-${t}`])];
    assert.deepEqual(charts, ids.flatMap((id) => [`${id}.png`, `${id}.svg`]).sort());
    assert.deepEqual((await readdir(out)).sort(), ['charts', 'report.html', 'spectrum.json']);
  });

  it('opens without console errors or network requests and shows every chart', async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.setViewportSize({ width: 1280, height: 900 });
      const problems: string[] = [];
      const requests: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('request', (r) => requests.push(r.url()));
      page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
      const url = pathToFileURL(join(out, 'report.html')).href;
      await page.goto(url, { waitUntil: 'load' });

      const facts = await page.evaluate<PageFacts>(PAGE_FACTS);
      const shot = process.env.LORAFORGE_REPORT_SCREENSHOT;
      if (shot) await page.screenshot({ path: shot, fullPage: true });

      assert.deepEqual(problems, []);
      assert.deepEqual(requests, [url], 'the report fetches nothing but itself');
      assert.ok(facts.title.includes(adapterDir));
      for (const [id, b] of facts.charts) assert.ok(b && b.w > 200 && b.h > 150, `${id} is rendered (${JSON.stringify(b)})`);
      assert.equal(facts.svgCount, 7);
      assert.equal(facts.cellCount, LAYERS * RANK, 'one heatmap cell per layer and component');
      assert.equal(facts.firstCell, 'rgb(253, 231, 37)', 'component 0 is σ₁/σ₁ = 1: the top of viridis');
      assert.deepEqual(facts.energyCurves, ['q_proj', 'v_proj', 'down_proj']);
      assert.equal(facts.summaryRows, 1 + TYPES.length);
      assert.equal(facts.scripts, 0);
    } finally {
      await browser.close();
    }
  });
});
