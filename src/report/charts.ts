/**
 * The charts of a spectrum: per module type a layer × component heatmap of σᵢ/σ₁ and fall-off
 * curves (one per layer), plus one energy-vs-rank chart comparing module types. Component
 * indices are 0-based, as `loraforge edit` takes them.
 */
import { lineChartScene, heatmapScene, MARKER_SHAPES } from './plot.js';
import { categorical, viridis, type Scene } from './scene.js';
import type { SpectrumResult, TensorSpectrum } from '../spectrum/spectrum.js';

export interface Chart {
  /** unique, usable as an HTML id and a file name stem */
  id: string;
  /** falloff-log: the fall-off curves again on a logarithmic σ axis */
  kind: 'heatmap' | 'falloff' | 'falloff-log' | 'energy';
  /** the module type a heatmap or fall-off chart is about */
  moduleType?: string;
  /** what the caption should add, e.g. where the x-axis was trimmed */
  note?: string;
  scene: Scene;
}

/** Energy share up to which the energy and fall-off charts' x-axes reach (with a margin). */
const TRIM_ENERGY = 0.999;

/** A tensor Δ = 0 (identical in A and B, or an all-zero LoRA update): it has no spectrum to draw. */
export function isUnchanged(t: TensorSpectrum): boolean {
  return t.totalEnergy === 0;
}

/**
 * The rank up to which charts draw: the largest rank at which a changed tensor reaches
 * TRIM_ENERGY of its energy (all it has, where the top k never do), plus a margin of a quarter
 * and 2, within the ranks computed. 0 when nothing changed.
 */
export function trimmedRank(tensors: readonly TensorSpectrum[]): number {
  let reach = 0;
  let computed = 0;
  for (const t of tensors.filter((x) => !isUnchanged(x))) {
    const i = t.energy.findIndex((e) => e >= TRIM_ENERGY);
    reach = Math.max(reach, i < 0 ? t.energy.length : i + 1);
    computed = Math.max(computed, t.energy.length);
  }
  return Math.min(computed, Math.ceil(reach * 1.25) + 2);
}

/** Transformer module types in the order people think of them; others follow alphabetically. */
const MODULE_ORDER = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export function groupByModuleType(tensors: readonly TensorSpectrum[]): Array<{ type: string; tensors: TensorSpectrum[] }> {
  const groups = new Map<string, TensorSpectrum[]>();
  for (const t of tensors) groups.set(t.moduleType, [...(groups.get(t.moduleType) ?? []), t]);
  const rank = (type: string) => {
    const i = MODULE_ORDER.indexOf(type);
    return i < 0 ? MODULE_ORDER.length : i;
  };
  return [...groups]
    .sort(([a], [b]) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0))
    .map(([type, ts]) => ({ type, tensors: [...ts].sort((x, y) => (x.layer ?? Infinity) - (y.layer ?? Infinity) || (x.name < y.name ? -1 : 1)) }));
}

function slug(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]+/g, '-') || 'tensors';
}

/** Row labels: the layer number when every tensor has its own, else the full name. */
function rowLabels(tensors: readonly TensorSpectrum[]): string[] {
  const layers = tensors.map((t) => t.layer);
  const unique = layers.every((l) => l !== null) && new Set(layers).size === layers.length;
  return tensors.map((t) => (unique ? String(t.layer) : t.name));
}

function ratios(t: TensorSpectrum): number[] {
  const s1 = t.sigma[0] ?? 0;
  return t.sigma.map((s) => (s1 > 0 ? s / s1 : 0));
}

function fmt(v: number): string {
  return v === 0 ? '0' : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? Number(v.toPrecision(3)).toString() : v.toExponential(2);
}

