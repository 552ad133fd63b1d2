// The fused Mamba-1 decode step (the selective_step op): its CPU reference against its composition and against the
// path the mixer took before (RMSNorms, dt_proj, softplus, selectiveScan's one-token recurrence, the silu gate), and
// its kernel on WebGPU with the state written in place (one kernel), with Jamba's dt/B/C norms and without, for a
// padding row (its state stays as it was), an inactive row (its writes are dropped) and batch 2.
import { describe, expect, it } from 'vitest';
import { rmsnorm } from '../../dsl/nn/basic.ts';
import { type MambaWeights, selectiveScan, selectiveStep } from '../../dsl/nn/mamba.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import { input, state, trace, weight } from '../../dsl/trace.ts';
import { expectBothClose, expectClose, rng, runCpuRef, uniform, type RunData } from '../helpers/gpu.ts';

const SLOTS = 4;
const EPS = 1e-6;
/** Rows, channels, dt rank, state size, Jamba's norms, and each row's slot and valid count. */
interface Dims {
  S: number;
  D: number;
  R: number;
  N: number;
  normed: boolean;
  slotIds: number[];
  valid: number[];
}
// N = 5: lanes past N idle, a workgroup's channels past D; row 2 is padding, row 3 inactive (slot past the last)
const JAMBA: Dims = { S: 4, D: 11, R: 5, N: 5, normed: true, slotIds: [2, 0, 1, SLOTS], valid: [1, 1, 0, 1] };
// batch 2 at Mamba's N = 16, a dt rank over the lanes (two strided trips, the second partial), a padding row
const MAMBA: Dims = { S: 2, D: 37, R: 20, N: 16, normed: false, slotIds: [3, 1], valid: [1, 0] };

function weights({ D, R, N, normed }: Dims): Pick<MambaWeights, 'dtProjWeight' | 'dtProjBias' | 'ALog' | 'D' | 'dtNorm' | 'bNorm' | 'cNorm'> {
  const w = { dtProjWeight: weight('dtw', [D, R]), dtProjBias: weight('dtb', [D]), ALog: weight('alog', [D, N]), D: weight('d', [D]) };
  return normed ? { ...w, dtNorm: weight('dtn', [R]), bNorm: weight('bn', [N]), cNorm: weight('cn', [N]) } : w;
}

const rowInputs = ({ S, D, R, N }: Dims) => ({
  x: input('x', [S, D]),
  z: input('z', [S, D]),
  dtLow: input('dt_low', [S, R]),
  Bm: input('b', [S, N]),
  Cm: input('c', [S, N]),
  valid: input('valid', [S], 'i32'),
});

/** One decode step over a state of SLOTS slots, gathered and scattered back at the slot ids (as StepContext does). */
const stepFn = (d: Dims, fused: boolean) => (): Record<string, Tensor> => {
  const ids = input('slot_ids', [d.S], 'i32');
  const ssm = state('ssm', [SLOTS, d.D, d.N]);
  const r = selectiveStep({ ...rowInputs(d), h0: ssm.gather(ids) }, weights(d), EPS, fused);
  ssm.scatter(ids, r.hT);
  return { y: r.y };
};

function data({ S, D, R, N, normed, slotIds, valid }: Dims, seed: number): RunData {
  const random = rng(seed);
  const f = (n: number, lo = -1, hi = 1) => uniform(random, n, lo, hi);
  return {
    inputs: { x: f(S * D), z: f(S * D, -2, 2), dt_low: f(S * R), b: f(S * N), c: f(S * N), slot_ids: slotIds, valid },
    weights: { dtw: f(D * R, -0.5, 0.5), dtb: f(D, -2, 0.5), alog: f(D * N, -1, 1), d: f(D), ...(normed ? { dtn: f(R, 0.5, 1.5), bn: f(N, 0.5, 1.5), cn: f(N, 0.5, 1.5) } : {}) },
    states: { ssm: f(SLOTS * D * N) },
  };
}

/** f32 (GPU) against f64 (CPU), sums of at most R + N terms of magnitude ~1. */
const tol = { atol: 2e-5, rtol: 2e-4 };

