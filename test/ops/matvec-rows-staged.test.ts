// The matvec rows path's staged variants (DeviceLimits.matvecRows, STRATA_MATVEC_ROWS on an adapter: x staged in
// workgroup memory, u32x4 weight loads, column groups of lanes) against the CPU reference.
import { describe, expect, test } from 'vitest';
import { input, weight } from '../../dsl/trace.ts';
import { linear, rmsnorm } from '../../dsl/nn/basic.ts';
import { compileLimitsOf } from '../../runtime/compileLimits.ts';
import { expectClose, randomData, runBoth } from '../helpers/gpu.ts';

// the CPU reference sums in another order
const tol = { atol: 1e-4, rtol: 1e-4 };

// staged-h rounds x to f16 in workgroup memory (relative error 2^-11 per element, amplified by SwiGLU)
const halfTol = { atol: 5e-3, rtol: 5e-3 };

describe.each(['staged', 'staged-wide', 'staged-h'] as const)('matvec rows variant %s', (matvecRows) => {
  // as on a GPU (trips written out, every weight vector loaded ahead of the norm phase and the staging): 8 rows,
  // K = 96 (12 vectors a row over column groups of 16 lanes, the last trip partial), 37 columns of gate and up
  test('SwiGLU pair over f16 weights behind an RMSNorm, 8 rows', async () => {
    const r = await runBoth(
      () => {
        const n = rmsnorm(input('x', [8, 96]), weight('g', [96]), 1e-5);
        return { y: linear(n, weight('wg', [37, 96], 'f16')).silu().mul(linear(n, weight('wu', [37, 96], 'f16'))) };
      },
      {},
      (g) => randomData(g, 5),
      { limits: { unroll: true, matvecAccumulators: 32, matvecRows } },
    );
    const wgsl = r.program.kernels.map((k) => k.wgsl);
    expect(r.program.kernels.map((k) => k.templates.join('+'))).toEqual([`matvec/${matvecRows}`]);
    expect(wgsl[0]).toMatch(/var<storage, read> buf\d+: array<vec4<u32>>/);
    expect(wgsl[0]).toContain('// reduce 8 phases together');
    expectClose(r.gpu.outputs, r.cpu.outputs, matvecRows === 'staged-h' ? halfTol : tol);
  });
});

// a software adapter's loops, no subgroups; 8 KiB of workgroup memory, so x comes in chunks of 296 elements and
// K = 600 leaves a partial last chunk: a bf16 down projection behind an RMSNorm with a residual, 3 rows; an f32 projection, 5 rows
test('matvec rows variant staged: bf16 and f32 weights, x in chunks, a residual', async () => {
  const r = await runBoth(
    () => {
      const h = input('h', [3, 600]);
      const y = input('r', [3, 20]).add(linear(rmsnorm(h, weight('g', [600]), 1e-5), weight('wd', [20, 600], 'bf16')));
      const z = linear(input('u', [5, 64]), weight('wf', [300, 64]));
      return { y, z };
    },
    {},
    (g) => randomData(g, 7),
    { limits: { unroll: false, subgroups: false, maxComputeWorkgroupStorageSize: 8192, matvecRows: 'staged' } },
  );
  const wgsl = r.program.kernels.map((k) => k.wgsl).join('\n');
  expect(r.program.kernels.map((k) => k.templates.join('+'))).toEqual(['matvec/staged', 'matvec/staged']);
  expect(wgsl).toMatch(/array<vec4<f32>>/); // the f32 weight read as vectors
  expect(wgsl).toMatch(/< 3u( \+ seq_zero)?; k\d+\+\+/); // 3 chunks of x (a bound lavapipe cannot fold on software adapters: opaqueLoops)
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

// batch 1 with matvecPreload (STRATA_MATVEC_PRELOAD=1): the weight words of every trip are loaded before the norm phase
test('one row with preloaded weights: f16 behind an RMSNorm, a residual', async () => {
  const r = await runBoth(
    () => {
      const h = input('h', [1, 96]);
      return { y: h.add(linear(rmsnorm(h, weight('g', [96]), 1e-5), weight('w', [96, 96], 'f16'))) };
    },
    {},
    (g) => randomData(g, 9),
    { limits: { unroll: true, matvecPreload: true } },
  );
  const wgsl = r.program.kernels[0]!.wgsl;
  expect(r.program.kernels.map((k) => k.templates.join('+'))).toEqual(['matvec']);
  expect(wgsl.indexOf('unpack2x16float')).toBeLessThan(wgsl.indexOf('// reduce'));
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

test('an unknown STRATA_MATVEC_ROWS is one line naming the variants', () => {
  process.env.STRATA_MATVEC_ROWS = 'fast';
  try {
    expect(() => compileLimitsOf({ limits: {}, features: [] })).toThrow(/^STRATA_MATVEC_ROWS must be one of direct, staged, staged-wide, staged-h, got 'fast'$/);
  } finally {
    delete process.env.STRATA_MATVEC_ROWS;
  }
});
