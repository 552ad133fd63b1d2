// Block-quantized weights (q8: int8, q4: 4-bit with min, 32-element blocks, f16 constants) decoded inside the
// matvec, tiled-matmul and gather kernels, against the CPU reference on the decoded values; the host encoders
// against their error bounds, and GGML block repacking against ggml's own dequantization formulas.
import { describe, expect, test } from 'vitest';
import { input, weight } from '../../dsl/trace.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import { linear, rmsnorm } from '../../dsl/nn/basic.ts';
import { QUANT_FORMATS } from '../../compiler/quantized.ts';
import { dequantize, quantize, repackGgml } from '../../runtime/quantize.ts';
import { f16BitsToF32, f32ToF16Bits } from '../../base/tensorValues.ts';
import { expectClose, randomData, runBoth } from '../helpers/gpu.ts';

// the CPU reference multiplies the same decoded values in another order
const tol = { atol: 2e-4, rtol: 1e-4 };

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
}

describe('kernels decode quantized weights where they read them', () => {
  test('matvec: q8 projection with a residual, and a q4 x q8 SwiGLU pair', async () => {
    const r = await runBoth(
      () => {
        const x = input('x', [2, 96]);
        const h = input('h', [2, 40]);
        const y = h.add(linear(x, weight('wd', [40, 96], 'q8')));
        const z = linear(x, weight('wg', [24, 96], 'q4')).silu().mul(linear(x, weight('wu', [24, 96], 'q8')));
        return { y, z };
      },
      {},
      (g) => randomData(g, 5),
    );
    expect(r.program.kernels.map((k) => k.templates.join('+'))).toEqual(['matvec+matvec']);
    // weights bind as u32x4; this adapter's kernels read one packed word per thread and step (see the next test)
    const wgsl = r.program.kernels[0]!.wgsl;
    expect(wgsl).toContain('array<vec4<u32>>');
    expectClose(r.gpu.outputs, r.cpu.outputs, tol);
  });

  // every K loop of the matvec (compiler/lower/matvecQuant.ts; this adapter compiles 'word') on awkward sizes:
  // batch 8 and 1 rows, 37 and 5 columns (no multiple of a workgroup's columns), 7 and 41 blocks along K (an odd
  // count: q8's last scale word half used; more trips than threads, the last partial), a fused RMSNorm prologue
  // shared by a q4 and a q8 matmul (its sums shared too). Staged x fits 16 KiB of workgroup memory whole; with 1 KiB
  // both kernels take K in chunks of one block (at batch 2: lavapipe compiles 8 rows of 32-element steps slowly).
  // Loops written out trip by trip as on a GPU for lanes and staged at 16 KiB (staged's weight loads then go before
  // the staging; lavapipe takes 20-50 s a case cold).
  test.each([
    ['word', 8, 16384, false],
    ['word', 1, 16384, false],
    ['lanes', 8, 16384, true],
    ['lanes', 1, 16384, false],
    ['wide', 1, 16384, false],
    ['staged', 8, 16384, true],
    ['staged', 1, 16384, false],
    ['staged', 2, 1024, false],
  ] as const)('matvec %s at batch %d (workgroup memory %d, unroll %s): odd columns and block counts, a norm prologue shared by q4 and q8', async (quantMatvec, batch, storage, unroll) => {
    const r = await runBoth(
      () => {
        const x = input('x', [batch, 224]);
        const n = rmsnorm(x, weight('g', [224]), 1e-5);
        const y = linear(n, weight('a', [37, 224], 'q4')).add(linear(n, weight('b', [37, 224], 'q8')));
        const z = linear(input('h', [1, 1312]), weight('c', [5, 1312], 'q8'));
        return { y, z };
      },
      {},
      (g) => randomData(g, 11),
      { limits: { unroll, quantMatvec, maxComputeWorkgroupStorageSize: storage } },
    );
    expect(r.program.kernels.flatMap((k) => k.templates)).toEqual(['matvec', 'matvec']);
    const wgsl = r.program.kernels.map((k) => k.wgsl).join('\n');
    expect(wgsl.includes('| 0x3f800000u)')).toBe(quantMatvec !== 'word'); // q4 codes placed in mantissas
    expect(wgsl.includes('mv_x')).toBe(quantMatvec === 'staged');
    // wide and staged read a whole u32x4 of each column a trip (named qv), lanes and word one packed word
    expect(wgsl.includes('let qv')).toBe(quantMatvec === 'wide' || quantMatvec === 'staged');
    // staged with trips written out and K whole: every weight load before the staging
    if (quantMatvec === 'staged') for (const k of r.program.kernels) expect(k.wgsl.indexOf('let qv') < k.wgsl.indexOf('mv_x[')).toBe(unroll);
    // chunks of K: a loop over them in each matvec, each trip starting at a barrier
    expect(wgsl.match(/\+\+\) \{\n\s*workgroupBarrier\(\);/g)?.length ?? 0).toBe(storage === 1024 ? 2 : 0);
    expectClose(r.gpu.outputs, r.cpu.outputs, tol);
  });

  // a forced shape (DeviceLimits.quantShape, what `bench quant-sweep` varies): fewer or more columns a workgroup and
  // threads than the planner picks, so threads take several trips or some have none; outputs as the reference
  test.each([
    ['lanes', 2, 32],
    ['staged', 8, 64],
  ] as const)('matvec %s with %d columns a workgroup and %d threads', async (quantMatvec, cols, threads) => {
    const r = await runBoth(
      () => {
        const x = input('x', [1, 224]);
        const n = rmsnorm(x, weight('g', [224]), 1e-5);
        return { y: linear(n, weight('a', [37, 224], 'q4')).add(linear(n, weight('b', [37, 224], 'q8'))) };
      },
      {},
      (g) => randomData(g, 11),
      { limits: { unroll: false, quantMatvec, quantShape: { cols, threads } } },
    );
    const [k] = r.program.kernels;
    expect(k!.wgsl).toContain(`@workgroup_size(${threads})`);
    expect(k!.workgroups[0]).toBe(Math.ceil(37 / cols));
    expectClose(r.gpu.outputs, r.cpu.outputs, tol);
  });

  // 'dot4' (matvecDot4.ts) rounds x to int8 per block, so its reference rounds x the same way (dot4Reference); the
  // kernels: q4 with q8 (x bytes in natural order, q4 nibbles spread), q4 alone (x bytes in the nibbles' order), q8
  // alone on a longer K; at 1 KiB of workgroup memory that K (41 blocks) in chunks of one block. At 3 rows only the
  // first: lavapipe's LLVM compile of a dot4 kernel grows with its rows (cold, loaded 2-core machine: ~9 s at 1 row,
  // ~100 s at 4, ~270 s at 8), so the many-row case is 3 rows (odd), not 8: the suite has a 15-minute budget.
  test.each([
    [3, 16384],
    [1, 16384],
    [2, 1024],
  ] as const)('matvec dot4 at batch %d (workgroup memory %d): x quantized to int8 per block, against x so rounded', async (batch, storage) => {
    const K = 224;
    const r = await runBoth(
      (): Record<string, Tensor> => {
        const x = input('x', [batch, K]);
        const n = rmsnorm(x, weight('g', [K]), 1e-5);
        const y = linear(n, weight('a', [37, K], 'q4')).add(linear(n, weight('b', [37, K], 'q8')));
        if (batch === 3) return { y };
        const u = linear(n, weight('d', [5, K], 'q4'));
        const z = linear(input('h', [1, 1312]), weight('c', [5, 1312], 'q8'));
        return { y, u, z };
      },
      {},
      (g) => randomData(g, 11),
      { limits: { quantMatvec: 'dot4', unroll: false, maxComputeWorkgroupStorageSize: storage } },
    );
    const full = batch !== 3;
    expect(r.program.kernels.flatMap((k) => k.templates)).toEqual(full ? ['matvec', 'matvec', 'matvec'] : ['matvec']);
    const wgsl = r.program.kernels.map((k) => k.wgsl).join('\n');
    // packed bytes multiplied: q4 nibbles spread to consecutive bytes beside q8, masked in place alone
    expect(wgsl.match(/dot4I8Packed\(/g)?.length).toBeGreaterThanOrEqual(full ? 3 : 1);
    expect(wgsl).toMatch(/\(qv\d+\[\d\] >> 16u\)/);
    if (full) expect(wgsl).toMatch(/\(\(qv\d+\[\d\] >> 4u\) & 0x0f0f0f0fu\)/);
    expect(wgsl.match(/\+\+\) \{\n\s*workgroupBarrier\(\);/g)?.length ?? 0).toBe(storage === 1024 ? 1 : 0);
    const host = randomData(r.graph, 11);
    const [xs, gs] = [host.inputs!.x!, host.weights!.g!].map((v) => Array.from(v as ArrayLike<number>, Number));
    const rows = Array.from({ length: batch }, (_, i) => {
      const row = xs.slice(i * K, i * K + K);
      const rms = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / K + 1e-5);
      return row.map((v, k) => v * rms * gs[k]!);
    });
    const w = (name: string, storage: 'q4' | 'q8') => ({ values: host.weights![name]! as ArrayLike<number>, storage });
    const want = {
      y: dot4Reference(rows, [w('a', 'q4'), w('b', 'q8')]),
      ...(full ? { u: dot4Reference(rows, [w('d', 'q4')]), z: dot4Reference([Array.from(host.inputs!.h! as ArrayLike<number>, Number)], [w('c', 'q8')]) } : {}),
    };
    for (const [name, { value, slack }] of Object.entries(want))
      value.forEach((v, j) => expect(Math.abs(r.gpu.outputs[name]!.data[j]! - v), `${name}[${j}]`).toBeLessThanOrEqual(tol.atol + tol.rtol * Math.abs(v) + slack[j]!));
  });

  test('tiled matmul reads a q4 weight, and a q8 embedding is gathered', async () => {
    const r = await runBoth(
      () => {
        const x = input('x', [40, 64]);
        const ids = input('ids', [3], 'i32');
        return { y: linear(x, weight('w', [48, 64], 'q4')), e: weight('emb', [50, 64], 'q8').gather(ids) };
      },
      {},
      (g) => ({ ...randomData(g, 9), inputs: { ...randomData(g, 9).inputs, ids: [0, 49, 17] } }),
    );
    expect(r.program.kernels.some((k) => k.templates.includes('tiled'))).toBe(true);
    expectClose(r.gpu.outputs, r.cpu.outputs, tol);
    // the buffers hold the packed words: 1 + 1/16 words per 4 int8, 1 + 1/4 words per 8 int4, padded to whole u32x4
    const bytes = Object.fromEntries(r.program.buffers.filter((b) => b.role === 'weight').map((b) => [b.name, b.bytes]));
    const pad16 = (n: number) => Math.ceil(n / 16) * 16;
    expect(bytes).toEqual({ w: (48 * 64) / 8 * 4 + (48 * 64) / 32 * 4, emb: pad16(50 * 64 + (50 * 64) / 32 * 2) });
  });
});

