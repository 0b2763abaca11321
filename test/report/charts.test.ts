import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 as zlibCrc32, inflateSync } from 'node:zlib';
import { spectrumCharts, meanEnergyCurve, groupByModuleType, isUnchanged, trimmedRank, type Chart } from '../../src/report/charts.js';
import { heatmapScene, lineChartScene, niceTicks } from '../../src/report/plot.js';
import { crc32, encodePng } from '../../src/report/png.js';
import { rasterize, type Raster } from '../../src/report/raster.js';
import { parseHex, viridis } from '../../src/report/scene.js';
import { renderSvg } from '../../src/report/svg.js';
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
    assert.deepEqual(charts.map((c) => c.id), ['energy', 'heatmap-q_proj', 'falloff-q_proj', 'falloff-log-q_proj', 'heatmap-a-b-', 'falloff-a-b-', 'falloff-log-a-b-']);
    const svg = renderSvg(charts[4].scene, charts[4].id);
    assert.ok(svg.includes('a&lt;b&gt;') && !svg.includes('a<b>'));
  });
});

describe('charts: unchanged modules, coinciding curves, scales', () => {
  const zero = (name: string, layer: number, k: number): TensorSpectrum => tensor(name, layer, Array.from({ length: k }, () => 0));
  const result = (tensors: TensorSpectrum[], top = 8): SpectrumResult => ({
    source: { kind: 'adapter', adapter: 'x' },
    top,
    method: 'exact-from-factors',
    thresholds: [0.9, 0.95, 0.99],
    tensors,
    skipped: [],
    changed1d: [],
    notes: [],
  });
  const texts = (c: Chart) => c.scene.shapes.flatMap((s) => (s.kind === 'text' ? [s.text] : []));
  const byId = (charts: Chart[], id: string) => charts.find((c) => c.id === id)!;

  it('draws an unchanged module as "unchanged", not as all energy at rank 1', () => {
    const charts = spectrumCharts(
      result([
        tensor('model.layers.0.self_attn.q_proj', 0, [2, 1]),
        zero('model.layers.1.self_attn.q_proj', 1, 2),
        zero('model.layers.0.self_attn.k_proj', 0, 2),
        zero('model.layers.1.self_attn.k_proj', 1, 2),
      ]),
    );
    assert.ok(isUnchanged(zero('a', 0, 2)) && !isUnchanged(tensor('a', 0, [1])));
    const energy = byId(charts, 'energy');
    const curves = energy.scene.shapes.filter((s) => s.kind === 'line' && s.tooltip);
    assert.deepEqual(curves.map((s) => s.kind === 'line' && s.tooltip), ['q_proj'], 'no curve for a module type that never changed');
    // q_proj's curve is layer 0's alone: 80% at rank 1, not the 90% a zero layer counted as "all at rank 1" gives
    assert.ok(texts(energy).includes('k_proj (unchanged)'));
    const q = curves[0];
    assert.ok(q.kind === 'line');
    const [, atZero] = q.points[0];
    const [, atOne] = q.points[1];
    const [, atTwo] = q.points[2];
    assert.ok(Math.abs((atZero - atOne) / (atZero - atTwo) - 0.8) < 1e-2, 'rank 1 holds 4/5 of layer 0 alone');

    const heat = byId(charts, 'heatmap-q_proj');
    assert.deepEqual(texts(heat).filter((t) => t === 'unchanged'), ['unchanged'], 'the zero row is labelled');
    const cells = heat.scene.shapes.filter((s) => s.kind === 'rect' && s.tooltip?.includes('unchanged'));
    assert.equal(cells.length, 2);
    assert.ok(cells.every((c) => c.kind === 'rect' && c.fill === '#f0f0f0'), 'drawn as "no value", not as σᵢ/σ₁ = 0');

    assert.ok(byId(charts, 'falloff-q_proj').scene.title.includes('1 unchanged, not drawn'));
    const kFalloff = byId(charts, 'falloff-k_proj');
    assert.ok(texts(kFalloff).includes('unchanged (Δ = 0)'));
    assert.equal(kFalloff.scene.shapes.filter((s) => s.kind === 'line' && s.tooltip).length, 0);
  });

  it('tells coinciding energy curves apart by dash and by markers at different ranks', () => {
    const same = [3, 2, 1, 0.5];
    const charts = spectrumCharts(result(['q_proj', 'k_proj', 'v_proj'].map((t) => tensor(`model.layers.0.self_attn.${t}`, 0, same))));
    const lines = byId(charts, 'energy').scene.shapes.filter((s) => s.kind === 'line');
    const curves = lines.filter((s) => s.kind === 'line' && s.tooltip);
    assert.equal(curves.length, 3);
    assert.equal(new Set(curves.map((s) => s.kind === 'line' && s.dash)).size, 3, 'three dash patterns');
    // markers: short untitled polylines in each curve's colour, at x positions no other curve's markers share
    const markerX = curves.map((c) => {
      assert.ok(c.kind === 'line');
      const plotRight = Math.max(...c.points.map(([x]) => x)) + 5; // the legend, right of the plot, repeats each marker
      const own = lines.filter((s) => s.kind === 'line' && !s.tooltip && s.stroke === c.stroke && s.points.length <= 5 && s.points.every(([x]) => x < plotRight));
      return new Set(own.map((s) => (s.kind === 'line' ? Math.round(Math.min(...s.points.map(([x]) => x))) : 0)));
    });
    assert.ok(markerX.every((xs) => xs.size >= 1), 'each curve carries markers');
    for (let i = 0; i < 3; i++) for (let j = i + 1; j < 3; j++) assert.ok([...markerX[i]].every((x) => !markerX[j].has(x)), `markers of ${i} and ${j} sit apart`);
  });

  it('trims the x-axis to where 99.9% of the energy is, and offers the fall-off on a log scale', () => {
    // σ = 0.3^i over 64 components: rank 3 holds 1 − 0.09³ = 99.93% of ‖Δ‖²
    const fast = Array.from({ length: 64 }, (_, i) => 0.3 ** i);
    const ts = [tensor('model.layers.0.mlp.up_proj', 0, fast), tensor('model.layers.1.mlp.up_proj', 1, fast)];
    assert.equal(trimmedRank(ts), Math.ceil(3 * 1.25) + 2);
    assert.equal(trimmedRank([tensor('a', 0, [1, 1, 1, 1])]), 4, 'never past the ranks computed');
    const charts = spectrumCharts(result(ts, 64));
    assert.deepEqual(charts.map((c) => c.id), ['energy', 'heatmap-up_proj', 'falloff-up_proj', 'falloff-log-up_proj']);
    const energy = byId(charts, 'energy');
    assert.ok(energy.note?.includes('rank 6 of the 64'));
    const curvePoints = (c: Chart) => c.scene.shapes.filter((s) => s.kind === 'line' && s.tooltip).map((s) => (s.kind === 'line' ? s.points.length : 0));
    assert.deepEqual(curvePoints(energy), [7], 'energy curve drawn for ranks 0…6 only');
    assert.deepEqual(curvePoints(byId(charts, 'falloff-up_proj')), [6, 6], 'fall-off curves for components 0…5 only');

    const log = byId(charts, 'falloff-log-up_proj');
    assert.equal(log.kind, 'falloff-log');
    // 0.3^5 ≈ 2.4e-3 is the smallest ratio drawn: the axis runs 1e-3 … 1 in decades
    const yLabels = log.scene.shapes.flatMap((s) => (s.kind === 'text' && s.anchor === 'end' ? [s.text] : []));
    assert.deepEqual(yLabels, ['1e-3', '0.01', '0.1', '1']);
    const curve = log.scene.shapes.find((s) => s.kind === 'line' && s.tooltip);
    assert.ok(curve?.kind === 'line');
    const ys = curve.points.map(([, y]) => y);
    const steps = ys.slice(1).map((y, i) => y - ys[i]);
    assert.ok(steps.every((d) => Math.abs(d - steps[0]) < 0.05), 'a geometric decay is a straight line on the log axis');
  });

  it('gives the σ₁ bars a scale from 0 to a round value above the largest', () => {
    const ts = [tensor('model.layers.0.self_attn.o_proj', 0, [3.2, 1]), tensor('model.layers.1.self_attn.o_proj', 1, [1.1, 1])];
    const heat = byId(spectrumCharts(result(ts)), 'heatmap-o_proj');
    const bars = heat.scene.shapes.filter((s) => s.kind === 'rect' && s.fill === '#8c8c8c');
    assert.equal(bars.length, 2);
    const x0 = bars[0].kind === 'rect' ? bars[0].x : 0;
    // the scale's labels, under the bars (not the colour bar's, further right)
    const labels = heat.scene.shapes.filter((s) => s.kind === 'text' && ['0', '2', '4'].includes(s.text) && s.x >= x0 && s.x <= x0 + 100);
    assert.deepEqual(labels.map((s) => s.kind === 'text' && s.text), ['0', '2', '4']);
    const [zero, , four] = labels;
    assert.ok(bars[0].kind === 'rect' && zero.kind === 'text' && four.kind === 'text');
    assert.ok(Math.abs(bars[0].w - (3.2 / 4) * (four.x - zero.x)) < 0.01, 'bar length on the scale');
  });
});
