// The quantized matvec's 'half' K loop (compiler/lower/matvecHalf.ts: f16 products summed in f16 over each block)
// against the CPU reference on the decoded weights, within the bound its f16 rounding allows; and its fallback
// where the adapter lacks 'shader-f16'.
import { describe, expect, test } from 'vitest';
import { input, trace, weight } from '../../dsl/trace.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import { linear, rmsnorm } from '../../dsl/nn/basic.ts';
import { compile } from '../../compiler/compile.ts';
import { QUANT_FORMATS } from '../../compiler/quantized.ts';
import { dequantize, quantize } from '../../runtime/quantize.ts';
import { f16BitsToF32 } from '../../base/tensorValues.ts';
import { type RunData, randomData, runBoth } from '../helpers/gpu.ts';
import type { Graph } from '../../compiler/ir.ts';

/** Fraction of sum |d q x| (the block products' magnitudes) the f16 sums may be off: matvecHalf.ts bounds it by 18 * 2^-11. */
const F16_BOUND = 2 ** -6;

/**
 * Values in realistic ranges: weights ~0.05 (a trained projection's), x in [-1.5, 1.5] with an outlier feature near
 * 300 (through a norm: its gain), and a raw h with one block near 1e4 (products past f16's 65504 without the block's
 * scale) and one near 1e-6 (f16 subnormals without it).
 */
function realistic(graph: Graph): RunData {
  const data = randomData(graph, 17);
  const scaled = (v: unknown, f: (x: number, i: number) => number) => Array.from(v as ArrayLike<number>, (x, i) => f(Number(x), i));
  const weights = Object.fromEntries(Object.entries(data.weights!).map(([name, v]) => [name, name === 'g' ? scaled(v, (x, i) => (i === 5 ? 300 : 1 + 0.5 * x)) : scaled(v, (x) => 0.05 * x)]));
  const inputs = { x: scaled(data.inputs!.x!, (x, i) => (data.weights!.g ? 1.5 * x : i % 224 === 5 ? 300 * x : 1.5 * x)), ...(data.inputs!.h ? { h: scaled(data.inputs!.h, (x, i) => (i >> 5 === 3 ? 1e4 * x : i >> 5 === 7 ? 1e-6 * x : 2 * x)) } : {}) };
  return { inputs, weights };
}

/** Per output of `x [rows, K] @ W.T` summed over `weights`: sum over k of |d q| |x| (|w - m| for q4, |w| for q8) and of |w x|. */
function magnitudes(rows: number[][], weights: { values: ArrayLike<number>; storage: 'q4' | 'q8' }[]): { dq: number[]; wx: number[] } {
  const K = rows[0]!.length;
  const [dq, wx]: number[][] = [[], []];
  const decoded = weights.map(({ values, storage }) => {
    const upload = quantize(values, storage);
    const w = dequantize(upload, values.length, storage);
    const min = (i: number) => (storage === 'q4' ? f16BitsToF32(upload[QUANT_FORMATS.q4.valueWords(values.length) + (i >> 5)]! >>> 16) : 0);
    return { w, min };
  });
  for (const x of rows)
    for (let c = 0; c < weights[0]!.values.length / K; c++) {
      let [a, b] = [0, 0];
      for (const { w, min } of decoded)
        for (let k = 0; k < K; k++) {
          a += Math.abs(w[c * K + k]! - min(c * K + k)) * Math.abs(x[k]!);
          b += Math.abs(w[c * K + k]! * x[k]!);
        }
      dq.push(a);
      wx.push(b);
    }
  return { dq, wx };
}

