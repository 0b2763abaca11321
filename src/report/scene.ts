/**
 * A chart as a flat list of shapes in CSS pixels. Charts are laid out once as a Scene and then
 * rendered twice — to SVG (svg.ts) and to pixels for PNG (raster.ts) — so both always agree.
 */
export interface RectShape {
  kind: 'rect';
  x: number;
  y: number;
  w: number;
  h: number;
  fill: string;
  stroke?: string;
  /** tooltip in SVG (ignored in PNG) */
  tooltip?: string;
}

export interface LineShape {
  kind: 'line';
  points: ReadonlyArray<readonly [number, number]>;
  stroke: string;
  width: number;
  /** dash length in px (gaps the same); omitted = solid */
  dash?: number;
  opacity?: number;
  tooltip?: string;
}

export interface TextShape {
  kind: 'text';
  /** anchor point; y is the vertical centre of the text */
  x: number;
  y: number;
  text: string;
  size: number;
  anchor: 'start' | 'middle' | 'end';
  fill: string;
  bold?: boolean;
  /** rotated 90° counter-clockwise (y-axis titles) */
  vertical?: boolean;
}

export type Shape = RectShape | LineShape | TextShape;

export interface Scene {
  width: number;
  height: number;
  /** what the chart shows, for screen readers and the SVG <title> */
  title: string;
  shapes: Shape[];
}

export const INK = '#222222';
export const MUTED = '#666666';
export const GRID = '#e4e4e4';
export const MISSING = '#f0f0f0';
export const BACKGROUND = '#ffffff';

/** Approximate width of sans-serif text; used for layout in both renderers. */
export function textWidth(text: string, size: number): number {
  return text.length * size * 0.6;
}

/** Samples of matplotlib's viridis at 0, 1/8, …, 1: perceptually even and readable in greyscale. */
const VIRIDIS = ['#440154', '#472c7a', '#3b518b', '#2c718e', '#21908d', '#27ad81', '#5cc863', '#aadc32', '#fde725'];

/** Tableau 10: distinct colours for up to ten categories (module types). */
const CATEGORICAL = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

export function parseHex(color: string): [number, number, number] {
  const m = /^#([0-9a-f]{6})$/i.exec(color);
  if (!m) throw new Error(`report/scene.ts: colour "${color}" must be #rrggbb`);
  const n = parseInt(m[1], 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function toHex(rgb: readonly number[]): string {
  return `#${rgb.map((c) => Math.round(Math.min(255, Math.max(0, c))).toString(16).padStart(2, '0')).join('')}`;
}

/** viridis(t) for t in [0, 1] (clamped), linearly interpolated between the samples. */
export function viridis(t: number): string {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const a = parseHex(VIRIDIS[i]);
  const b = parseHex(VIRIDIS[i + 1]);
  return toHex(a.map((c, k) => c + (b[k] - c) * f));
}

export function categorical(i: number): string {
  return CATEGORICAL[i % CATEGORICAL.length];
}
