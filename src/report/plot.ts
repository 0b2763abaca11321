/**
 * Chart primitives laid out as Scenes: a heatmap with a colour bar (and optional per-row bars),
 * and a line chart with grid, guides and a legend or colour scale. Nothing here knows about
 * spectra; charts.ts feeds them.
 */
import { GRID, INK, MISSING, MUTED, textWidth, viridis, type Scene, type Shape } from './scene.js';

const TITLE_SIZE = 14;
const LABEL_SIZE = 11;
const TICK_SIZE = 10;

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}

/** Round tick positions covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about `count` of them. */
export function niceTicks(lo: number, hi: number, count = 5): { ticks: number[]; step: number } {
  if (!(hi > lo)) return { ticks: [lo], step: 1 };
  const rough = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) ?? 10 * power;
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.round(v / step) * step + 0); // + 0 turns -0 into 0
  return { ticks, step };
}

function formatTick(v: number, step: number): string {
  const decimals = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step) - 1e-9));
  return v.toFixed(decimals);
}

function text(x: number, y: number, s: string, size: number, anchor: 'start' | 'middle' | 'end' = 'start', extra: Partial<Shape> = {}): Shape {
  return { kind: 'text', x, y, text: s, size, anchor, fill: INK, ...extra } as Shape;
}

function hline(x0: number, x1: number, y: number, stroke: string, width = 1): Shape {
  return { kind: 'line', points: [[x0, y], [x1, y]], stroke, width };
}

function vline(x: number, y0: number, y1: number, stroke: string, width = 1): Shape {
  return { kind: 'line', points: [[x, y0], [x, y1]], stroke, width };
}

/** A vertical colour bar from `color(1)` at the top to `color(0)` at the bottom. */
function colorBar(x: number, y: number, h: number, title: string, labels: [string, string, string], color: (t: number) => string): Shape[] {
  const shapes: Shape[] = [text(x, y - 12, title, LABEL_SIZE)];
  const steps = 48;
  for (let i = 0; i < steps; i++) {
    // each band slightly taller than its slot, so no hairline gaps show between bands
    shapes.push({ kind: 'rect', x, y: y + (i * h) / steps, w: 12, h: h / steps + 0.5, fill: color(1 - (i + 0.5) / steps) });
  }
  shapes.push({ kind: 'rect', x, y, w: 12, h, fill: 'none', stroke: MUTED });
  const [top, mid, bottom] = labels;
  shapes.push(text(x + 17, y, top, TICK_SIZE), text(x + 17, y + h / 2, mid, TICK_SIZE), text(x + 17, y + h, bottom, TICK_SIZE));
  return shapes;
}

export interface HeatmapSpec {
  title: string;
  /** top to bottom */
  rowLabels: string[];
  /** rows × cols in [0, 1]; NaN draws as "no value" */
  values: number[][];
  /** x tick label of column c */
  colLabel: (c: number) => string;
  xTitle: string;
  yTitle: string;
  /** what the colour means, e.g. "σᵢ / σ₁" */
  colorTitle: string;
  /** a bar per row beside the map (e.g. σ₁ of each layer), scaled to the largest */
  side?: { title: string; values: number[]; format: (v: number) => string };
  cellTooltip?: (r: number, c: number) => string;
  /** a word written across row r's cells (e.g. "unchanged"), where the rows are tall enough for text */
  rowNote?: (r: number) => string | undefined;
}