function heatmapChart(type: string, tensors: TensorSpectrum[]): Scene {
  const labels = rowLabels(tensors);
  // an unchanged tensor's row is "no value", not σᵢ/σ₁ = 0
  const values = tensors.map((t) => (isUnchanged(t) ? t.sigma.map(() => Number.NaN) : ratios(t)));
  return heatmapScene({
    title: `${type}: σᵢ / σ₁ per layer (${tensors.length} tensor${tensors.length === 1 ? '' : 's'})`,
    rowLabels: labels,
    values,
    colLabel: (c) => String(c),
    xTitle: 'component i (0-based, descending σ)',
    yTitle: labels.every((l) => /^\d+$/.test(l)) ? 'layer' : 'tensor',
    colorTitle: 'σᵢ / σ₁',
    side: { title: 'σ₁', values: tensors.map((t) => t.sigma[0] ?? 0), format: fmt },
    cellTooltip: (r, c) => {
      const t = tensors[r];
      if (isUnchanged(t)) return `${t.name}: unchanged (Δ = 0)`;
      if (c >= t.sigma.length) return `${t.name}: no component ${c}`;
      return `${t.name} component ${c}: σ = ${fmt(t.sigma[c])} (${values[r][c].toFixed(3)} σ₁), top-${c + 1} energy ${(100 * t.energy[c]).toFixed(1)}%`;
    },
    rowNote: (r) => (isUnchanged(tensors[r]) ? 'unchanged' : undefined),
  });
}

function unchangedNote(tensors: readonly TensorSpectrum[]): string {
  const n = tensors.filter(isUnchanged).length;
  return n === 0 ? '' : n === tensors.length ? ' — unchanged' : ` (${n} unchanged, not drawn)`;
}

/** The lowest power of ten at or below every positive ratio drawn, at most 0.1 and at least 1e-8. */
function logFloor(series: ReadonlyArray<ReadonlyArray<readonly [number, number]>>, xMax: number): number {
  let min = 0.1;
  for (const points of series) for (const [x, y] of points) if (x <= xMax && y > 0) min = Math.min(min, y);
  return 10 ** Math.max(-8, Math.floor(Math.log10(min) + 1e-9));
}

function falloffChart(type: string, tensors: TensorSpectrum[], log: boolean): Scene {
  const layers = tensors.map((t, i) => t.layer ?? i);
  const lo = Math.min(...layers);
  const hi = Math.max(...layers);
  const changed = tensors.flatMap((t, i) => (isUnchanged(t) ? [] : [{ t, layer: layers[i] }]));
  // component indices are 0-based: rank r ends at component r − 1
  const xMax = Math.max(1, trimmedRank(tensors) - 1);
  const curves = changed.map(({ t }) => ratios(t).map((r, c) => [c, r] as const));
  return lineChartScene({
    title: `${type}: fall-off σᵢ / σ₁${log ? ', log scale' : ''}${unchangedNote(tensors)}`,
    width: 470,
    height: 300,
    xTitle: 'component i',
    yTitle: 'σᵢ / σ₁',
    xDomain: [0, xMax],
    yDomain: [log ? logFloor(curves, xMax) : 0, 1],
    yScale: log ? 'log' : 'linear',
    series: changed.map(({ t, layer }, i) => ({
      points: curves[i],
      color: viridis(hi > lo ? (layer - lo) / (hi - lo) : 0.5),
      width: 1.4,
      opacity: 0.85,
      tooltip: t.name,
    })),
    colorScale: { title: tensors.every((t) => t.layer !== null) ? 'layer' : 'tensor #', low: String(lo), high: String(hi), color: viridis },
    note: changed.length === 0 ? 'unchanged (Δ = 0)' : undefined,
  });
}

/** Mean over tensors of the energy held by the top r components, r = 0…max k. */
export function meanEnergyCurve(tensors: readonly TensorSpectrum[]): Array<[number, number]> {
  const maxLen = Math.max(0, ...tensors.map((t) => t.energy.length));
  const curve: Array<[number, number]> = [[0, 0]];
  for (let r = 1; r <= maxLen; r++) {
    // a tensor with fewer components than r holds what its last component reached
    const sum = tensors.reduce((acc, t) => acc + (t.energy.length ? t.energy[Math.min(r, t.energy.length) - 1] : 1), 0);
    curve.push([r, sum / tensors.length]);
  }
  return curve;
}