describe('host encoding', () => {
  test('q8 and q4 round-trip within half a step of each block', () => {
    const rand = lcg(3);
    const values = Float32Array.from({ length: 32 * 40 }, (_, i) => rand() * (1 + (i >> 5)));
    for (const storage of ['q8', 'q4'] as const) {
      const words = quantize(values, storage);
      expect(words.length).toBe(QUANT_FORMATS[storage].words(values.length));
      const back = dequantize(words, values.length, storage);
      for (let b = 0; b < values.length / 32; b++) {
        const block = values.subarray(b * 32, b * 32 + 32);
        const step = storage === 'q8' ? Math.max(...block.map(Math.abs)) / 127 : (Math.max(...block) - Math.min(...block)) / 15;
        for (let j = 0; j < 32; j++) expect(Math.abs(back[b * 32 + j]! - block[j]!)).toBeLessThanOrEqual(step * 0.5 * 1.01 + 1e-3 * step + 1e-6);
      }
    }
  });

  // ggml-quants.c dequantize_row_q8_0 / q4_0 / q4_1 / q4_K, written out independently of the repacking
  const half = (v: DataView, at: number) => f16BitsToF32(v.getUint16(at, true));
  function ggmlDequant(type: 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q4_K', raw: Uint8Array, count: number): Float32Array {
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out = new Float32Array(count);
    if (type === 'Q8_0') for (let i = 0; i < count; i++) out[i] = half(v, (i >> 5) * 34) * v.getInt8((i >> 5) * 34 + 2 + (i & 31));
    if (type === 'Q4_0')
      for (let b = 0; b < count / 32; b++)
        for (let j = 0; j < 16; j++) {
          const q = raw[b * 18 + 2 + j]!;
          out[b * 32 + j] = ((q & 15) - 8) * half(v, b * 18);
          out[b * 32 + j + 16] = ((q >> 4) - 8) * half(v, b * 18);
        }
    if (type === 'Q4_1')
      for (let b = 0; b < count / 32; b++)
        for (let j = 0; j < 16; j++) {
          const q = raw[b * 20 + 4 + j]!;
          out[b * 32 + j] = (q & 15) * half(v, b * 20) + half(v, b * 20 + 2);
          out[b * 32 + j + 16] = (q >> 4) * half(v, b * 20) + half(v, b * 20 + 2);
        }
    if (type === 'Q4_K')
      for (let sb = 0; sb < count / 256; sb++) {
        const at = sb * 144;
        const sc = raw.subarray(at + 4, at + 16);
        const scaleMin = (j: number) => (j < 4 ? [sc[j]! & 63, sc[j + 4]! & 63] : [(sc[j + 4]! & 0xf) | ((sc[j - 4]! >> 6) << 4), (sc[j + 4]! >> 4) | ((sc[j]! >> 6) << 4)]);
        let is = 0;
        let y = sb * 256;
        for (let j = 0; j < 256; j += 64) {
          const [s1, m1] = scaleMin(is);
          const [s2, m2] = scaleMin(is + 1);
          for (let l = 0; l < 32; l++) out[y + l] = half(v, at) * s1! * (raw[at + 16 + j / 2 + l]! & 15) - half(v, at + 2) * m1!;
          for (let l = 0; l < 32; l++) out[y + 32 + l] = half(v, at) * s2! * (raw[at + 16 + j / 2 + l]! >> 4) - half(v, at + 2) * m2!;
          y += 64;
          is += 2;
        }
      }
    return out;
  }

  test.each(['Q8_0', 'Q4_0', 'Q4_1', 'Q4_K'] as const)('%s blocks repack into the device layout', (type) => {
    const rand = lcg(type.length * 7 + type.charCodeAt(1));
    const count = 512;
    const blockBytes = { Q8_0: 34, Q4_0: 18, Q4_1: 20, Q4_K: 144 }[type];
    const blockElements = type === 'Q4_K' ? 256 : 32;
    const raw = Uint8Array.from({ length: (count / blockElements) * blockBytes }, () => Math.floor((rand() + 1) * 128) & 255);
    const view = new DataView(raw.buffer);
    // sane f16 block constants (random bytes could be NaN or huge)
    for (let b = 0; b < count / blockElements; b++) {
      view.setUint16(b * blockBytes, f32ToF16Bits(0.01 + 0.02 * Math.abs(rand())), true);
      if (type === 'Q4_K') view.setUint16(b * blockBytes + 2, f32ToF16Bits(0.005 + 0.01 * Math.abs(rand())), true);
      if (type === 'Q4_1') view.setUint16(b * blockBytes + 2, f32ToF16Bits(-0.2 * Math.abs(rand())), true);
    }
    const storage = type === 'Q8_0' ? 'q8' : 'q4';
    const got = dequantize(repackGgml(type, raw, count), count, storage);
    const want = ggmlDequant(type, raw, count);
    // Q8_0, Q4_0 and Q4_1 are bit-exact; Q4_K's d*sc and dmin*m are rounded to f16 (2^-11 relative each)
    const atol = type === 'Q4_K' ? 2 ** -11 * (0.03 * 63 * 15 + 0.015 * 63) : 0;
    for (let i = 0; i < count; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThanOrEqual(atol);
  });
});

/**
 * `rows @ W.T` summed over weights as the dot4 kernel computes it: x rounded to int8 per 32-element block (d =
 * max|x| / 127), q4's block minimum times the block's exact sum of x; the weights as stored. `slack` per output: the
 * change of one code for elements whose x / d lies within 1e-3 of a rounding tie (the GPU's x differs in float ulps).
 */
function dot4Reference(rows: number[][], weights: { values: ArrayLike<number>; storage: 'q4' | 'q8' }[]): { value: number[]; slack: number[] } {
  const K = rows[0]!.length;
  const value: number[] = [];
  const slack: number[] = [];
  const decoded = weights.map(({ values, storage }) => {
    const upload = quantize(values, storage);
    return { storage, w: dequantize(upload, values.length, storage), min: (blk: number) => f16BitsToF32(upload[values.length / 8 + blk]! >>> 16) };
  });
  for (const x of rows) {
    const d = Array.from({ length: K / 32 }, (_, b) => Math.max(...x.slice(b * 32, b * 32 + 32).map(Math.abs)) / 127);
    const q = x.map((v, k) => (d[k >> 5]! ? Math.round(v / d[k >> 5]!) : 0));
    const tie = x.map((v, k) => d[k >> 5]! > 0 && Math.abs(Math.abs(v / d[k >> 5]! - Math.trunc(v / d[k >> 5]!)) - 0.5) < 1e-3);
    const N = weights[0]!.values.length / K;
    for (let c = 0; c < N; c++) {
      let [sum, loose] = [0, 0];
      for (const { storage, w, min } of decoded)
        for (let k = 0; k < K; k++) {
          const wk = w[c * K + k]!;
          sum += wk * q[k]! * d[k >> 5]!;
          if (tie[k]) loose += Math.abs(wk) * d[k >> 5]!;
          // w = scale * code + min: the min term meets x's exact sum, not its rounded one
          if (storage === 'q4') sum += min((c * K + k) >> 5) * (x[k]! - q[k]! * d[k >> 5]!);
        }
      value.push(sum);
      slack.push(loose);
    }
  }
  return { value, slack };
}
