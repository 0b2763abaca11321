/**
 * A minimal PNG encoder (8-bit RGB, no interlace) over node:zlib: signature, IHDR, one IDAT,
 * IEND, each chunk with its CRC-32 (PNG spec, ISO/IEC 15948, sections 5 and 11).
 */
import { deflateSync } from 'node:zlib';
import type { Raster } from './raster.js';

const SIGNATURE = Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const COLOR_TYPE_RGB = 2;
/** per-scanline filter "Sub": charts are runs of equal pixels, which Sub turns into zeros */
const FILTER_SUB = 1;

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, body: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(type, 4, 'ascii');
  out.set(body, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}

export function encodePng(img: Raster): Buffer {
  const { width, height, data } = img;
  if (data.length !== width * height * 3) throw new Error(`report/png.ts: ${width}×${height} RGB needs ${width * height * 3} bytes, got ${data.length}`);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = COLOR_TYPE_RGB;
  // bytes 10-12: deflate compression, adaptive filtering, no interlace (all 0)
  const stride = width * 3;
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    const o = y * (stride + 1);
    raw[o] = FILTER_SUB;
    const row = y * stride;
    for (let x = 0; x < stride; x++) raw[o + 1 + x] = (data[row + x] - (x >= 3 ? data[row + x - 3] : 0)) & 0xff;
  }
  return Buffer.concat([SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw, { level: 6 })), chunk('IEND', new Uint8Array(0))]);
}
