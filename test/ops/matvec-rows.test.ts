// The matvec's rows path (2-8 batched decode rows over 16/32-bit weights: several columns per thread, the rows'
// norm statistics in one reduction round) against the CPU reference, with a GPU's settings and a software adapter's.
import { describe, expect, test } from 'vitest';
import { input, weight } from '../../dsl/trace.ts';
import { linear, rmsnorm } from '../../dsl/nn/basic.ts';
import { expectClose, randomData, runBoth } from '../helpers/gpu.ts';

// the CPU reference sums in another order
const tol = { atol: 1e-4, rtol: 1e-4 };

// a GPU's default (32 accumulators): 2 columns of gate and up per thread for 8 rows (515 columns: 257 workgroups,
// the last partial); the loops written out trip by trip, K = 96: 48 packed pairs over 32 threads, so the second
// trip's weight words, loaded ahead of the norm phase, are partly clamped (lavapipe compiles this kernel in ~10 s)
test('matvec rows path (a GPU): SwiGLU pair over f16 weights behind an RMSNorm, 8 rows', async () => {
  const r = await runBoth(
    () => {
      const n = rmsnorm(input('x', [8, 96]), weight('g', [96]), 1e-5);
      return { y: linear(n, weight('wg', [515, 96], 'f16')).silu().mul(linear(n, weight('wu', [515, 96], 'f16'))) };
    },
    {},
    (g) => randomData(g, 5),
    { limits: { unroll: true, matvecAccumulators: 32 } },
  );
  expect(r.program.kernels.map((k) => [k.templates.join('+'), k.workgroups[0]])).toEqual([['matvec', 258]]);
  expect(r.program.kernels[0]!.wgsl).toContain('// reduce 8 phases together');
  expect(r.program.kernels[0]!.wgsl).toContain('min((lid + 32u), 47u)');
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

describe('matvec rows path (a software adapter: loops, 16 accumulators)', () => {
  const limits = { unroll: false };
  // 8 rows; K = 200: 100 packed pairs over a workgroup of 32, the last trip partial; 37 columns, no multiple of a
  // workgroup's; the RMSNorm prologue shared by gate and up (8 row statistics reduced together), a SwiGLU epilogue
  test('SwiGLU pair over f16 weights behind an RMSNorm, 8 rows', async () => {
    const r = await runBoth(
      () => {
        const n = rmsnorm(input('x', [8, 200]), weight('g', [200], 'f16'), 1e-5);
        return { y: linear(n, weight('wg', [37, 200], 'f16')).silu().mul(linear(n, weight('wu', [37, 200], 'f16'))) };
      },
      {},
      (g) => randomData(g, 3),
      { limits },
    );
    expect(r.program.kernels.map((k) => k.templates.join('+'))).toEqual(['matvec']);
    expect(r.program.kernels[0]!.wgsl).toContain('// reduce 8 phases together');
    expectClose(r.gpu.outputs, r.cpu.outputs, tol);
  });

  // 3 rows (no power of two), a bf16 down projection with a residual over an odd K (one element a step), and an
  // f32 projection of 5 rows
  test('bf16 projection with a residual over odd K, 3 rows; f32 projection, 5 rows', async () => {
    const r = await runBoth(
      () => {
        const y = input('h', [3, 20]).add(linear(input('x', [3, 301]), weight('wd', [20, 301], 'bf16')));
        const z = linear(input('u', [5, 64]), weight('wf', [300, 64]));
        return { y, z };
      },
      {},
      (g) => randomData(g, 7),
      { limits },
    );
    expect(r.program.kernels.every((k) => k.templates.every((t) => t === 'matvec'))).toBe(true);
    expectClose(r.gpu.outputs, r.cpu.outputs, tol);
  });
});
