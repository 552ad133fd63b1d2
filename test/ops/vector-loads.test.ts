// The matvec's K loop reading x as vec4s (DeviceLimits.vectorLoads, Emitter.vectorLoads): x's buffer and a 16-bit
// norm weight in its prologue are bound as vectors, read one vec4 (u32x4) per 4 (8) elements where a thread's run
// starts on a multiple of 4, and every other access of them (the norm's statistic, strided by one) goes through a
// vector's component. Against the CPU reference and against the scalar loads, on this adapter. A 16-bit weight's
// K loop steps one packed word (2 elements) a trip: its x stays scalar; q8's (on this adapter) 4, so x is read as
// vec4s but the 16-bit norm weight (8 elements a u32x4) is not.
import { describe, expect, test } from 'vitest';
import { input, weight } from '../../dsl/trace.ts';
import { linear, rmsnorm } from '../../dsl/nn/basic.ts';
import { expectClose, randomData, runBoth } from '../helpers/gpu.ts';

const tol = { atol: 2e-4, rtol: 1e-4 };

describe('vector loads in the matvec', () => {
  test.each([
    ['q4', true, true, true],
    ['q4', false, false, false],
    ['q8', true, true, false],
    ['f16', true, false, false],
  ] as const)('a %s projection of an RMSNorm with an f16 weight (vector loads %s): x as vectors %s, the norm weight %s', async (storage, vectorLoads, vectored, normVectored) => {
    const r = await runBoth(
      () => {
        const x = input('x', [1, 224]);
        const n = rmsnorm(x, weight('g', [224], 'f16'), 1e-5);
        return { y: linear(n, weight('a', [37, 224], storage)) };
      },
      {},
      (g) => randomData(g, 7),
      { limits: { vectorLoads } },
    );
    const wgsl = r.program.kernels.map((k) => k.wgsl).join('\n');
    // x as vec4<f32>; the norm weight as u32x4 (as the q4 weight always is); the statistic's loop through components
    expect(wgsl.includes('array<vec4<f32>>;')).toBe(vectored);
    expect(/let v\d+: vec4<f32> = buf\d+\[/.test(wgsl)).toBe(vectored);
    expect(/let v\d+: vec4<u32> = buf\d+\[/.test(wgsl)).toBe(normVectored);
    expect(/\) >> 2u\]\[\(/.test(wgsl)).toBe(vectored);
    expectClose(r.gpu.outputs, r.cpu.outputs, tol);
  });

  test('x of a length that is no multiple of 4 keeps scalar loads', async () => {
    const r = await runBoth(
      () => ({ y: linear(input('x', [1, 222]).mul(input('s', [1, 222])), weight('a', [19, 222], 'f16')) }),
      {},
      (g) => randomData(g, 3),
      { limits: { vectorLoads: true } },
    );
    const wgsl = r.program.kernels.map((k) => k.wgsl).join('\n');
    expect(wgsl).not.toContain('array<vec4<f32>>');
    expectClose(r.gpu.outputs, r.cpu.outputs, tol);
  });
});