export function heatmapScene(spec: HeatmapSpec): Scene {
  const rows = spec.values.length;
  const cols = Math.max(1, ...spec.values.map((r) => r.length));
  // square-ish cells, widened when there are few components so the map stays ~260 px wide
  const cw = clamp(640 / cols, 3, Math.max(18, 260 / cols));
  const ch = clamp(420 / Math.max(1, rows), 4, 18);
  const labelWidth = Math.max(24, ...spec.rowLabels.map((l) => textWidth(l, TICK_SIZE)));
  const left = 34 + labelWidth + 8;
  const top = 46;
  const plotW = cols * cw;
  const plotH = rows * ch;
  const sideW = spec.side ? 84 : 0;
  // what sits right of the map starts after the x-axis title too, so narrow maps do not collide
  const xTitleW = textWidth(spec.xTitle, LABEL_SIZE);
  const span = Math.max(plotW, xTitleW);
  const sideX = left + span + 16;
  const barX = left + span + (spec.side ? 16 + sideW : 0) + 22;
  const barH = clamp(plotH, 90, 220);
  // narrow maps (few components) must still leave room for the title and the x-axis title;
  // titles get a wider estimate since the PNG font is a little wider than sans-serif
  const width = Math.ceil(Math.max(barX + 12 + 17 + 30 + 10, 10 + spec.title.length * TITLE_SIZE * 0.7 + 10));
  const height = Math.ceil(top + Math.max(plotH, barH) + 48);
  const shapes: Shape[] = [text(10, 16, spec.title, TITLE_SIZE, 'start', { bold: true })];

  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const v = spec.values[r][c];
      const has = v !== undefined && Number.isFinite(v);
      shapes.push({
        kind: 'rect',
        x: left + c * cw,
        y: top + r * ch,
        // cells overlap by a fraction of a pixel so anti-aliasing leaves no seams between them
        w: cw + 0.3,
        h: ch + 0.3,
        fill: has ? viridis(v) : MISSING,
        tooltip: spec.cellTooltip?.(r, c),
      });
    }
  }
  shapes.push({ kind: 'rect', x: left, y: top, w: plotW, h: plotH, fill: 'none', stroke: MUTED });
  if (spec.rowNote && ch >= TICK_SIZE) {
    for (let r = 0; r < rows; r++) {
      const note = spec.rowNote(r);
      if (note) shapes.push(text(left + 4, top + (r + 0.5) * ch, note, TICK_SIZE, 'start', { fill: MUTED }));
    }
  }

  // row labels: as many as fit without overlapping
  const rowStep = Math.ceil((TICK_SIZE + 2) / ch);
  for (let r = 0; r < rows; r += rowStep) shapes.push(text(left - 6, top + (r + 0.5) * ch, spec.rowLabels[r], TICK_SIZE, 'end'));
  shapes.push(text(14, top + plotH / 2, spec.yTitle, LABEL_SIZE, 'middle', { vertical: true }));

  // column ticks at component centres, spaced at least ~30 px apart
  const colStep = [1, 2, 4, 5, 8, 10, 16, 20, 32, 50, 64, 100, 128, 256].find((s) => s * cw >= 30) ?? 512;
  for (let c = 0; c < cols; c += colStep) {
    const x = left + (c + 0.5) * cw;
    shapes.push(vline(x, top + plotH, top + plotH + 4, MUTED), text(x, top + plotH + 12, spec.colLabel(c), TICK_SIZE, 'middle'));
  }
  const xTitleFits = xTitleW <= plotW;
  shapes.push(text(xTitleFits ? left + plotW / 2 : left, top + plotH + 32, spec.xTitle, LABEL_SIZE, xTitleFits ? 'middle' : 'start'));

  if (spec.side) {
    const sx = sideX;
    const max = Math.max(0, ...spec.side.values.filter(Number.isFinite));
    // a scale from 0 to a round value at or above the largest bar, ticked below the bars
    const { ticks, step } = niceTicks(0, max > 0 ? max : 1, 2);
    const end = ticks[ticks.length - 1] < max ? ticks[ticks.length - 1] + step : ticks[ticks.length - 1];
    if (end > ticks[ticks.length - 1]) ticks.push(end);
    shapes.push(text(sx, top - 12, spec.side.title, LABEL_SIZE));
    spec.side.values.forEach((v, r) => {
      const w = end > 0 && Number.isFinite(v) ? (v / end) * sideW : 0;
      shapes.push({ kind: 'rect', x: sx, y: top + r * ch + ch * 0.15, w: Math.max(w, 0.5), h: ch * 0.7, fill: '#8c8c8c', tooltip: `${spec.rowLabels[r]}: ${spec.side!.format(v)}` });
    });
    shapes.push(vline(sx, top, top + plotH, MUTED), hline(sx, sx + sideW, top + plotH, MUTED));
    const label = (v: number) => (v === 0 ? '0' : spec.side!.format(v));
    // inner labels only when all of them fit side by side; 0 and the end are always labelled
    const allFit = ticks.reduce((w, v) => w + textWidth(label(v), TICK_SIZE) + 6, 0) <= sideW;
    ticks.forEach((v, i) => {
      const x = sx + (v / end) * sideW;
      const last = i === ticks.length - 1;
      shapes.push(vline(x, top + plotH, top + plotH + 4, MUTED));
      if (i === 0 || last || allFit) shapes.push(text(x, top + plotH + 12, label(v), TICK_SIZE, i === 0 ? 'start' : last ? 'end' : 'middle'));
    });
  }

  shapes.push(...colorBar(barX, top, barH, spec.colorTitle, ['1', '0.5', '0'], viridis));
  return { width, height, title: spec.title, shapes };
}

