// Batched decode rows on the tiled kernel (DeviceLimits.tiledRows: 2-16 rows, every leading coordinate a row, 16-bit
// weights): the rows' norms stay fused as cooperative phases before the K loop, the epilogue runs at each output.
// On lavapipe this is the f32 form (STRATA_TILED_ROWS forces it there); a GPU with subgroup matrices takes the matrix
// form, compiled here and checked on the GPU (bench/device/rows-check.sh).
import { expect, test } from 'vitest';
import { input, trace, weight } from '../../dsl/trace.ts';
import { linear, rmsnorm } from '../../dsl/nn/basic.ts';
import { compile } from '../../compiler/compile.ts';
import { compileLimitsOf } from '../../runtime/compileLimits.ts';
import { expectClose, randomData, runBoth } from '../helpers/gpu.ts';

// f32 products summed in another order than the reference
const tol = { atol: 2e-4, rtol: 1e-4 };

// 8 rows of [8, 1, K] (batch 8, one token): an RMSNorm shared by gate and up (8 row statistics, one reduction round),
// a SwiGLU epilogue; N = 72 is no multiple of a tile, K = 200 no multiple of a step
const swiglu = () => {
  const n = rmsnorm(input('x', [8, 1, 200]), weight('g', [200], 'f16'), 1e-5);
  return { y: linear(n, weight('wg', [72, 200], 'f16')).silu().mul(linear(n, weight('wu', [72, 200], 'bf16'))) };
};

test.each([false, true])('tiled rows: SwiGLU pair behind an RMSNorm, 8 rows (unroll %s)', async (unroll) => {
  const r = await runBoth(swiglu, {}, (g) => randomData(g, 3), { limits: { unroll, tiledRows: 2 } });
  expect(r.program.kernels.map((k) => k.templates.join('+'))).toEqual(['tiled']);
  expect(r.program.kernels[0]!.wgsl).toContain('// reduce 8 phases together');
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

// 3 rows, a residual epilogue, a projection whose result is reshaped to heads (the root a view of the matmul), and
// 17 rows (past TILED_ROWS_MAX) and an f32 weight, which keep the matvec
test('tiled rows: a residual over 3 rows and a reshaped projection; more rows or f32 weights keep the matvec', async () => {
  const r = await runBoth(
    () => {
      const x = input('x', [3, 96]);
      const y = input('h', [3, 40]).add(linear(x, weight('wd', [40, 96], 'f16')));
      const q = linear(rmsnorm(x, weight('g', [96]), 1e-6), weight('wq', [64, 96], 'bf16')).reshape(3, 4, 16);
      const z = linear(input('u', [17, 64]), weight('wz', [48, 64], 'f16'));
      const f = linear(input('v', [4, 64]), weight('wf', [48, 64]));
      return { y, q, z, f };
    },
    {},
    (g) => randomData(g, 9),
    { limits: { unroll: true, tiledRows: 2 } },
  );
  expect(r.program.kernels.flatMap((k) => k.templates).sort()).toEqual(['matvec', 'matvec', 'tiled', 'tiled']);
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

// Block-quantized weights (DeviceLimits.tiledRowsQuantized, on by default where tiledRows is): decoded an element at a time into the
// tiles, the weights' transposes broadcast over [4, 1, K] rows
test('tiled rows over q8 and q4 weights, behind an RMSNorm', async () => {
  const r = await runBoth(
    () => {
      const n = rmsnorm(input('x', [4, 1, 96]), weight('g', [96]), 1e-5);
      return { y: linear(n, weight('wg', [40, 96], 'q4')).silu().mul(linear(n, weight('wu', [40, 96], 'q8'))) };
    },
    {},
    (g) => randomData(g, 13),
    { limits: { unroll: true, tiledRows: 2, tiledRowsQuantized: true } },
  );
  expect(r.program.kernels.map((k) => k.templates.join('+'))).toEqual(['tiled']);
  expect(r.program.kernels[0]!.wgsl).toContain('// reduce 4 phases together');
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

// With subgroup matrices (compiled only: lavapipe has none): 16 x 16 outputs a workgroup, eight slices of K (one
// fragment each), the norm statistics still phases
test('tiled rows with subgroup matrices: one matrix of rows, eight slices of K', () => {
  const kernels = compile(trace(swiglu), { limits: { unroll: true, maxComputeWorkgroupStorageSize: 32768, subgroupMatrix: { m: 16, n: 16, k: 16, size: 32 }, tiledRows: 2 } }).kernels;
  expect(kernels.map((k) => [k.templates.join('+'), k.workgroupSize, k.workgroups[0] * k.workgroups[1]])).toEqual([['tiled', 256, 5]]);
  expect(kernels[0]!.wgsl).toContain('enable chromium_experimental_subgroup_matrix;');
  expect(kernels[0]!.wgsl).toContain('// reduce 8 phases together');
  expect(kernels[0]!.wgsl).toMatch(/tiled matrix: 16x16 outputs, 16x16x16 subgroup matrices \(1x1 a subgroup\), 8 slices of K/);
});

test('STRATA_TILED_ROWS: the GPU default follows subgroup matrices; a bad value is one line', () => {
  const matrix = { limits: {}, features: [], subgroupMatrix: { m: 16, n: 16, k: 16, size: 32 } };
  expect(compileLimitsOf(matrix).tiledRows).toBe(2);
  expect(compileLimitsOf({ limits: {}, features: [] }).tiledRows).toBe(false);
  for (const [env, want] of [['0', false], ['4', 4]] as const) {
    process.env.STRATA_TILED_ROWS = env;
    try {
      expect(compileLimitsOf(matrix).tiledRows).toBe(want);
    } finally {
      delete process.env.STRATA_TILED_ROWS;
    }
  }
  process.env.STRATA_TILED_ROWS = '1';
  try {
    expect(() => compileLimitsOf(matrix)).toThrow(/^STRATA_TILED_ROWS must be 0 \(off\) or a row count from 2 to 16, got '1'$/);
  } finally {
    delete process.env.STRATA_TILED_ROWS;
  }
});