describe("matvec 'half'", () => {
  // one row, trips written out as on a GPU: q4 with q8 over a norm (x paired as q8 bytes are, q4 nibbles masked
  // apart; the prologue evaluated in the staging), and q8 alone over 41 blocks (a partial trip; a block of 1e4, one
  // of 1e-6). Three rows:
  // q4 alone (x paired as its nibbles) at 1 KiB of workgroup memory, K in chunks of one block. Each kernel is small:
  // lavapipe's compile of this loop grows fast with rows, the more so with a norm (cold, 2 loaded cores: 2 rows of
  // q4 beside q8 over a norm ~25 s, without it ~10 s).
  test.each([
    [1, 16384],
    [3, 1024],
  ] as const)('at batch %d (workgroup memory %d): within 2^-6 of sum |d q x| of the reference', async (batch, storage) => {
    const K = 224;
    const one = batch === 1;
    const r = await runBoth(
      (): Record<string, Tensor> => {
        const x = input('x', [batch, K]);
        if (!one) return { u: linear(x, weight('d', [5, K], 'q4')) };
        const n = rmsnorm(x, weight('g', [K]), 1e-5);
        const y = linear(n, weight('a', [37, K], 'q4')).add(linear(n, weight('b', [37, K], 'q8')));
        const z = linear(input('h', [1, 1312]), weight('c', [5, 1312], 'q8'));
        return { y, z };
      },
      {},
      realistic,
      { limits: { quantMatvec: 'half', shaderF16: true, unroll: one, maxComputeWorkgroupStorageSize: storage } },
    );
    expect(r.program.kernels.flatMap((k) => k.templates)).toEqual(one ? ['matvec', 'matvec'] : ['matvec']);
    const wgsl = r.program.kernels.map((k) => k.wgsl).join('\n');
    expect(wgsl).toContain('enable f16;');
    if (one) expect(wgsl).toMatch(/\(\(qw\d+ >> 4u\) & 0xfu\) \| \(\(qw\d+ << 4u\) & 0xf0000u\)/); // q4 beside q8: nibbles u and u + 2 masked apart
    else expect(wgsl).toMatch(/fma\(bitcast<vec2<f16>>\(\(\(qs\d+ & 0x00f000f0u\) \| 0x64006400u\)\)/); // q4 alone: nibbles u and u + 4, Marlin's
    expect(wgsl.match(/\+\+\) \{\n\s*workgroupBarrier\(\);/g)?.length ?? 0).toBe(one ? 0 : 1);
    // trips written out (one row, as on a GPU): every weight load before the staging
    if (one) for (const k of r.program.kernels) expect(k.wgsl.indexOf('let qv') < k.wgsl.indexOf('mv_h[')).toBe(true);
    // x as the matmuls see it: normalized on the host, or raw
    const host = realistic(r.graph);
    const xs = Array.from(host.inputs!.x! as ArrayLike<number>, Number);
    const gs = one ? Array.from(host.weights!.g! as ArrayLike<number>, Number) : [];
    const rows = Array.from({ length: batch }, (_, i) => {
      const row = xs.slice(i * K, i * K + K);
      if (!one) return row;
      const rms = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / K + 1e-5);
      return row.map((v, k) => v * rms * gs[k]!);
    });
    const w = (name: string, storage: 'q4' | 'q8') => ({ values: host.weights![name]! as ArrayLike<number>, storage });
    const bounds: Record<string, { dq: number[]; wx: number[] }> = one
      ? { y: magnitudes(rows, [w('a', 'q4'), w('b', 'q8')]), z: magnitudes([Array.from(host.inputs!.h! as ArrayLike<number>, Number)], [w('c', 'q8')]) }
      : { u: magnitudes(rows, [w('d', 'q4')]) };
    for (const [name, { dq, wx }] of Object.entries(bounds))
      dq.forEach((m, j) => {
        const [got, want] = [r.gpu.outputs[name]!.data[j]!, r.cpu.outputs[name]!.data[j]!];
        // f32's own rounding (sums of x, the min term, the order): well within 1e-5 of sum |w x|
        expect(Math.abs(got - want), `${name}[${j}]`).toBeLessThanOrEqual(F16_BOUND * m + 1e-5 * wx[j]! + 1e-7);
      });
  });

  test("where the adapter lacks 'shader-f16', the GPU default's K loop", () => {
    const fn = () => ({ y: linear(input('x', [1, 256]), weight('w', [64, 256], 'q4')) });
    const wgsl = (limits: object) => compile(trace(fn), { limits: { unroll: false, ...limits } }).kernels.map((k) => k.wgsl);
    expect(wgsl({ quantMatvec: 'half', shaderF16: false })).toEqual(wgsl({ quantMatvec: 'lanes' }));
    expect(wgsl({ quantMatvec: 'half', shaderF16: true })[0]).toContain('enable f16;');
  });
});