export interface LineSeries {
  points: ReadonlyArray<readonly [number, number]>;
  color: string;
  width?: number;
  opacity?: number;
  /** dash length in px; omitted = solid */
  dash?: number;
  /** marker drawn on some points, so curves that coincide stay told apart */
  marker?: { shape: MarkerShape; at: readonly number[] };
  tooltip?: string;
}

export type MarkerShape = 'square' | 'triangle' | 'diamond' | 'cross' | 'plus';
export const MARKER_SHAPES: readonly MarkerShape[] = ['square', 'triangle', 'diamond', 'cross', 'plus'];

/** A marker as polylines centred on (x, y), r px from the centre: both renderers draw lines. */
function markerShapes(shape: MarkerShape, x: number, y: number, color: string, r = 3.5): Shape[] {
  const line = (pts: Array<[number, number]>): Shape => ({ kind: 'line', points: pts.map(([dx, dy]) => [x + dx, y + dy] as const), stroke: color, width: 1.5 });
  switch (shape) {
    case 'square':
      return [line([[-r, -r], [r, -r], [r, r], [-r, r], [-r, -r]])];
    case 'triangle':
      return [line([[0, -r * 1.15], [r * 1.1, r * 0.8], [-r * 1.1, r * 0.8], [0, -r * 1.15]])];
    case 'diamond':
      return [line([[0, -r * 1.3], [r * 1.3, 0], [0, r * 1.3], [-r * 1.3, 0], [0, -r * 1.3]])];
    case 'cross':
      return [line([[-r, -r], [r, r]]), line([[-r, r], [r, -r]])];
    case 'plus':
      return [line([[-r * 1.2, 0], [r * 1.2, 0]]), line([[0, -r * 1.2], [0, r * 1.2]])];
  }
}

export interface LineChartSpec {
  title: string;
  width: number;
  height: number;
  xTitle: string;
  yTitle: string;
  xDomain: [number, number];
  /** log: both ends > 0, ticks at powers of ten; values at or below the low end sit on the axis */
  yDomain: [number, number];
  yScale?: 'linear' | 'log';
  series: LineSeries[];
  /** dashed horizontal reference lines, labelled at the right end */
  guides?: Array<{ y: number; label: string }>;
  /** named colours listed at the right (categories), with the series' dash and marker */
  legend?: Array<{ label: string; color: string; dash?: number; marker?: MarkerShape }>;
  /** or a continuous colour scale at the right (e.g. layer index) */
  colorScale?: { title: string; low: string; high: string; color: (t: number) => string };
  /** a note drawn in the middle of the plot area (e.g. "unchanged" where there is no curve) */
  note?: string;
}

/** Powers of ten in [lo, hi], labelled 1, 0.1, 0.01, 1e-3, … */
function logTicks(lo: number, hi: number): Array<{ v: number; label: string }> {
  const ticks: Array<{ v: number; label: string }> = [];
  for (let e = Math.ceil(Math.log10(lo) - 1e-9); e <= Math.floor(Math.log10(hi) + 1e-9); e++) {
    ticks.push({ v: 10 ** e, label: e >= 0 ? String(10 ** e) : e >= -2 ? (10 ** e).toFixed(-e) : `1e${e}` });
  }
  return ticks;
}

