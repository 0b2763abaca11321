/**
 * The charts of a spectrum: per module type a layer × component heatmap of σᵢ/σ₁ and fall-off
 * curves (one per layer), plus one energy-vs-rank chart comparing module types. Component
 * indices are 0-based, as `loraforge edit` takes them.
 */
import { lineChartScene, heatmapScene } from './plot.js';
import { categorical, viridis, type Scene } from './scene.js';
import type { SpectrumResult, TensorSpectrum } from './spectrum.js';

export interface Chart {
  /** unique, usable as an HTML id and a file name stem */
  id: string;
  kind: 'heatmap' | 'falloff' | 'energy';
  /** the module type a heatmap or fall-off chart is about */
  moduleType?: string;
  scene: Scene;
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
  const values = tensors.map(ratios);
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
      if (c >= t.sigma.length) return `${t.name}: no component ${c}`;
      return `${t.name} component ${c}: σ = ${fmt(t.sigma[c])} (${values[r][c].toFixed(3)} σ₁), top-${c + 1} energy ${(100 * t.energy[c]).toFixed(1)}%`;
    },
  });
}

function falloffChart(type: string, tensors: TensorSpectrum[]): Scene {
  const layers = tensors.map((t, i) => t.layer ?? i);
  const lo = Math.min(...layers);
  const hi = Math.max(...layers);
  const maxLen = Math.max(1, ...tensors.map((t) => t.sigma.length));
  return lineChartScene({
    title: `${type}: fall-off σᵢ / σ₁`,
    width: 470,
    height: 300,
    xTitle: 'component i',
    yTitle: 'σᵢ / σ₁',
    xDomain: [0, Math.max(1, maxLen - 1)],
    yDomain: [0, 1],
    series: tensors.map((t, i) => ({
      points: ratios(t).map((r, c) => [c, r] as const),
      color: viridis(hi > lo ? (layers[i] - lo) / (hi - lo) : 0.5),
      width: 1.4,
      opacity: 0.85,
      tooltip: t.name,
    })),
    colorScale: { title: tensors.every((t) => t.layer !== null) ? 'layer' : 'tensor #', low: String(lo), high: String(hi), color: viridis },
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

function energyChart(groups: Array<{ type: string; tensors: TensorSpectrum[] }>): Scene {
  const maxLen = Math.max(1, ...groups.flatMap((g) => g.tensors.map((t) => t.energy.length)));
  return lineChartScene({
    title: 'Energy captured vs rank (mean over layers, per module type)',
    width: 780,
    height: 380,
    xTitle: 'rank r (top-r components kept)',
    yTitle: 'fraction of ‖Δ‖² captured',
    xDomain: [0, maxLen],
    yDomain: [0, 1],
    guides: [
      { y: 0.9, label: '90%' },
      { y: 0.95, label: '95%' },
      { y: 0.99, label: '99%' },
    ],
    series: groups.map((g, i) => ({ points: meanEnergyCurve(g.tensors), color: categorical(i), width: 2, tooltip: g.type })),
    legend: groups.map((g, i) => ({ label: g.type, color: categorical(i) })),
  });
}

export function spectrumCharts(result: SpectrumResult): Chart[] {
  const groups = groupByModuleType(result.tensors);
  const charts: Chart[] = [];
  if (groups.length === 0) return charts;
  charts.push({ id: 'energy', kind: 'energy', scene: energyChart(groups) });
  const used = new Set(['energy']);
  for (const g of groups) {
    let stem = slug(g.type);
    for (let n = 2; used.has(`heatmap-${stem}`); n++) stem = `${slug(g.type)}-${n}`;
    used.add(`heatmap-${stem}`);
    charts.push({ id: `heatmap-${stem}`, kind: 'heatmap', moduleType: g.type, scene: heatmapChart(g.type, g.tensors) });
    charts.push({ id: `falloff-${stem}`, kind: 'falloff', moduleType: g.type, scene: falloffChart(g.type, g.tensors) });
  }
  return charts;
}
