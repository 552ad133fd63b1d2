// The fused Mamba-2 decode step (the ssd_step op): its CPU reference against its composition and against the
// window-state path the mixer used before the conv ring (causalConv1d + ssdStep), and its kernel on WebGPU, with
// the state writes in place (one kernel), for rows at ring-wrapping positions, a padding row and an inactive one.
import { describe, expect, it } from 'vitest';
import { causalConv1d } from '../../dsl/nn/conv.ts';
import { type Mamba2Config, mamba2ConvScan, ssdStep } from '../../dsl/nn/mamba2.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import { input, state, trace, weight } from '../../dsl/trace.ts';
import { expectBothClose, expectClose, rng, runCpuRef, uniform, type RunData } from '../helpers/gpu.ts';

const [S, SLOTS, K] = [4, 4, 4];
/** Heads, head dim, groups, state size: a small head (N not a multiple of the lanes a row gets), and one split across workgroups in rows with a partial last chunk. */
interface Dims {
  Hh: number;
  P: number;
  G: number;
  N: number;
}
const SMALL: Dims = { Hh: 4, P: 3, G: 2, N: 5 };
const SPLIT: Dims = { Hh: 2, P: 19, G: 1, N: 128 };
/** A head of more rows than a workgroup's threads (N = 2: one lane a row): its rows in two passes, each loading its own state. */
const PASSES: Dims = { Hh: 1, P: 300, G: 1, N: 2 };
const slotIds = [2, 0, 1, SLOTS]; // the last row is inactive: its writes are dropped
const positions = [0, 5, 7, 3]; // 0: nothing before; 5, 7: the ring has wrapped
const valid = [1, 1, 0, 1]; // row 2 is padding: its state stays

const config = ({ Hh, P, G, N }: Dims, fusedStep: boolean, timeStepLimit?: [number, number]): Mamba2Config => ({ numHeads: Hh, headDim: P, nGroups: G, stateSize: N, eps: 1e-5, normGroups: 1, fusedStep, ...(timeStepLimit ? { timeStepLimit } : {}) });

function weights({ Hh, P, G, N }: Dims) {
  const C = Hh * P + 2 * G * N;
  return { convWeight: weight('cw', [C, 1, K]), convBias: weight('cb', [C]), dtBias: weight('dtb', [Hh]), ALog: weight('alog', [Hh]), D: weight('d', [Hh]) };
}

/** One decode step over states of SLOTS slots, gathered and scattered back at the slot ids (as StepContext does). */
const stepFn = (d: Dims, cfg: Mamba2Config) => (): Record<string, Tensor> => {
  const { Hh, P, G, N } = d;
  const C = Hh * P + 2 * G * N;
  const ids = input('slot_ids', [S], 'i32');
  const ring = state('conv', [SLOTS, C, K]);
  const ssm = state('ssm', [SLOTS, Hh, P, N]);
  const r = mamba2ConvScan(input('xbc', [S, 1, C]), input('dt', [S, 1, Hh]), weights(d), { conv: ring.gather(ids), ssm: ssm.gather(ids), start: input('pos', [S], 'i32') }, input('valid', [S], 'i32'), cfg);
  ring.scatter(ids, r.state.conv);
  ssm.scatter(ids, r.state.ssm);
  return { y: r.y };
};

function data({ Hh, P, G, N }: Dims, seed: number): RunData {
  const C = Hh * P + 2 * G * N;
  const random = rng(seed);
  const f = (n: number, lo = -1, hi = 1) => uniform(random, n, lo, hi);
  // positions before 0 read zeros in a fresh ring: the slots they map to are zero for the row at position 0
  const conv = f(SLOTS * C * K);
  for (let c = 0; c < C; c++) for (let k = 0; k < K; k++) conv[(slotIds[0]! * C + c) * K + k] = 0;
  return {
    inputs: { xbc: f(S * C), dt: f(S * Hh, -2, 1), slot_ids: slotIds, pos: positions, valid },
    weights: { cw: f(C * K), cb: f(C), dtb: f(Hh), alog: f(Hh, -1, 0.5), d: f(Hh) },
    states: { conv, ssm: f(SLOTS * Hh * P * N) },
  };
}

const tol = { atol: 2e-5, rtol: 2e-4 };

