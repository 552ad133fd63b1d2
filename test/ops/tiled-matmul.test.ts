// Matmuls with enough rows take the tiled kernel (tiles through shared memory, K split in slices): against the CPU reference
// on awkward sizes, with batch dims, transposed and 16-bit operands, and fused prologues and epilogues.
import { expect, test } from 'vitest';
import { input, trace, weight } from '../../dsl/trace.ts';
import { linear } from '../../dsl/nn/basic.ts';
import { type DeviceLimits, compile } from '../../compiler/compile.ts';
import { TILED_VARIANTS, type TiledVariant } from '../../compiler/lower/tiledMatmul.ts';
import { compileLimitsOf } from '../../runtime/compileLimits.ts';
import { expectClose, randomData, runBoth } from '../helpers/gpu.ts';

// f32 accumulation in a different order than the reference; sums of up to 301 products of values in [-1, 1].
const tol = { atol: 2e-4, rtol: 1e-4 };
// On an adapter with subgroup matrices a kernel of 16-bit weights rounds its activations to f16 (2^-11 relative):
// sums of 33 such products stay within 5e-3.
const matrixTol = { atol: 5e-3, rtol: 2e-3 };

// unroll: loads and outputs written out one by one, as on a GPU (a software adapter gets loops). The left operand's
// silu is the tile's prologue where tiles may compute their left operands (DeviceLimits.tiledPlainLeft off), else a
// map kernel of its own that the tile reads (the default).
test.each([
  [32, 20, 17, false, false],
  [70, 301, 129, true, false], // odd K: one k per load
  [128, 64, 64, false, false],
  [70, 301, 129, true, true],
  [32, 20, 17, false, true],
])('tiled matmul %dx%d by %d columns, with a residual epilogue (unroll %s, left operand from a buffer %s)', async (M, K, N, unroll, plainLeft) => {
  const r = await runBoth(
    () => {
      const x = input('x', [M, K]);
      const w = weight('w', [N, K]);
      const h = input('h', [M, N]);
      return { y: h.add(linear(x.silu(), w)) };
    },
    {},
    (g) => randomData(g, M * 1000 + N),
    { limits: { unroll, tiledPlainLeft: plainLeft } },
  );
  expect(r.program.kernels.map((k) => k.name)).toEqual(plainLeft ? ['k0_map_silu', 'k1_tiled_add'] : ['k0_tiled_add']);
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

// An MLP on flattened rows ([1, T, H] -> [T, H] -> back): the residual add after the reshape stays the tiled
// kernel's epilogue (the reshape only adds a leading 1); where the kernel also reads the matmul at other positions
// (a row sum of it, broadcast), the matmul gets its own buffer and the add its own kernel, with the same values.
test.each([
  [false, ['k0_tiled_add']],
  [true, ['k0_tiled_matmul', 'k1_row_add']],
])('a residual add after a reshape of leading 1s is a tiled epilogue (the matmul also read elsewhere: %s)', async (elsewhere, names) => {
  const [T, H, N] = [48, 40, 36];
  const r = await runBoth(
    () => {
      const x = input('x', [1, T, H]);
      const h = input('h', [1, T, N]);
      const y = linear(x.reshape(T, H), weight('w', [N, H]));
      const back = y.reshape(1, T, N);
      return { out: h.add(elsewhere ? back.add(y.sum(-1, true).reshape(1, T, 1)) : back) };
    },
    {},
    (g) => randomData(g, 11),
    { limits: { unroll: true } },
  );
  expect(r.program.kernels.map((k) => k.name)).toEqual(names);
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

test('tiled matmul with batch dims, an f16 weight and a plain (non-transposed) operand', async () => {
  const r = await runBoth(
    () => {
      const a = input('a', [3, 40, 33]);
      const b = input('b', [3, 33, 50]);
      const w = weight('w', [50, 33], 'f16');
      return { y: a.matmul(b), z: linear(a, w) };
    },
    {},
    (g) => randomData(g, 7),
  );
  expect(r.program.kernels.every((k) => k.name.includes('tiled'))).toBe(true);
  expectClose(r.gpu.outputs, r.cpu.outputs, r.program.kernels.some((k) => k.wgsl.includes('subgroup_matrix')) ? matrixTol : tol);
});

test('gate and up projections share one tiled kernel (SwiGLU)', async () => {
  const r = await runBoth(
    () => {
      const x = input('x', [48, 40]);
      return { y: linear(x, weight('g', [72, 40])).silu().mul(linear(x, weight('u', [72, 40]))) };
    },
    {},
    (g) => randomData(g, 3),
  );
  expect(r.program.kernels.map((k) => k.name)).toEqual(['k0_tiled_mul']);
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

test('large grids take 64x64 tiles', async () => {
  const r = await runBoth(() => ({ y: linear(input('x', [4, 256, 40]), weight('w', [1024, 40])) }), {}, (g) => randomData(g, 11));
  const [x, y] = r.program.kernels[0]!.workgroups;
  expect(x * y).toBe(4 * 4 * 16); // 64x64 tiles of the 4 x 256 x 1024 output
  expect(r.program.kernels[0]!.wgsl).toContain('let n0 = ((gi % 16u) * 64u);');
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

// Every variant (DeviceLimits.tiledMatmul, STRATA_TILED on an adapter; the ops bench measures each on a GPU), unrolled as on a GPU: 16-bit weights read a
// packed word per two k, ragged M and N, and a small grid that `fill` and `lean` narrow to 16x16 tiles.
test.each(Object.keys(TILED_VARIANTS) as TiledVariant[])('tiled variant %s: SwiGLU over f16 and bf16 weights', async (variant) => {
  const r = await runBoth(
    () => {
      const x = input('x', [72, 96]);
      return { h: linear(x, weight('g', [80, 96], 'f16')).silu().mul(linear(x, weight('u', [80, 96], 'bf16'))) };
    },
    {},
    (g) => randomData(g, 5),
    { limits: { unroll: true, tiledMatmul: variant } },
  );
  expect(r.program.kernels.map((k) => k.name)).toEqual(['k0_tiled_mul']);
  expect(r.program.kernels[0]!.wgsl).toContain(variant === 'base' ? 'let n0 = ((gi % 3u) * 32u);' : 'let n0 = ((gi % 5u) * 16u);');
  expectClose(r.gpu.outputs, r.cpu.outputs, tol);
});

test('an unknown STRATA_TILED is one line naming the variants', () => {
  process.env.STRATA_TILED = 'fast';
  try {
    expect(() => compileLimitsOf({ limits: {}, features: [] })).toThrow(/^STRATA_TILED must be one of base, fill, lean, got 'fast'$/);
  } finally {
    delete process.env.STRATA_TILED;
  }
});

// The subgroup matrix kernel (DeviceLimits.subgroupMatrix) is chosen by the weights' storage: a kernel whose weights
// are all 16-bit (or quantized) stages f16 operands for the adapter's matrices; an f32 weight keeps f32 products.
// Compiled only: lavapipe has no subgroup matrices, so its numbers are checked on a GPU that has them
// (bench/device/matrix-check.sh: bench tiled's distance from base, and greedy tokens with the kernel on and off).
test('16-bit weights take subgroup matrices where the adapter has them; f32 weights do not', () => {
  const subgroupMatrix = { m: 16, n: 16, k: 16, size: 32 };
  const kernels = (storage: 'f16' | 'bf16' | 'f32', limits: Partial<DeviceLimits>) =>
    compile(trace(() => { const x = input('x', [64, 96]); return { y: linear(x, weight('g', [80, 96], storage)).silu().mul(linear(x, weight('u', [80, 96], storage))) }; }), {
      limits: { unroll: true, maxComputeWorkgroupStorageSize: 49152, ...limits },
    }).kernels;
  const mma = (wgsl: string) => wgsl.match(/subgroupMatrixMultiplyAccumulate/g)?.length;
  // a small grid: 32 x 32 outputs a workgroup of eight subgroups, four slices of K of two subgroups (1 x 2 fragments
  // a matmul each), K steps of 32
  for (const k of [...kernels('f16', { subgroupMatrix }), ...kernels('bf16', { subgroupMatrix })]) {
    expect(k.wgsl).toContain('enable chromium_experimental_subgroup_matrix;');
    expect([k.workgroupSize, k.workgroups[0] * k.workgroups[1], mma(k.wgsl)]).toEqual([256, 2 * 3, 2 * 2 * 2]);
  }
  // a fixed tiling: 32 x 64, one slice of 2 x 4 subgroups (one fragment each), K steps of 64
  for (const k of kernels('f16', { subgroupMatrix, matrixTile: { tm: 32, tn: 64, slices: 1, tk: 64 } })) expect([k.workgroupSize, k.workgroups[0] * k.workgroups[1], mma(k.wgsl)]).toEqual([256, 2 * 2, 2 * 1 * 4]);
  for (const k of [...kernels('f32', { subgroupMatrix }), ...kernels('f16', { subgroupMatrix: false })]) expect(k.wgsl).not.toContain('subgroup_matrix');
});
