import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 as zlibCrc32, inflateSync } from 'node:zlib';
import { spectrumCharts, meanEnergyCurve, groupByModuleType } from '../../src/spectrum/charts.js';
import { heatmapScene, lineChartScene, niceTicks } from '../../src/spectrum/plot.js';
import { crc32, encodePng } from '../../src/spectrum/png.js';
import { rasterize, type Raster } from '../../src/spectrum/raster.js';
import { parseHex, viridis } from '../../src/spectrum/scene.js';
import { renderSvg } from '../../src/spectrum/svg.js';
import { summarizeSpectrum, type SpectrumResult, type TensorSpectrum } from '../../src/spectrum/spectrum.js';

/** A PNG decoder for what encodePng writes (8-bit RGB, filters None/Sub), checking every CRC with zlib's. */
function decodePng(png: Buffer): Raster {
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  let off = 8;
  let width = 0;
  let height = 0;
  const idat: Buffer[] = [];
  const types: string[] = [];
  while (off < png.length) {
    const len = png.readUInt32BE(off);
    const type = png.toString('ascii', off + 4, off + 8);
    const body = png.subarray(off + 8, off + 8 + len);
    assert.equal(png.readUInt32BE(off + 8 + len), zlibCrc32(png.subarray(off + 4, off + 8 + len)), `CRC of ${type}`);
    types.push(type);
    if (type === 'IHDR') {
      width = body.readUInt32BE(0);
      height = body.readUInt32BE(4);
      assert.deepEqual([...body.subarray(8)], [8, 2, 0, 0, 0], '8-bit RGB, deflate, no interlace');
    }
    if (type === 'IDAT') idat.push(body);
    off += 12 + len;
  }
  assert.deepEqual([types[0], types.at(-1)], ['IHDR', 'IEND']);
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * 3;
  assert.equal(raw.length, (stride + 1) * height);
  const data = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    assert.ok(filter === 0 || filter === 1, `filter ${filter}`);
    for (let x = 0; x < stride; x++) {
      const v = raw[y * (stride + 1) + 1 + x];
      data[y * stride + x] = filter === 1 && x >= 3 ? (v + data[y * stride + x - 3]) & 0xff : v;
    }
  }
  return { width, height, data };
}

function pixel(img: Raster, x: number, y: number): number[] {
  const o = (Math.round(y) * img.width + Math.round(x)) * 3;
  return [img.data[o], img.data[o + 1], img.data[o + 2]];
}

function tensor(name: string, layer: number, sigma: number[]): TensorSpectrum {
  const total = sigma.reduce((a, s) => a + s * s, 0);
  return { name, layer, moduleType: name.slice(name.lastIndexOf('.') + 1), shape: [8, 8], rank: sigma.length, ...summarizeSpectrum(sigma, total, sigma.length) };
}

describe('charts', () => {
  it('CRC-32 matches zlib on the PNG spec check value', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
    assert.equal(crc32(Buffer.from('IEND')), zlibCrc32(Buffer.from('IEND')));
  });

  it('draws each heatmap cell in the viridis colour of its value, in SVG and PNG alike', () => {
    const values = [
      [1, 0.5, 0.25],
      [1, 0, Number.NaN],
    ];
    const scene = heatmapScene({ title: 'h', rowLabels: ['0', '1'], values, colLabel: String, xTitle: 'x', yTitle: 'y', colorTitle: 'c' });
    // the cells are the first rects of the scene, row by row
    const cells = scene.shapes.filter((s) => s.kind === 'rect').slice(0, 6);
    assert.ok(cells.every((c) => c.kind === 'rect' && c.w > 10 && c.h > 10));
    const svg = renderSvg(scene);
    for (const v of [1, 0.5, 0.25, 0]) assert.ok(svg.includes(`fill="${viridis(v)}"`), `cell colour for ${v}`);
    const img = decodePng(encodePng(rasterize(scene, 2)));
    assert.equal(img.width, Math.ceil(scene.width * 2));
    values.forEach((row, r) =>
      row.forEach((v, c) => {
        const cell = cells[r * 3 + c];
        assert.ok(cell.kind === 'rect');
        const want = Number.isFinite(v) ? parseHex(viridis(v)) : parseHex('#f0f0f0');
        assert.deepEqual(pixel(img, (cell.x + cell.w / 2) * 2, (cell.y + cell.h / 2) * 2), want, `cell ${r},${c}`);
      }),
    );
    // the title is drawn: some dark pixels in the top band
    let dark = 0;
    for (let y = 0; y < 50; y++) for (let x = 0; x < img.width; x++) if (pixel(img, x, y)[0] < 80) dark++;
    assert.ok(dark > 10, 'title pixels');
  });

  it('places line chart points on the axes it labels', () => {
    const scene = lineChartScene({
      title: 't',
      width: 400,
      height: 300,
      xTitle: 'x',
      yTitle: 'y',
      xDomain: [0, 10],
      yDomain: [0, 1],
      series: [{ points: [[0, 0], [10, 1]], color: '#ff0000', width: 4 }],
    });
    const line = scene.shapes.find((s) => s.kind === 'line' && s.stroke === '#ff0000');
    assert.ok(line && line.kind === 'line');
    const [[x0, y0], [x1, y1]] = line.points;
    assert.ok(x1 > x0 && y1 < y0, 'up and to the right');
    const img = rasterize(scene, 1);
    assert.deepEqual(pixel(img, (x0 + x1) / 2, (y0 + y1) / 2), [255, 0, 0], 'the line is drawn where the scene says');
  });

  it('picks round tick steps', () => {
    const unit = niceTicks(0, 1, 5);
    assert.equal(unit.step, 0.2);
    assert.deepEqual(unit.ticks.map((t) => t.toFixed(3)), ['0.000', '0.200', '0.400', '0.600', '0.800', '1.000']);
    assert.deepEqual(niceTicks(0, 64, 8).ticks, [0, 10, 20, 30, 40, 50, 60]);
  });

  it('groups module types in transformer order and averages energy curves', () => {
    const ts = [tensor('model.layers.0.mlp.down_proj', 0, [1]), tensor('model.layers.0.self_attn.v_proj', 0, [2, 2]), tensor('model.layers.0.self_attn.q_proj', 0, [3, 1]), tensor('model.layers.1.self_attn.q_proj', 1, [1, 0])];
    assert.deepEqual(groupByModuleType(ts).map((g) => g.type), ['q_proj', 'v_proj', 'down_proj']);
    // q_proj layer 0: energies 0.9, 1; layer 1: 1, 1
    assert.deepEqual(meanEnergyCurve(ts.slice(2)), [[0, 0], [1, 0.95], [2, 1]]);
  });

  it('makes one heatmap and one fall-off chart per module type, plus the energy chart, and escapes names', () => {
    const result: SpectrumResult = {
      source: { kind: 'adapter', adapter: 'x' },
      top: 2,
      method: 'exact-from-factors',
      thresholds: [0.9, 0.95, 0.99],
      tensors: [tensor('model.layers.0.self_attn.q_proj', 0, [3, 1]), tensor('model.layers.0.a<b>', 0, [1, 1])],
      skipped: [],
      changed1d: [],
      notes: [],
    };
    const charts = spectrumCharts(result);
    assert.deepEqual(charts.map((c) => c.id), ['energy', 'heatmap-q_proj', 'falloff-q_proj', 'heatmap-a-b-', 'falloff-a-b-']);
    const svg = renderSvg(charts[3].scene, charts[3].id);
    assert.ok(svg.includes('a&lt;b&gt;') && !svg.includes('a<b>'));
  });
});