export function lineChartScene(spec: LineChartSpec): Scene {
  const legendWidth = spec.legend ? Math.max(60, ...spec.legend.map((l) => textWidth(l.label, LABEL_SIZE))) + 38 : spec.colorScale ? 74 : 0;
  const left = 56;
  const top = 40;
  const right = spec.width - 14 - legendWidth;
  const bottom = spec.height - 46;
  const [x0, x1] = spec.xDomain;
  const [y0, y1] = spec.yDomain;
  const log = spec.yScale === 'log';
  const ly = (y: number) => Math.log10(clamp(y, y0, y1));
  const sx = (x: number) => left + ((x - x0) / (x1 - x0 || 1)) * (right - left);
  const sy = log
    ? (y: number) => bottom - ((ly(y) - ly(y0)) / (ly(y1) - ly(y0) || 1)) * (bottom - top)
    : (y: number) => bottom - ((y - y0) / (y1 - y0 || 1)) * (bottom - top);
  const shapes: Shape[] = [text(10, 16, spec.title, TITLE_SIZE, 'start', { bold: true })];

  const xt = niceTicks(x0, x1, Math.max(2, Math.floor((right - left) / 70)));
  const yt = niceTicks(y0, y1, Math.max(2, Math.floor((bottom - top) / 45)));
  const yTicks = log ? logTicks(y0, y1) : yt.ticks.map((v) => ({ v, label: formatTick(v, yt.step) }));
  for (const { v, label } of yTicks) shapes.push(hline(left, right, sy(v), GRID), text(left - 6, sy(v), label, TICK_SIZE, 'end'));
  for (const v of xt.ticks) shapes.push(vline(sx(v), top, bottom, GRID), text(sx(v), bottom + 12, formatTick(v, xt.step), TICK_SIZE, 'middle'));
  shapes.push(hline(left, right, bottom, MUTED), vline(left, top, bottom, MUTED));
  shapes.push(text((left + right) / 2, bottom + 32, spec.xTitle, LABEL_SIZE, 'middle'));
  shapes.push(text(14, (top + bottom) / 2, spec.yTitle, LABEL_SIZE, 'middle', { vertical: true }));

  for (const g of spec.guides ?? []) {
    shapes.push({ kind: 'line', points: [[left, sy(g.y)], [right, sy(g.y)]], stroke: '#999999', width: 1, dash: 4 });
    // labelled at the left end: spectra rise there, so the curves rarely cover the label
    shapes.push(text(left + 4, sy(g.y) - 6, g.label, TICK_SIZE, 'start', { fill: MUTED }));
  }
  // points beyond the x-axis are left out (the axis may be trimmed to where the energy is)
  const visible = (s: LineSeries) => s.points.filter(([x]) => x >= x0 && x <= x1);
  for (const s of spec.series) {
    const points = visible(s);
    if (points.length === 0) continue;
    shapes.push({
      kind: 'line',
      points: points.map(([x, y]) => [sx(x), sy(clamp(y, y0, y1))] as const),
      stroke: s.color,
      width: s.width ?? 1.5,
      dash: s.dash,
      opacity: s.opacity,
      tooltip: s.tooltip,
    });
  }
  // markers over every line, so a curve lying under another still shows its own
  for (const s of spec.series) {
    if (!s.marker) continue;
    for (const [x, y] of visible(s)) if (s.marker.at.includes(x)) shapes.push(...markerShapes(s.marker.shape, sx(x), sy(clamp(y, y0, y1)), s.color));
  }
  if (spec.note) shapes.push(text((left + right) / 2, (top + bottom) / 2, spec.note, LABEL_SIZE + 2, 'middle', { fill: MUTED }));

  const lx = right + 16;
  if (spec.legend) {
    spec.legend.forEach((l, i) => {
      const y = top + 6 + i * 18;
      shapes.push({ kind: 'line', points: [[lx, y], [lx + 22, y]], stroke: l.color, width: 2, dash: l.dash }, text(lx + 28, y, l.label, LABEL_SIZE));
      if (l.marker) shapes.push(...markerShapes(l.marker, lx + 11, y, l.color));
    });
  } else if (spec.colorScale) {
    const cs = spec.colorScale;
    shapes.push(...colorBar(lx, top + 14, Math.min(160, bottom - top - 14), cs.title, [cs.high, '', cs.low], cs.color));
  }
  return { width: spec.width, height: spec.height, title: spec.title, shapes };
}
