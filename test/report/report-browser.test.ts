/**
 * report.html in a real headless Chromium: it loads without console errors (a wrong script hash
 * in the CSP is one) or network requests, contains the charts, switches the fall-off charts to a
 * log scale, sorts the all-tensors table, marks an unchanged module and lists 1-D tensors. Needs
 * the Chromium that scripts/setup-test-deps.mjs installs (`npm test` runs it first); fails (never
 * skips) without it. Set LORAFORGE_REPORT_SCREENSHOT=/path/shot.png to keep a full-page
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
/** all-zero update (B·A = 0): drawn and listed as "unchanged" */
const UNCHANGED = 'model.layers.3.self_attn.v_proj';
const FALLOFF_IDS = ['q_proj', 'v_proj', 'down_proj'].map((t) => `falloff-${t}`);
const FALLOFF_LOG_IDS = ['q_proj', 'v_proj', 'down_proj'].map((t) => `falloff-log-${t}`);

interface PageFacts {
  title: string;
  charts: Array<[string, { w: number; h: number } | null]>;
  svgCount: number;
  cellCount: number;
  firstCell: string;
  energyCurves: string[];
  summaryRows: number;
  scripts: number;
  unchangedHeatmapLabels: number;
  summaryVProj: string[];
}

/** What is visible after each interaction: which fall-off charts show, and the tensor table's order. */
interface ViewFacts {
  shown: string[];
  names: string[];
  sigma: number[];
  unchangedCells: string[];
  others: string[][];
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
    unchangedHeatmapLabels: [...document.querySelectorAll('#heatmap-v_proj text')].filter((t) => t.textContent === 'unchanged').length,
    summaryVProj: [...[...document.querySelectorAll('#summary-table tr')].find((tr) => tr.cells[0].textContent === 'v_proj').cells].map((c) => c.textContent),
  };
})()`;

const VIEW_FACTS = `(() => {
  const ids = ${JSON.stringify([...FALLOFF_IDS, ...FALLOFF_LOG_IDS])};
  const rows = [...document.querySelectorAll('#tensor-table tbody tr')];
  return {
    shown: ids.filter((id) => document.getElementById(id).getBoundingClientRect().width > 0),
    names: rows.map((tr) => tr.cells[0].textContent),
    sigma: rows.map((tr) => Number(tr.cells[3].dataset.sort)),
    unchangedCells: rows.filter((tr) => tr.cells[5].textContent === 'unchanged').map((tr) => tr.cells[0].textContent),
    others: [...document.querySelectorAll('#other-table tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent)),
  };
})()`;

/** Clicks the element matching a selector, as a user would (a string: see BrowserPage.evaluate). */
const click = (selector: string) => `document.querySelector(${JSON.stringify(selector)}).click()`;
const header = (table: string, text: string) => `(() => [...document.querySelectorAll('#${table} th')].find((th) => th.textContent.startsWith(${JSON.stringify(text)})).click())()`;

describe('report.html in headless Chromium', async () => {
  const dir = await makeTempDir('lf-report-');
  after(() => rm(dir, { recursive: true, force: true }));

  const adapterDir = join(dir, 'adapter');
  const modules = [];
  let seed = 1;
  for (let layer = 0; layer < LAYERS; layer++) {
    for (const [path, out, inF] of TYPES) {
      const name = `model.layers.${layer}.${path}`;
      const sigma = Array.from({ length: RANK }, (_, i) => (name === UNCHANGED ? 0 : (1 + layer) * (0.4 + 0.1 * layer) ** i));
      modules.push(plantedLora({ name, out, in: inF, sigma, alpha: 16, seed: (seed += 3) }).module);
    }
  }
  await writeAdapter(adapterDir, modules);
  const result = await adapterSpectrum({ backend: await getBackend(), adapter: adapterDir, top: RANK });
  // a model pair's changed and unchanged 1-D tensors, as the pair result lists them (relChange: ‖ΔW‖/‖W_A‖)
  result.changed1d.push({ name: 'model.layers.0.input_layernorm.weight', shape: [64], relChange: 0.0123 });
  result.skipped.push(
    { name: 'model.layers.1.input_layernorm.weight', reason: '1-D, not a linear weight or an MoE expert tensor' },
    { name: 'model.norm.weight', reason: 'only in B' },
  );
  const out = join(dir, 'spectrum');
  await writeSpectrumOutputs({ result, out });

  it('writes the JSON, the report, and SVG + PNG files of every chart', async () => {
    const charts = (await readdir(join(out, 'charts'))).sort();
    const ids = ['energy', ...['q_proj', 'v_proj', 'down_proj'].flatMap((t) => [`heatmap-${t}`, `falloff-${t}`, `falloff-log-${t}`])];
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
      assert.equal(facts.svgCount, 10, 'energy + 3 heatmaps + 3 linear and 3 log fall-off charts');
      assert.equal(facts.cellCount, LAYERS * RANK, 'one heatmap cell per layer and component');
      assert.equal(facts.firstCell, 'rgb(253, 231, 37)', 'component 0 is σ₁/σ₁ = 1: the top of viridis');
      assert.deepEqual(facts.energyCurves, ['q_proj', 'v_proj', 'down_proj']);
      assert.equal(facts.summaryRows, 1 + TYPES.length);
      assert.equal(facts.scripts, 1, 'the table-sorting script, allowed by its hash');
      assert.equal(facts.unchangedHeatmapLabels, 1, 'the all-zero v_proj row says "unchanged"');
      assert.equal(facts.summaryVProj[1], `${LAYERS} (1 unchanged)`);

      const before = await page.evaluate<ViewFacts>(VIEW_FACTS);
      assert.deepEqual(before.shown, FALLOFF_IDS, 'linear fall-off charts by default');
      assert.deepEqual(before.unchangedCells, [UNCHANGED]);
      assert.deepEqual(before.others, [
        ['model.layers.0.input_layernorm.weight', 'changed (1-D)', '1.23%'],
        ['model.layers.1.input_layernorm.weight', 'unchanged', '0%'],
        ['model.norm.weight', 'only in B', '—'],
      ]);

      await page.evaluate(click('label[for="log-scale"]'));
      assert.deepEqual((await page.evaluate<ViewFacts>(VIEW_FACTS)).shown, FALLOFF_LOG_IDS, 'the switch shows the log-scale charts instead');
      await page.evaluate(click('label[for="log-scale"]'));
      assert.deepEqual((await page.evaluate<ViewFacts>(VIEW_FACTS)).shown, FALLOFF_IDS, 'and back');

      await page.evaluate(header('tensor-table', 'σ₁'));
      const descending = await page.evaluate<ViewFacts>(VIEW_FACTS);
      assert.deepEqual(descending.sigma, [...before.sigma].sort((x, y) => y - x), 'numbers sort largest first');
      assert.equal(descending.names.at(-1), UNCHANGED, 'σ₁ = 0 last');
      await page.evaluate(header('tensor-table', 'σ₁'));
      assert.deepEqual((await page.evaluate<ViewFacts>(VIEW_FACTS)).sigma, [...before.sigma].sort((x, y) => x - y), 'a second click reverses');
      await page.evaluate(header('tensor-table', 'tensor'));
      assert.deepEqual((await page.evaluate<ViewFacts>(VIEW_FACTS)).names, before.names, 'back to name order, as written');
      assert.deepEqual(problems, [], 'no errors while interacting');
    } finally {
      await browser.close();
    }
  });
});