/** Dash lengths cycled over the energy chart's series (undefined: solid). */
const DASHES = [undefined, 7, 3, 11, 5];

/**
 * Ranks at which series i of n carries a marker: about six along the axis (at least n ranks
 * apart), shifted by i/n of a step, so coinciding curves show every series' markers side by side.
 */
function markerRanks(i: number, n: number, xMax: number): number[] {
  const step = Math.max(n, Math.ceil(xMax / 6));
  const at: number[] = [];
  for (let x = 1 + Math.floor((i * step) / n); x <= xMax; x += step) at.push(x);
  return at;
}

function energyChart(groups: Array<{ type: string; tensors: TensorSpectrum[] }>): Scene {
  const all = groups.flatMap((g) => g.tensors);
  const xMax = Math.max(1, trimmedRank(all));
  const styled = groups.map((g, i) => ({
    ...g,
    changed: g.tensors.filter((t) => !isUnchanged(t)),
    color: categorical(i),
    dash: DASHES[i % DASHES.length],
    marker: MARKER_SHAPES[i % MARKER_SHAPES.length],
    at: markerRanks(i, groups.length, xMax),
  }));
  return lineChartScene({
    title: 'Energy captured vs rank (mean over changed layers, per module type)',
    width: 780,
    height: 380,
    xTitle: 'rank r (top-r components kept)',
    yTitle: 'fraction of ‖Δ‖² captured',
    xDomain: [0, xMax],
    yDomain: [0, 1],
    guides: [
      { y: 0.9, label: '90%' },
      { y: 0.95, label: '95%' },
      { y: 0.99, label: '99%' },
    ],
    // an unchanged module type has no energy to capture: no curve, and the legend says why
    series: styled
      .filter((g) => g.changed.length > 0)
      .map((g) => ({ points: meanEnergyCurve(g.changed), color: g.color, width: 2, dash: g.dash, marker: { shape: g.marker, at: g.at }, tooltip: g.type })),
    legend: styled.map((g) => ({ label: g.changed.length ? g.type : `${g.type} (unchanged)`, color: g.color, dash: g.dash, marker: g.marker })),
    note: all.every(isUnchanged) ? 'unchanged: Δ = 0 in every tensor' : undefined,
  });
}

function trimNote(tensors: readonly TensorSpectrum[]): string | undefined {
  const r = trimmedRank(tensors);
  const k = Math.max(0, ...tensors.map((t) => t.energy.length));
  return r > 0 && r < k ? `x-axis up to rank ${r} of the ${k} computed, past where every changed layer holds ${100 * TRIM_ENERGY}% of its energy` : undefined;
}

export function spectrumCharts(result: SpectrumResult): Chart[] {
  const groups = groupByModuleType(result.tensors);
  const charts: Chart[] = [];
  if (groups.length === 0) return charts;
  charts.push({ id: 'energy', kind: 'energy', note: trimNote(result.tensors), scene: energyChart(groups) });
  const used = new Set(['energy']);
  for (const g of groups) {
    const ids = (stem: string) => [`heatmap-${stem}`, `falloff-${stem}`, `falloff-log-${stem}`];
    let stem = slug(g.type);
    // types may slug alike (and "log-x"'s fall-off id is x's log one): number them until all three are free
    for (let n = 2; ids(stem).some((id) => used.has(id)); n++) stem = `${slug(g.type)}-${n}`;
    for (const id of ids(stem)) used.add(id);
    const note = trimNote(g.tensors);
    charts.push({ id: `heatmap-${stem}`, kind: 'heatmap', moduleType: g.type, scene: heatmapChart(g.type, g.tensors) });
    charts.push({ id: `falloff-${stem}`, kind: 'falloff', moduleType: g.type, note, scene: falloffChart(g.type, g.tensors, false) });
    charts.push({ id: `falloff-log-${stem}`, kind: 'falloff-log', moduleType: g.type, note, scene: falloffChart(g.type, g.tensors, true) });
  }
  return charts;
}
