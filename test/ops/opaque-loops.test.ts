// Opaque bounds of sequential loops (DeviceLimits.opaqueLoops, compiler/lower/opaqueLoops.ts, on by default on
// software adapters): the same values as the CPU reference with and without, and the bound rewritten only when asked.
import { describe, expect, it } from 'vitest';
import { softmax } from '../../dsl/nn/basic.ts';
import { input } from '../../dsl/trace.ts';
import { expectBothClose, randomData } from '../helpers/gpu.ts';

describe.each([false, true])('opaqueLoops %s', (opaqueLoops) => {
  it('softmax over 12 columns, each weighted by the row sum of its square: nested short reductions', async () => {
    const fn = () => {
      const x = input('x', [6, 12]);
      return { y: softmax(x, -1).mul(x.mul(x).sum(-1, true)) };
    };
    // exp and 12-term sums in f32 against the CPU's double
    const r = await expectBothClose(fn, {}, (g) => randomData(g, 3), { atol: 1e-6, rtol: 1e-5 }, { limits: { opaqueLoops } });
    const wgsl = r.program.kernels.map((k) => k.wgsl).join('\n');
    expect(wgsl).toMatch(opaqueLoops ? /k\d+ < 12u \+ seq_zero;/ : /k\d+ < 12u;/);
    expect(wgsl.includes('num_workgroups')).toBe(opaqueLoops);
  });
});
