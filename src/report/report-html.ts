/**
 * report.html: one self-contained file — inline CSS, inline SVG and one small inline script (table
 * sorting), no fonts, no links to fetch — with a Content-Security-Policy that forbids any network
 * access and runs only that script (by its hash), so it opens the same offline, in a mail
 * attachment or from a CI artifact. The log-scale switch is CSS only: it works where scripts don't.
 */
import { createHash } from 'node:crypto';
import type { Chart } from './charts.js';
import { groupByModuleType, isUnchanged } from './charts.js';
import type { EffectiveRanks, SpectrumResult, TensorSpectrum } from '../spectrum/spectrum.js';
import { escapeXml, renderSvg } from './svg.js';
import { NOT_A_TARGET } from '../delta/pair-plan.js';

const CSS = `
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #222; margin: 0; background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 17px; margin: 32px 0 10px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p, li { font-size: 14px; line-height: 1.45; }
.meta { color: #555; }
table { border-collapse: collapse; font-size: 13px; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
figure { margin: 0 0 18px; background: #fff; border: 1px solid #e2e2e2; padding: 6px; overflow-x: auto; display: inline-block; max-width: calc(100% - 14px); vertical-align: top; }
.grid figure { margin-right: 10px; }
figcaption { font-size: 12px; color: #555; padding: 2px 4px; }
code { font-size: 12.5px; }
details { margin-top: 12px; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " ▲"; }
table.sortable th[aria-sort="descending"]::after { content: " ▼"; }
td.unchanged { color: #888; }
.scale-log { display: none; }
#log-scale:checked ~ .grid .scale-log { display: inline-block; }
#log-scale:checked ~ .grid .scale-linear { display: none; }
`;

/**
 * Sorts a table.sortable by the clicked (or Enter/Space) header: numbers (th data-type="number",
 * cell data-sort) largest first, text in natural order; a second click reverses.
 */
const SORT_SCRIPT = `
const collator = new Intl.Collator(undefined, { numeric: true });
for (const table of document.querySelectorAll('table.sortable')) {
  const heads = [...table.tHead.rows[0].cells];
  heads.forEach((th, col) => {
    th.tabIndex = 0;
    const sort = () => {
      const numeric = th.dataset.type === 'number';
      const first = numeric ? 'descending' : 'ascending';
      const order = th.getAttribute('aria-sort') === first ? (numeric ? 'ascending' : 'descending') : first;
      const sign = order === 'ascending' ? 1 : -1;
      const key = (tr) => { const td = tr.cells[col]; return td.dataset.sort ?? td.textContent; };
      const body = table.tBodies[0];
      const rows = [...body.rows].sort((a, b) => {
        if (!numeric) return sign * collator.compare(key(a), key(b));
        const x = parseFloat(key(a));
        const y = parseFloat(key(b));
        // cells without a number go last either way
        return Number.isNaN(x) ? (Number.isNaN(y) ? 0 : 1) : Number.isNaN(y) ? -1 : sign * (x - y);
      });
      body.append(...rows);
      for (const h of heads) h.removeAttribute('aria-sort');
      th.setAttribute('aria-sort', order);
    };
    th.addEventListener('click', sort);
    th.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); } });
  });
}
`;
const SORT_SCRIPT_HASH = `sha256-${createHash('sha256').update(SORT_SCRIPT).digest('base64')}`;

