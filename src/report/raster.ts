/**
 * Scene → RGB pixels, for PNG charts. Shapes are drawn with area coverage as alpha (rects) or
 * distance-to-segment coverage (lines), which is enough anti-aliasing for charts; text uses the
 * 5×7 bitmap font scaled by whole pixels.
 */
import { GLYPH_ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH, glyph } from './font.js';
import { BACKGROUND, parseHex, type LineShape, type RectShape, type Scene, type TextShape } from './scene.js';

export interface Raster {
  width: number;
  height: number;
  /** RGB, row-major, 3 bytes per pixel */
  data: Uint8Array;
}

class Canvas implements Raster {
  readonly data: Uint8Array;

  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.data = new Uint8Array(width * height * 3);
    // the same background as the SVG copy of the chart
    const rgb = parseHex(BACKGROUND);
    for (let o = 0; o < this.data.length; o += 3) this.data.set(rgb, o);
  }

  /** Blends `rgb` over pixel (x, y) with weight `alpha` in [0, 1]. */
  blend(x: number, y: number, rgb: readonly number[], alpha: number): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height || alpha <= 0) return;
    const a = Math.min(1, alpha);
    const o = (y * this.width + x) * 3;
    for (let k = 0; k < 3; k++) this.data[o + k] = Math.round(this.data[o + k] * (1 - a) + rgb[k] * a);
  }
}

/** Overlap of [a, b) with the pixel [p, p+1). */
function overlap(a: number, b: number, p: number): number {
  return Math.max(0, Math.min(b, p + 1) - Math.max(a, p));
}

function fillRect(c: Canvas, x: number, y: number, w: number, h: number, rgb: readonly number[]): void {
  for (let py = Math.floor(y); py < Math.ceil(y + h); py++) {
    const fy = overlap(y, y + h, py);
    for (let px = Math.floor(x); px < Math.ceil(x + w); px++) c.blend(px, py, rgb, fy * overlap(x, x + w, px));
  }
}

/** Splits a polyline into dash pieces of `dash` length separated by equal gaps. */
function dashes(points: ReadonlyArray<readonly [number, number]>, dash: number): Array<Array<[number, number]>> {
  const pieces: Array<Array<[number, number]>> = [];
  let on = true;
  let left = dash;
  let current: Array<[number, number]> = [[points[0][0], points[0][1]]];
  for (let i = 1; i < points.length; i++) {
    let [x0, y0] = points[i - 1];
    const [x1, y1] = points[i];
    let len = Math.hypot(x1 - x0, y1 - y0);
    while (len > 0) {
      const step = Math.min(left, len);
      const t = step / len;
      x0 += (x1 - x0) * t;
      y0 += (y1 - y0) * t;
      len -= step;
      left -= step;
      if (on) current.push([x0, y0]);
      if (left <= 0) {
        if (on) pieces.push(current);
        on = !on;
        left = dash;
        current = [[x0, y0]];
      }
    }
  }
  if (on && current.length > 1) pieces.push(current);
  return pieces;
}

/**
 * Strokes a polyline: each pixel takes the largest coverage any segment gives it, then is
 * blended once, so joints of a translucent line are not darker than the rest.
 */
