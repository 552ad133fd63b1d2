// The GPU default of the quantized matvec ('auto', compiler/quantized.ts autoQuantMatvec): the 'wide' K loop (a u32x4
// of every column a trip, named qv) for one row with K >= WIDE_MIN_K, 'lanes' (one packed word, no qv) otherwise.
// Compile only: the loops themselves run against the CPU reference in test/ops/quantized.test.ts.
import { expect, test } from 'vitest';
import { compile } from '../../compiler/compile.ts';
import { WIDE_MIN_K, autoQuantMatvec } from '../../compiler/quantized.ts';
import { input, trace, weight } from '../../dsl/trace.ts';

const wgslOf = (K: number, storage: 'q8' | 'q4', quantMatvec: 'auto' | 'lanes', rows = 1) =>
  compile(trace(() => ({ y: input('x', [rows, K]).matmul(weight('w', [8, K], storage).T) })), { limits: { subgroups: true, maxStorageBuffersPerShaderStage: 16, quantMatvec } }).kernels.map((k) => k.wgsl).join('\n');

test.each([
  [WIDE_MIN_K, 'q8', 1, true],
  [WIDE_MIN_K / 2, 'q8', 1, false],
  [WIDE_MIN_K, 'q4', 1, true],
  [WIDE_MIN_K / 2, 'q4', 1, false],
  [WIDE_MIN_K, 'q8', 8, false],
] as const)("'auto' at K = %d over %s weights, %d rows, reads whole u32x4s: %s", (K, storage, rows, wide) => {
  const auto = wgslOf(K, storage, 'auto', rows);
  expect(auto.includes('let qv')).toBe(wide);
  // where it is not wide, it is exactly lanes
  if (!wide) expect(auto).toBe(wgslOf(K, storage, 'lanes', rows));
});

test('autoQuantMatvec passes every named variant through', () => {
  expect(autoQuantMatvec('staged', 8192, 1)).toBe('staged');
  expect(autoQuantMatvec('lanes', 8192, 1)).toBe('lanes');
  expect(autoQuantMatvec('auto', 8192, 1)).toBe('wide');
  expect(autoQuantMatvec('auto', 8192, 2)).toBe('lanes');
});
