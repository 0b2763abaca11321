/**
 * Linear-algebra benchmark: `npx tsx bench/linalg.ts` (or `npm run bench:linalg`).
 *
 * Prints, from one run on this machine: native vs TypeScript GEMM throughput on the shapes
 * extraction uses, the cost of TypeScript QR and dense SVD, and a rank-32 randomized SVD of a
 * 4096×11008 layer (a 7B MLP projection) with its error against the optimum — set against the
 * time to read the same layer's bf16 bytes from a file, the other half of every extraction.
 */
import { open, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LinalgBackend } from '../src/linalg/backend.js';
import { createOrtBackend } from '../src/linalg/ort.js';
import { orthonormalize } from '../src/linalg/qr.js';
import { createRng } from '../src/linalg/random.js';
import { createRefBackend } from '../src/linalg/ref.js';
import { incrementalSvd, randomizedSvd } from '../src/linalg/rsvd.js';
import { svdSmall } from '../src/linalg/svd-small.js';
import { decodeIntoF32, encodeFromF32 } from '../src/tensor/dtype.js';
import type { Matrix } from '../src/tensor/matrix.js';

const REPEATS = 5;

function gaussian(rows: number, cols: number, seed: number): Matrix {
  const data = new Float32Array(rows * cols);
  createRng(seed).fillNormal(data);
  return { rows, cols, data };
}