function fmt(v: number): string {
  if (v === 0) return '0';
  return Math.abs(v) >= 1e-3 && Math.abs(v) < 1e5 ? Number(v.toPrecision(4)).toString() : v.toExponential(3);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * "5 (3–7)": median and range of the effective rank over tensors; ">k" where more than the k
 * computed. The lower median, so the figure is a rank some layer actually has.
 */
function effectiveRankCell(tensors: TensorSpectrum[], key: keyof EffectiveRanks, top: number): string {
  const values = tensors.map((t) => t.effectiveRank[key] ?? top + 1).sort((a, b) => a - b);
  const show = (v: number) => (v > top ? `>${top}` : String(v));
  const lo = values[0];
  const hi = values[values.length - 1];
  return lo === hi ? show(lo) : `${show(values[(values.length - 1) >> 1])} (${show(lo)}–${show(hi)})`;
}

/** A cell: text (already escaped HTML), with a number to sort by and a class where given. */
type Cell = string | { html: string; sort?: number; cls?: string };

function row(cells: Cell[], header = false): string {
  const tag = header ? 'th' : 'td';
  return `<tr>${cells
    .map((c) => {
      if (typeof c === 'string') return `<${tag}>${c}</${tag}>`;
      const sort = c.sort === undefined ? '' : ` data-sort="${c.sort}"`;
      const cls = c.cls ? ` class="${c.cls}"` : '';
      return `<${tag}${sort}${cls}>${c.html}</${tag}>`;
    })
    .join('')}</tr>`;
}

/** A sortable table: `numeric[i]` says column i sorts by number. */
function sortableTable(id: string, head: string[], numeric: boolean[], rows: Cell[][]): string {
  const th = head.map((h, i) => `<th${numeric[i] ? ' data-type="number"' : ''}>${h}</th>`).join('');
  return `<table id="${id}" class="sortable"><thead><tr>${th}</tr></thead><tbody>${rows.map((r) => row(r)).join('')}</tbody></table>`;
}

const UNCHANGED = { html: 'unchanged', cls: 'unchanged' };

function summaryTable(result: SpectrumResult): string {
  const adapter = result.source.kind === 'adapter';
  const head = ['module type', 'tensors', 'shape', ...(adapter ? ['LoRA rank'] : []), 'median σ₁', 'median ‖Δ‖_F', 'eff. rank 90%', '95%', '99%'];
  const body = groupByModuleType(result.tensors).map(({ type, tensors: all }) => {
    const shapes = [...new Set(all.map((t) => t.shape.join('×')))].join(', ');
    const ranks = [...new Set(all.map((t) => t.rank))].join(', ');
    // medians and effective ranks over the tensors that changed: Δ = 0 has no spectrum
    const tensors = all.filter((t) => !isUnchanged(t));
    const unchanged = all.length - tensors.length;
    const stats: Cell[] = tensors.length
      ? [
          fmt(median(tensors.map((t) => t.sigma[0] ?? 0))),
          fmt(median(tensors.map((t) => Math.sqrt(t.totalEnergy)))),
          effectiveRankCell(tensors, 'p90', result.top),
          effectiveRankCell(tensors, 'p95', result.top),
          effectiveRankCell(tensors, 'p99', result.top),
        ]
      : Array.from({ length: 5 }, () => UNCHANGED);
    return row([
      escapeXml(type),
      unchanged ? `${all.length} (${unchanged} unchanged)` : String(all.length),
      escapeXml(shapes),
      ...(adapter ? [escapeXml(ranks)] : []),
      ...stats,
    ]);
  });
  return `<table id="summary-table">${row(head, true)}${body.join('')}</table>`;
}

function tensorTable(result: SpectrumResult): string {
  const show = (v: number | null) => (v === null ? `>${result.top}` : String(v));
  const rows = result.tensors.map((t): Cell[] => {
    const unchanged = isUnchanged(t);
    const p90 = t.effectiveRank.p90 ?? result.top + 1;
    return [
      `<code>${escapeXml(t.name)}</code>`,
      { html: t.shape.join('×'), sort: t.shape[0] * t.shape[1] },
      t.rank === null ? '—' : { html: String(t.rank), sort: t.rank },
      { html: fmt(t.sigma[0] ?? 0), sort: t.sigma[0] ?? 0 },
      { html: fmt(Math.sqrt(t.totalEnergy)), sort: Math.sqrt(t.totalEnergy) },
      // unchanged sorts below every real rank
      unchanged ? { ...UNCHANGED, sort: -1 } : { html: `${show(t.effectiveRank.p90)} / ${show(t.effectiveRank.p95)} / ${show(t.effectiveRank.p99)}`, sort: p90 },
    ];
  });
  return sortableTable('tensor-table', ['tensor', 'shape', 'rank', 'σ₁', '‖Δ‖_F', 'eff. rank 90/95/99%'], [false, true, true, true, true, true], rows);
}

/** ‖ΔW‖/‖W_A‖ as a percentage; ∞ where W_A is zero (null). */
function percent(v: number | null): Cell {
  return v === null ? { html: '∞ (zero in A)', sort: Infinity } : { html: `${Number((100 * v).toPrecision(3))}%`, sort: v };
}

/**
 * The tensors without a spectrum (1-D, only in one model, …): a model pair's 1-D tensors that
 * differ (`changed1d`) with their relative change, its other 1-D tensors as unchanged, the rest
 * with the reason they were skipped.
 */
function otherTable(result: SpectrumResult): string {
  const rows = [
    ...result.changed1d.map((c): Cell[] => [`<code>${escapeXml(c.name)}</code>`, 'changed (1-D)', percent(c.relChange)]),
    ...(result.nonTargetDiffering ?? []).map((c): Cell[] => [`<code>${escapeXml(c.name)}</code>`, 'changed (not a LoRA target)', percent(c.relChange)]),
    ...result.skipped.map((s): Cell[] =>
      // a pair's compared tensors that differ are in changed1d or nonTargetDiffering, so a skipped one is identical in A and B
      s.reason.startsWith('1-D') || s.reason === NOT_A_TARGET ? [`<code>${escapeXml(s.name)}</code>`, { ...UNCHANGED }, percent(0)] : [`<code>${escapeXml(s.name)}</code>`, escapeXml(s.reason), '—'],
    ),
  ];
  return sortableTable('other-table', ['tensor', 'status', 'relative change'], [false, false, true], rows);
}

function figure(chart: Chart, caption: string, png: boolean, cls?: string): string {
  const files = `<code>charts/${escapeXml(chart.id)}.svg</code>${png ? ', <code>.png</code>' : ''}`;
  return `<figure${cls ? ` class="${cls}"` : ''}>${renderSvg(chart.scene, chart.id)}<figcaption>${escapeXml(caption)} — ${files}</figcaption></figure>`;
}

function sourceLine(result: SpectrumResult): string {
  const s = result.source;
  const what =
    s.kind === 'adapter'
      ? `LoRA adapter <code>${escapeXml(s.adapter)}</code>: ΔW = scaling·B·A per module, singular values exact from the factors`
      : `checkpoint delta Δ = W_B − W_A, A = <code>${escapeXml(s.modelA)}</code>, B = <code>${escapeXml(s.modelB)}</code>: top-${result.top} singular values by randomized SVD, energies relative to the exact ‖Δ‖²_F`;
  return `<p class="meta">${what}. ${result.tensors.length} tensors, top ${result.top} components each.</p>`;
}

/** The report page; `png` says whether PNG copies of the charts sit beside it (for the captions). */
export function renderReportHtml(result: SpectrumResult, charts: readonly Chart[], png = true): string {
  const name = result.source.kind === 'adapter' ? result.source.adapter : `${result.source.modelA} → ${result.source.modelB}`;
  const energy = charts.filter((c) => c.kind === 'energy');
  const heatmaps = charts.filter((c) => c.kind === 'heatmap');
  const falloffs = charts.filter((c) => c.kind === 'falloff' || c.kind === 'falloff-log');
  const skipped = result.skipped;
  const changedOthers = result.changed1d.length + (result.nonTargetDiffering?.length ?? 0);
  const unchanged = result.tensors.filter(isUnchanged).length;
  const notes = [
    ...result.notes,
    ...(unchanged ? [`${unchanged} tensor(s) unchanged (Δ = 0): marked "unchanged" in the tables and heatmaps and left out of the curves.`] : []),
    ...(skipped.length ? [`${skipped.length} tensor(s) without a spectrum${changedOthers ? `, ${changedOthers} of them changed` : ''}: listed under "Other tensors".`] : []),
  ];
  const caption = (c: Chart, text: string) => (c.note ? `${text}; ${c.note}` : text);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src '${SORT_SCRIPT_HASH}'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spectrum — ${escapeXml(name)}</title>
<style>${CSS}</style>
</head>
<body>
<main>
<h1>Singular value spectrum</h1>
${sourceLine(result)}
${notes.length ? `<ul class="meta">${notes.map((n) => `<li>${escapeXml(n)}</li>`).join('')}</ul>` : ''}
<h2 id="summary">Summary by module type</h2>
<p>Effective rank: the fewest components holding 90/95/99% of ‖Δ‖²_F — median over the layers that changed, range in brackets.</p>
${summaryTable(result)}
<h2 id="energy-section">Energy captured vs rank</h2>
${energy.map((c) => figure(c, caption(c, 'Mean over the changed layers of each module type of the fraction of ‖Δ‖²_F held by the top r components'), png)).join('\n')}
<h2 id="heatmaps">Singular values per layer</h2>
<p>Each row is one layer's tensor, each column a component (0-based, as <code>loraforge edit --zero/--keep/--scale</code> count them); colour is σᵢ/σ₁ of that row, the grey bars its σ₁ on the scale below them; unchanged tensors are light grey rows. Hover a cell for values.</p>
<div class="heatmaps">
${heatmaps.map((c) => figure(c, `${c.moduleType}: layer × component heatmap`, png)).join('\n')}
</div>
<h2 id="falloff">Fall-off per module type</h2>
<p>σᵢ/σ₁ against i, one curve per changed layer, coloured from the first layer (dark) to the last (yellow).</p>
<input type="checkbox" id="log-scale"> <label for="log-scale">logarithmic σᵢ/σ₁ axis</label>
<div class="grid">
${falloffs.map((c) => figure(c, caption(c, `${c.moduleType}: fall-off curves`), png, c.kind === 'falloff-log' ? 'scale-log' : 'scale-linear')).join('\n')}
</div>
<h2 id="tensors">All tensors</h2>
<details><summary>${result.tensors.length} tensors (click a column header to sort)</summary>
${tensorTable(result)}
</details>
${skipped.length || changedOthers ? `<h2 id="others">Other tensors</h2>\n<p>Tensors the filter picked that have no spectrum (1-D vectors, tensors in one model only, …); the relative change is ‖W_B − W_A‖ / ‖W_A‖ where it was measured.</p>\n${otherTable(result)}` : ''}
<p class="meta">Generated by loraforge spectrum. Data: <code>spectrum.json</code>; charts: <code>charts/</code>.</p>
</main>
<script>${SORT_SCRIPT}</script>
</body>
</html>
`;
}