describe('selective_step', () => {
  it('its CPU reference equals its composition', () => {
    for (const d of [JAMBA, MAMBA]) {
      const fused = runCpuRef(trace(stepFn(d, true)), data(d, 1));
      const composed = runCpuRef(trace(stepFn(d, false)), data(d, 1));
      expectClose(fused.outputs, composed.outputs, tol);
      expectClose(fused.states, composed.states, tol);
    }
  });

  it('equals the one-token selectiveScan the mixer used before, norms and gate around it', () => {
    for (const d of [JAMBA, MAMBA]) {
      const { S, D, N } = d;
      const run = data(d, 2);
      const ssm = run.states!.ssm as number[];
      const at = (s: number) => Math.min(d.slotIds[s]!, SLOTS - 1);
      const h0 = d.slotIds.flatMap((_, s) => ssm.slice(at(s) * D * N, (at(s) + 1) * D * N));
      const old = trace(() => {
        const w = weights(d);
        const a = rowInputs(d);
        const norm = (t: Tensor, g: Tensor | undefined) => (g ? rmsnorm(t, g, EPS) : t);
        const dt = norm(a.dtLow, w.dtNorm).matmul(w.dtProjWeight.T).add(w.dtProjBias).softplus();
        const r = selectiveScan({ x: a.x.reshape(S, 1, D), dt: dt.reshape(S, 1, D), A: w.ALog.exp().neg(), Bm: norm(a.Bm, w.bNorm).reshape(S, 1, N), Cm: norm(a.Cm, w.cNorm).reshape(S, 1, N), Dskip: w.D, h0: input('h0', [S, D, N]), valid: a.valid });
        return { y: r.y.reshape(S, D).mul(a.z.silu()), ssm: r.hT };
      });
      const expected = runCpuRef(old, { ...run, inputs: { ...run.inputs, h0 } }).outputs;
      const fused = runCpuRef(trace(stepFn(d, true)), run);
      expectClose(fused.outputs.y!, expected.y!, tol);
      for (let s = 0; s < S; s++) {
        if (d.slotIds[s]! >= SLOTS) continue;
        const got = Array.from(fused.states.ssm!.data.slice(d.slotIds[s]! * D * N, (d.slotIds[s]! + 1) * D * N));
        const want = Array.from(expected.ssm!.data.slice(s * D * N, (s + 1) * D * N));
        got.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-5));
        // a padding row's state is exactly what it was
        if (d.valid[s] === 0) expect(got).toEqual(ssm.slice(d.slotIds[s]! * D * N, (d.slotIds[s]! + 1) * D * N));
      }
    }
  });

  it('on WebGPU: one kernel writes y and the state in place, as the CPU reference', async () => {
    for (const d of [JAMBA, MAMBA]) {
      const run = data(d, 3);
      const r = await expectBothClose(stepFn(d, true), {}, run, tol);
      expect(r.program.kernels.map((k) => k.templates.join('+'))).toEqual(['selstep']);
      // the padding row's slot and the slots no row names keep their values
      const ssm = run.states!.ssm as number[];
      const kept = [...Array(SLOTS).keys()].filter((slot) => !d.slotIds.some((id, s) => id === slot && d.valid[s]! > 0));
      for (const slot of kept) expect(Array.from(r.gpu.states.ssm!.data.slice(slot * d.D * d.N, (slot + 1) * d.D * d.N))).toEqual(ssm.slice(slot * d.D * d.N, (slot + 1) * d.D * d.N));
    }
  });

  it('on WebGPU: unfused (the composition) and standalone parts (no in-place write) agree too', async () => {
    await expectBothClose(stepFn(JAMBA, false), {}, data(JAMBA, 4), tol);
    // without fusion every node is its own kernel: both parts of the op and the scatter
    const r = await expectBothClose(stepFn(JAMBA, true), {}, data(JAMBA, 5), tol, { fuse: false });
    expect(r.program.kernels.filter((k) => k.templates.includes('selstep')).length).toBe(2);
  });
});
