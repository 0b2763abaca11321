/** Scene → a standalone SVG document (also inlined as-is into report.html). */
import { BACKGROUND, type Scene, type Shape } from './scene.js';

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Two decimals is sub-pixel precision; more only bloats files with thousands of cells. */
function n(x: number): string {
  return String(Math.round(x * 100) / 100);
}

function tooltip(t: string | undefined): string {
  return t ? `<title>${escapeXml(t)}</title>` : '';
}

function shapeToSvg(s: Shape): string {
  switch (s.kind) {
    case 'rect': {
      const stroke = s.stroke ? ` stroke="${s.stroke}"` : '';
      const attrs = `x="${n(s.x)}" y="${n(s.y)}" width="${n(s.w)}" height="${n(s.h)}" fill="${s.fill}"${stroke}`;
      return s.tooltip ? `<rect ${attrs}>${tooltip(s.tooltip)}</rect>` : `<rect ${attrs}/>`;
    }
    case 'line': {
      const pts = s.points.map(([x, y]) => `${n(x)},${n(y)}`).join(' ');
      const dash = s.dash ? ` stroke-dasharray="${n(s.dash)}"` : '';
      const opacity = s.opacity !== undefined && s.opacity < 1 ? ` stroke-opacity="${n(s.opacity)}"` : '';
      const attrs = `points="${pts}" fill="none" stroke="${s.stroke}" stroke-width="${n(s.width)}"${dash}${opacity} stroke-linejoin="round" stroke-linecap="round"`;
      return s.tooltip ? `<polyline ${attrs}>${tooltip(s.tooltip)}</polyline>` : `<polyline ${attrs}/>`;
    }
    case 'text': {
      const anchor = s.anchor === 'start' ? '' : ` text-anchor="${s.anchor}"`;
      const weight = s.bold ? ' font-weight="bold"' : '';
      const rotate = s.vertical ? ` transform="rotate(-90 ${n(s.x)} ${n(s.y)})"` : '';
      return `<text x="${n(s.x)}" y="${n(s.y)}" font-size="${n(s.size)}" fill="${s.fill}"${anchor}${weight}${rotate} dominant-baseline="central">${escapeXml(s.text)}</text>`;
    }
  }
}

/** The SVG element; `id` lets the report (and tests) address each chart. */
export function renderSvg(scene: Scene, id?: string): string {
  const idAttr = id ? ` id="${escapeXml(id)}"` : '';
  return [
    `<svg xmlns="http://www.w3.org/2000/svg"${idAttr} width="${scene.width}" height="${scene.height}" viewBox="0 0 ${scene.width} ${scene.height}" role="img" aria-label="${escapeXml(scene.title)}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<title>${escapeXml(scene.title)}</title>`,
    `<rect x="0" y="0" width="${scene.width}" height="${scene.height}" fill="${BACKGROUND}"/>`,
    ...scene.shapes.map(shapeToSvg),
    '</svg>',
  ].join('\n');
}

/** A standalone .svg file (XML prolog, no id). */
export function svgFile(scene: Scene): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n${renderSvg(scene)}\n`;
}