describe('ssd_step', () => {
  it('its CPU reference equals its composition', () => {
    for (const limit of [undefined, [0.2, 0.9] as [number, number]]) {
      const d = data(SMALL, 1);
      const fused = runCpuRef(trace(stepFn(SMALL, config(SMALL, true, limit))), d);
      const composed = runCpuRef(trace(stepFn(SMALL, config(SMALL, false, limit))), d);
      expectClose(fused.outputs, composed.outputs, tol);
      expectClose(fused.states, composed.states, tol);
    }
  });

  it('over the ring equals causalConv1d + ssdStep over the window it stands for', () => {
    const { Hh, P, G, N } = SMALL;
    const [I, C] = [Hh * P, Hh * P + 2 * G * N];
    const d = data(SMALL, 2);
    const ring = Array.from(d.states!.conv as number[]);
    const ssm = d.states!.ssm as number[];
    // the window of a row at position p: positions p-K+1 .. p-1, ring slot (q mod K)
    const window = new Array<number>(S * C * (K - 1)).fill(0);
    const at = (s: number) => Math.min(slotIds[s]!, SLOTS - 1);
    for (let s = 0; s < S; s++)
      for (let c = 0; c < C; c++)
        for (let j = 0; j < K - 1; j++) window[(s * C + c) * (K - 1) + j] = ring[(at(s) * C + c) * K + (((positions[s]! - K + 1 + j) % K) + K) % K]!;
    const rows = (a: number[], width: number) => slotIds.flatMap((_, s) => a.slice(at(s) * width, (at(s) + 1) * width));
    const old = trace(() => {
      const w = weights(SMALL);
      const conv = causalConv1d(input('xbc', [S, 1, C]), input('window', [S, C, K - 1]), w.convWeight, w.convBias, input('valid', [S], 'i32'));
      const [x, Bm, Cm] = conv.y.silu().split(-1, [I, G * N, G * N]) as [Tensor, Tensor, Tensor];
      const r = ssdStep({ x: x.reshape(S, 1, Hh, P), dt: input('dt', [S, 1, Hh]).add(w.dtBias).softplus(), A: w.ALog.exp().neg(), Bm: Bm.reshape(S, 1, G, N), Cm: Cm.reshape(S, 1, G, N), D: w.D, h0: input('h0', [S, Hh, P, N]), valid: input('valid', [S], 'i32') });
      return { y: r.y.reshape(S, 1, I), ssm: r.hT };
    });
    const expected = runCpuRef(old, { ...d, inputs: { ...d.inputs, window, h0: rows(ssm, Hh * P * N) } }).outputs;
    const fused = runCpuRef(trace(stepFn(SMALL, config(SMALL, true))), d);
    expectClose(fused.outputs.y!, expected.y!, tol);
    const newSsm = fused.states.ssm!.data;
    for (const s of [0, 1, 3]) {
      if (slotIds[s]! >= SLOTS) continue;
      const got = Array.from(newSsm.slice(slotIds[s]! * Hh * P * N, (slotIds[s]! + 1) * Hh * P * N));
      const want = Array.from(expected.ssm!.data.slice(s * Hh * P * N, (s + 1) * Hh * P * N));
      got.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-5));
    }
    // the ring: slot pos % K of each real active row holds its input, every other slot is unchanged
    const newRing = fused.states.conv!.data;
    for (let r = 0; r < SLOTS; r++)
      for (let c = 0; c < C; c++)
        for (let k = 0; k < K; k++) {
          const s = slotIds.indexOf(r);
          const written = s >= 0 && valid[s]! > 0 && k === positions[s]! % K;
          expect(newRing[(r * C + c) * K + k]).toBeCloseTo(written ? (d.inputs!.xbc as number[])[s * C + c]! : ring[(r * C + c) * K + k]!, 6);
        }
  });

  it('on WebGPU: one kernel writes y and both states in place, as the CPU reference', async () => {
    for (const d of [SMALL, SPLIT, PASSES]) {
      const r = await expectBothClose(stepFn(d, config(d, true, [0.2, 0.9])), {}, data(d, 3), tol);
      // the step (and the copy of y into the output where the reshape of the op's [S,Hh,P] is not free); no part or
      // scatter kernels
      expect(r.program.kernels.map((k) => k.templates.join('+'))).toEqual(d === PASSES ? ['ssdstep'] : ['ssdstep', 'map']);
    }
  });

  it('on WebGPU: unfused (the composition) and standalone parts (no in-place writes) agree too', async () => {
    await expectBothClose(stepFn(SMALL, config(SMALL, false)), {}, data(SMALL, 4), tol);
    // without fusion every node is its own kernel: the three parts of the op and the scatters
    const r = await expectBothClose(stepFn(SMALL, config(SMALL, true)), {}, data(SMALL, 5), tol, { fuse: false });
    expect(r.program.kernels.filter((k) => k.templates.includes('ssdstep')).length).toBe(3);
  });
});
