/**
 * report.html: one self-contained file — inline CSS and inline SVG, no scripts, no fonts, no
 * links to fetch — with a Content-Security-Policy that forbids any network access, so it opens
 * the same offline, in a mail attachment or from a CI artifact.
 */
import type { Chart } from './charts.js';
import { groupByModuleType } from './charts.js';
import type { EffectiveRanks, SpectrumResult, TensorSpectrum } from './spectrum.js';
import { escapeXml, renderSvg } from './svg.js';

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
`;

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

function row(cells: string[], header = false): string {
  const tag = header ? 'th' : 'td';
  return `<tr>${cells.map((c) => `<${tag}>${c}</${tag}>`).join('')}</tr>`;
}

function summaryTable(result: SpectrumResult): string {
  const adapter = result.source.kind === 'adapter';
  const head = ['module type', 'tensors', 'shape', ...(adapter ? ['LoRA rank'] : []), 'median σ₁', 'median ‖Δ‖_F', 'eff. rank 90%', '95%', '99%'];
  const body = groupByModuleType(result.tensors).map(({ type, tensors }) => {
    const shapes = [...new Set(tensors.map((t) => t.shape.join('×')))].join(', ');
    const ranks = [...new Set(tensors.map((t) => t.rank))].join(', ');
    return row([
      escapeXml(type),
      String(tensors.length),
      escapeXml(shapes),
      ...(adapter ? [escapeXml(ranks)] : []),
      fmt(median(tensors.map((t) => t.sigma[0] ?? 0))),
      fmt(median(tensors.map((t) => Math.sqrt(t.totalEnergy)))),
      effectiveRankCell(tensors, 'p90', result.top),
      effectiveRankCell(tensors, 'p95', result.top),
      effectiveRankCell(tensors, 'p99', result.top),
    ]);
  });
  return `<table id="summary-table">${row(head, true)}${body.join('')}</table>`;
}

function tensorTable(result: SpectrumResult): string {
  const head = ['tensor', 'shape', 'rank', 'σ₁', '‖Δ‖_F', 'eff. rank 90/95/99%'];
  const show = (v: number | null) => (v === null ? `>${result.top}` : String(v));
  const body = result.tensors.map((t) =>
    row([
      `<code>${escapeXml(t.name)}</code>`,
      t.shape.join('×'),
      t.rank === null ? '—' : String(t.rank),
      fmt(t.sigma[0] ?? 0),
      fmt(Math.sqrt(t.totalEnergy)),
      `${show(t.effectiveRank.p90)} / ${show(t.effectiveRank.p95)} / ${show(t.effectiveRank.p99)}`,
    ]),
  );
  return `<table id="tensor-table">${row(head, true)}${body.join('')}</table>`;
}

function figure(chart: Chart, caption: string, png: boolean): string {
  const files = `<code>charts/${escapeXml(chart.id)}.svg</code>${png ? ', <code>.png</code>' : ''}`;
  return `<figure>${renderSvg(chart.scene, chart.id)}<figcaption>${escapeXml(caption)} — ${files}</figcaption></figure>`;
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
  const falloffs = charts.filter((c) => c.kind === 'falloff');
  const notes = [...result.notes, ...(result.skipped.length ? [`${result.skipped.length} tensor(s) skipped (listed in spectrum.json).`] : [])];
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
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
<p>Effective rank: the fewest components holding 90/95/99% of ‖Δ‖²_F — median over layers, range in brackets.</p>
${summaryTable(result)}
<h2 id="energy-section">Energy captured vs rank</h2>
${energy.map((c) => figure(c, 'Mean over the layers of each module type of the fraction of ‖Δ‖²_F held by the top r components', png)).join('\n')}
<h2 id="heatmaps">Singular values per layer</h2>
<p>Each row is one layer's tensor, each column a component (0-based, as <code>loraforge edit --zero/--keep/--scale</code> count them); colour is σᵢ/σ₁ of that row, the grey bars its σ₁. Hover a cell for values.</p>
<div class="heatmaps">
${heatmaps.map((c) => figure(c, `${c.moduleType}: layer × component heatmap`, png)).join('\n')}
</div>
<h2 id="falloff">Fall-off per module type</h2>
<p>σᵢ/σ₁ against i, one curve per layer, coloured from the first layer (dark) to the last (yellow).</p>
<div class="grid">
${falloffs.map((c) => figure(c, `${c.moduleType}: fall-off curves`, png)).join('\n')}
</div>
<h2 id="tensors">All tensors</h2>
<details><summary>${result.tensors.length} tensors</summary>
${tensorTable(result)}
</details>
<p class="meta">Generated by loraforge spectrum. Data: <code>spectrum.json</code>; charts: <code>charts/</code>.</p>
</main>
</body>
</html>
`;
}