/** Best wall time in ms of `repeats` runs after one warm-up. */
async function bestOf(repeats: number, f: () => unknown): Promise<number> {
  await f();
  let best = Infinity;
  for (let i = 0; i < repeats; i++) {
    const t = performance.now();
    await f();
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

async function gemmGflops(backend: LinalgBackend, m: number, k: number, n: number, transA = false): Promise<number> {
  const a = transA ? gaussian(k, m, 1) : gaussian(m, k, 1);
  const b = gaussian(k, n, 2);
  const ms = await bestOf(REPEATS, () => backend.gemm(a, b, { transA }));
  return (2 * m * k * n) / ms / 1e6;
}

/** A (rows×cols) = U·diag(s)·Vᵀ with random orthonormal U, V, built with the backend. */
async function planted(backend: LinalgBackend, rows: number, cols: number, s: number[]): Promise<Matrix> {
  const k = s.length;
  const us = orthonormalize(gaussian(rows, k, 3));
  for (let i = 0; i < rows; i++) for (let c = 0; c < k; c++) us.data[i * k + c] *= s[c];
  const v = orthonormalize(gaussian(cols, k, 4));
  return backend.gemm(us, v, { transB: true });
}

/** ‖A − U·diag(S)·Vᵀ‖_F, the low-rank product formed with the backend. */
async function residualNorm(backend: LinalgBackend, a: Matrix, U: Matrix, S: Float64Array, V: Matrix): Promise<number> {
  const us = { rows: U.rows, cols: U.cols, data: U.data.slice() };
  for (let i = 0; i < U.rows; i++) for (let c = 0; c < U.cols; c++) us.data[i * U.cols + c] *= S[c];
  const approx = await backend.gemm(us, V, { transB: true });
  let e = 0;
  for (let i = 0; i < a.data.length; i++) e += (a.data[i] - approx.data[i]) ** 2;
  return Math.sqrt(e);
}

/** Best time (ms) to read a bf16 file in 1 MiB positioned reads and decode it to f32. */
async function readBf16(path: string, elements: number): Promise<number> {
  const chunk = Buffer.allocUnsafe(1 << 20);
  const out = new Float32Array(elements);
  return bestOf(3, async () => {
    const fh = await open(path, 'r');
    try {
      for (let pos = 0; pos < elements * 2; ) {
        const want = Math.min(chunk.length, elements * 2 - pos);
        const { bytesRead } = await fh.read(chunk, 0, want, pos);
        if (bytesRead !== want) throw new Error(`bench/linalg.ts: short read of ${path} at ${pos}`);
        decodeIntoF32(chunk.subarray(0, want), 'BF16', out.subarray(pos / 2, (pos + want) / 2));
        pos += want;
      }
    } finally {
      await fh.close();
    }
  });
}

const fmt = (x: number, digits = 1) => x.toFixed(digits);

async function main(): Promise<void> {
  const threads = availableParallelism();
  console.log(`linalg bench: ${cpus()[0]?.model ?? 'unknown CPU'}, ${threads} threads, Node ${process.version}\n`);
  const ort = await createOrtBackend({ threads });
  const ref = createRefBackend();

  console.log('GEMM (f32, best of 5 after warm-up)');
  const a = await gemmGflops(ort, 4096, 4096, 32);
  const b = await gemmGflops(ort, 4096, 11008, 64);
  const bt = await gemmGflops(ort, 11008, 4096, 40, true);
  const refRate = await gemmGflops(ref, 512, 2048, 64);
  console.log(`  ort (4096x4096)·(4096x32)      ${fmt(a)} GFLOPS`);
  console.log(`  ort (4096x11008)·(11008x64)    ${fmt(b)} GFLOPS   (target ≥ 90 on 2 cores)`);
  console.log(`  ort (4096x11008)ᵀ·(4096x40)    ${fmt(bt)} GFLOPS   (the Aᵀ·Q of every power iteration)`);
  console.log(`  ref (512x2048)·(2048x64)       ${fmt(refRate, 2)} GFLOPS -> (4096x11008)·(11008x64) would take ` +
    `${fmt((2 * 4096 * 11008 * 64) / refRate / 1e6, 0)} ms; ort is ${fmt(b / refRate, 0)}x faster`);

  console.log('\nTypeScript factorizations');
  const tall = gaussian(11008, 80, 5);
  // more runs here: V8 needs a handful of calls before these loops reach their optimised tier
  console.log(`  orthonormalize 11008x80        ${fmt(await bestOf(3 * REPEATS, () => orthonormalize(tall)))} ms   (target < 100)`);
  const square = gaussian(512, 512, 6);
  const denseMs = await bestOf(1, () => svdSmall(square));
  console.log(`  svdSmall 512x512 (dense SVD)   ${fmt(denseMs, 0)} ms`);
  const small = gaussian(64, 64, 7);
  console.log(`  svdSmall 64x64                 ${fmt(await bestOf(3 * REPEATS, () => svdSmall(small)), 2)} ms`);

  const rows = 4096;
  const cols = 11008;
  const rank = 32;
  const spectrum = Array.from({ length: 128 }, (_, i) => 1 / (i + 1)); // slow decay past the rank
  const layer = await planted(ort, rows, cols, spectrum);
  let optimum = 0;
  for (let i = rank; i < spectrum.length; i++) optimum += spectrum[i] ** 2;
  optimum = Math.sqrt(optimum);

  console.log(`\nRandomized SVD of a ${rows}x${cols} layer (planted spectrum 1/i, 128 values), rank ${rank}, 2 power iterations`);
  let result = await randomizedSvd(ort, layer, { rank, powerIters: 2 });
  const rsvdMs = await bestOf(3, async () => {
    result = await randomizedSvd(ort, layer, { rank, powerIters: 2 });
  });
  const ratio = (await residualNorm(ort, layer, result.U, result.S, result.V)) / optimum;
  console.log(`  randomizedSvd                  ${fmt(rsvdMs, 0)} ms, error / optimum = ${ratio.toFixed(4)}`);
  const incMs = await bestOf(1, () => incrementalSvd(ort, layer, { maxRank: 64, blockSize: 16 }));
  console.log(`  incrementalSvd to rank 64      ${fmt(incMs, 0)} ms (errors for every rank ≤ 64)`);

  const dir = await mkdtemp(join(tmpdir(), 'loraforge-bench-'));
  try {
    const file = join(dir, 'layer.bf16');
    await writeFile(file, encodeFromF32(layer.data, 'BF16'));
    const readMs = await readBf16(file, rows * cols);
    const mb = (rows * cols * 2) / 1e6;
    console.log(`\nReading the same layer as bf16 (${fmt(mb, 0)} MB, page cache warm, 1 MiB reads + decode)`);
    console.log(`  read + decode                  ${fmt(readMs, 0)} ms (${fmt(mb / readMs, 2)} GB/s)`);
    console.log(`  rSVD time / read time          ${fmt(rsvdMs / readMs, 2)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  await ort.dispose?.();
}

await main();
