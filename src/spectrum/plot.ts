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

export function formatTick(v: number, step: number): string {
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
    shapes.push(text(sx, top - 12, spec.side.title, LABEL_SIZE));
    spec.side.values.forEach((v, r) => {
      const w = max > 0 && Number.isFinite(v) ? (v / max) * sideW : 0;
      shapes.push({ kind: 'rect', x: sx, y: top + r * ch + ch * 0.15, w: Math.max(w, 0.5), h: ch * 0.7, fill: '#8c8c8c', tooltip: `${spec.rowLabels[r]}: ${spec.side!.format(v)}` });
    });
    shapes.push(vline(sx, top, top + plotH, MUTED), text(sx + sideW, top + plotH + 12, `max ${spec.side.format(max)}`, TICK_SIZE, 'end'));
  }

  shapes.push(...colorBar(barX, top, barH, spec.colorTitle, ['1', '0.5', '0'], viridis));
  return { width, height, title: spec.title, shapes };
}

export interface LineSeries {
  points: ReadonlyArray<readonly [number, number]>;
  color: string;
  width?: number;
  opacity?: number;
  tooltip?: string;
}

export interface LineChartSpec {
  title: string;
  width: number;
  height: number;
  xTitle: string;
  yTitle: string;
  xDomain: [number, number];
  yDomain: [number, number];
  series: LineSeries[];
  /** dashed horizontal reference lines, labelled at the right end */
  guides?: Array<{ y: number; label: string }>;
  /** named colours listed at the right (categories) */
  legend?: Array<{ label: string; color: string }>;
  /** or a continuous colour scale at the right (e.g. layer index) */
  colorScale?: { title: string; low: string; high: string; color: (t: number) => string };
}

export function lineChartScene(spec: LineChartSpec): Scene {
  const legendWidth = spec.legend ? Math.max(60, ...spec.legend.map((l) => textWidth(l.label, LABEL_SIZE))) + 34 : spec.colorScale ? 74 : 0;
  const left = 56;
  const top = 40;
  const right = spec.width - 14 - legendWidth;
  const bottom = spec.height - 46;
  const [x0, x1] = spec.xDomain;
  const [y0, y1] = spec.yDomain;
  const sx = (x: number) => left + ((x - x0) / (x1 - x0 || 1)) * (right - left);
  const sy = (y: number) => bottom - ((y - y0) / (y1 - y0 || 1)) * (bottom - top);
  const shapes: Shape[] = [text(10, 16, spec.title, TITLE_SIZE, 'start', { bold: true })];

  const xt = niceTicks(x0, x1, Math.max(2, Math.floor((right - left) / 70)));
  const yt = niceTicks(y0, y1, Math.max(2, Math.floor((bottom - top) / 45)));
  for (const v of yt.ticks) shapes.push(hline(left, right, sy(v), GRID), text(left - 6, sy(v), formatTick(v, yt.step), TICK_SIZE, 'end'));
  for (const v of xt.ticks) shapes.push(vline(sx(v), top, bottom, GRID), text(sx(v), bottom + 12, formatTick(v, xt.step), TICK_SIZE, 'middle'));
  shapes.push(hline(left, right, bottom, MUTED), vline(left, top, bottom, MUTED));
  shapes.push(text((left + right) / 2, bottom + 32, spec.xTitle, LABEL_SIZE, 'middle'));
  shapes.push(text(14, (top + bottom) / 2, spec.yTitle, LABEL_SIZE, 'middle', { vertical: true }));

  for (const g of spec.guides ?? []) {
    shapes.push({ kind: 'line', points: [[left, sy(g.y)], [right, sy(g.y)]], stroke: '#999999', width: 1, dash: 4 });
    // labelled at the left end: spectra rise there, so the curves rarely cover the label
    shapes.push(text(left + 4, sy(g.y) - 6, g.label, TICK_SIZE, 'start', { fill: MUTED }));
  }
  for (const s of spec.series) {
    if (s.points.length === 0) continue;
    shapes.push({
      kind: 'line',
      points: s.points.map(([x, y]) => [sx(clamp(x, x0, x1)), sy(clamp(y, y0, y1))] as const),
      stroke: s.color,
      width: s.width ?? 1.5,
      opacity: s.opacity,
      tooltip: s.tooltip,
    });
  }

  const lx = right + 16;
  if (spec.legend) {
    spec.legend.forEach((l, i) => {
      const y = top + 6 + i * 18;
      shapes.push({ kind: 'line', points: [[lx, y], [lx + 18, y]], stroke: l.color, width: 3 }, text(lx + 24, y, l.label, LABEL_SIZE));
    });
  } else if (spec.colorScale) {
    const cs = spec.colorScale;
    shapes.push(...colorBar(lx, top + 14, Math.min(160, bottom - top - 14), cs.title, [cs.high, '', cs.low], cs.color));
  }
  return { width: spec.width, height: spec.height, title: spec.title, shapes };
}