function strokePolyline(c: Canvas, points: ReadonlyArray<readonly [number, number]>, width: number, rgb: readonly number[], opacity: number): void {
  if (points.length < 2) return;
  const half = width / 2;
  const pad = half + 1;
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const bx = Math.max(0, Math.floor(Math.min(...xs) - pad));
  const by = Math.max(0, Math.floor(Math.min(...ys) - pad));
  const bw = Math.min(c.width, Math.ceil(Math.max(...xs) + pad)) - bx;
  const bh = Math.min(c.height, Math.ceil(Math.max(...ys) + pad)) - by;
  if (bw <= 0 || bh <= 0) return;
  const cover = new Float32Array(bw * bh);
  // pixels a segment reached, so blending skips the (mostly empty) rest of the bounding box
  const touched: number[] = [];
  for (let i = 1; i < points.length; i++) {
    const [x0, y0] = points[i - 1];
    const [x1, y1] = points[i];
    const dx = x1 - x0;
    const dy = y1 - y0;
    const len2 = dx * dx + dy * dy;
    const py0 = Math.max(by, Math.floor(Math.min(y0, y1) - pad));
    const py1 = Math.min(by + bh, Math.ceil(Math.max(y0, y1) + pad));
    const px0 = Math.max(bx, Math.floor(Math.min(x0, x1) - pad));
    const px1 = Math.min(bx + bw, Math.ceil(Math.max(x0, x1) + pad));
    for (let py = py0; py < py1; py++) {
      for (let px = px0; px < px1; px++) {
        const cx = px + 0.5;
        const cy = py + 0.5;
        const t = len2 > 0 ? Math.min(1, Math.max(0, ((cx - x0) * dx + (cy - y0) * dy) / len2)) : 0;
        const d = Math.hypot(cx - (x0 + t * dx), cy - (y0 + t * dy));
        const cov = Math.min(1, Math.max(0, half + 0.5 - d));
        const o = (py - by) * bw + (px - bx);
        if (cov > cover[o]) {
          if (cover[o] === 0) touched.push(o);
          cover[o] = cov;
        }
      }
    }
  }
  for (const o of touched) c.blend(bx + (o % bw), by + Math.floor(o / bw), rgb, cover[o] * opacity);
}

function drawRect(c: Canvas, s: RectShape, k: number): void {
  if (s.fill !== 'none') fillRect(c, s.x * k, s.y * k, s.w * k, s.h * k, parseHex(s.fill));
  if (s.stroke) {
    const [x0, y0, x1, y1] = [s.x * k, s.y * k, (s.x + s.w) * k, (s.y + s.h) * k];
    strokePolyline(c, [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], k, parseHex(s.stroke), 1);
  }
}

function drawLine(c: Canvas, s: LineShape, k: number): void {
  const pts = s.points.map(([x, y]) => [x * k, y * k] as const);
  const rgb = parseHex(s.stroke);
  const pieces = s.dash ? dashes(pts, s.dash * k) : [pts];
  for (const p of pieces) strokePolyline(c, p, s.width * k, rgb, s.opacity ?? 1);
}

function drawText(c: Canvas, s: TextShape, k: number): void {
  if (s.text === '') return;
  // whole-pixel glyph cells, sized so a character is about as wide as in the SVG rendering
  const cell = Math.max(1, Math.round((s.size * k) / 10));
  const chars = [...s.text];
  const w = chars.length * GLYPH_ADVANCE * cell - cell;
  const h = GLYPH_HEIGHT * cell;
  const shift = s.anchor === 'start' ? 0 : s.anchor === 'middle' ? w / 2 : w;
  const ax = s.x * k;
  const ay = s.y * k;
  const rgb = parseHex(s.fill);
  // (u, v): position in the unrotated text box, u along the text, v downwards
  const put = (u: number, v: number) => {
    if (s.vertical) c.blend(Math.round(ax + v - h / 2), Math.round(ay - u + shift), rgb, 1);
    else c.blend(Math.round(ax + u - shift), Math.round(ay + v - h / 2), rgb, 1);
  };
  chars.forEach((ch, i) => {
    const g = glyph(ch);
    for (let gy = 0; gy < GLYPH_HEIGHT; gy++) {
      for (let gx = 0; gx < GLYPH_WIDTH; gx++) {
        if (!g[gy][gx]) continue;
        for (let dy = 0; dy < cell; dy++) {
          for (let dx = 0; dx < cell + (s.bold ? 1 : 0); dx++) put(i * GLYPH_ADVANCE * cell + gx * cell + dx, gy * cell + dy);
        }
      }
    }
  });
}

/** Draws `scene` at `pixelRatio` device pixels per CSS pixel (2 keeps text and lines crisp). */
export function rasterize(scene: Scene, pixelRatio = 2): Raster {
  const k = pixelRatio;
  const c = new Canvas(Math.ceil(scene.width * k), Math.ceil(scene.height * k));
  for (const s of scene.shapes) {
    if (s.kind === 'rect') drawRect(c, s, k);
    else if (s.kind === 'line') drawLine(c, s, k);
    else drawText(c, s, k);
  }
  return c;
}
