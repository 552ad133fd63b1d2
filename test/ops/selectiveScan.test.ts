// The fused Mamba-1 prefill scan (the selective_scan op): its CPU reference against its composition (the chunked
// form) and against the plain recurrence over each row's real tokens, and its kernel on WebGPU with the final state
// written in place (one kernel), over one round of tokens (T = 5) and more than one chunk of 16 (T = 20), batch 2
// with a padded row whose final state is its state at its last real token; Mamba's N = 16 and larger states.
import { describe, expect, it } from 'vitest';
import { selectiveScan } from '../../dsl/nn/mamba.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import { input, state, trace, weight } from '../../dsl/trace.ts';
import { expectBothClose, expectClose, rng, runCpuRef, uniform, type RunData } from '../helpers/gpu.ts';

const SLOTS = 3;
/** Rows, tokens, channels, state size, and each row's slot and real tokens. */
interface Dims {
  B: number;
  T: number;
  D: number;
  N: number;
  slotIds: number[];
  valid: number[];
}
// N = 5: lanes past N idle; D = 11 leaves a workgroup's channels past D; row 1 has 3 real tokens of 5
const SHORT: Dims = { B: 2, T: 5, D: 11, N: 5, slotIds: [2, 0], valid: [5, 3] };
// Mamba's N = 16, two rounds of 16 tokens (the second partial), row 0 padded past 13 tokens
const LONG: Dims = { B: 2, T: 20, D: 37, N: 16, slotIds: [1, 2], valid: [13, 20] };
// larger states (lower/selectiveScanWideKernel.ts, Mamba-2's prefill): 3 elements a lane with lanes past N = 40 idle,
// two rounds of 16 tokens and a last workgroup's channels past D = 19; N = 128 (granite's), three rounds of 8
const WIDE: Dims = { B: 2, T: 20, D: 19, N: 40, slotIds: [2, 1], valid: [20, 9] };
const MAMBA2: Dims = { B: 2, T: 20, D: 9, N: 128, slotIds: [0, 2], valid: [6, 20] };

/** A scan over a state of SLOTS slots, gathered and scattered back at the slot ids (as StepContext does). */
const scanFn = ({ B, T, D, N }: Dims, fused: boolean) => (): Record<string, Tensor> => {
  const ids = input('slot_ids', [B], 'i32');
  const ssm = state('ssm', [SLOTS, D, N]);
  const A = weight('alog', [D, N]).exp().neg();
  const r = selectiveScan({ x: input('x', [B, T, D]), dt: input('dt', [B, T, D]), A, Bm: input('b', [B, T, N]), Cm: input('c', [B, T, N]), Dskip: weight('d', [D]), h0: ssm.gather(ids), valid: input('valid', [B], 'i32'), fused });
  ssm.scatter(ids, r.hT);
  return { y: r.y };
};

function data({ B, T, D, N, slotIds, valid }: Dims, seed: number): RunData {
  const random = rng(seed);
  const f = (n: number, lo = -1, hi = 1) => uniform(random, n, lo, hi);
  return {
    // dt as after softplus (positive); padded tokens hold garbage that must not reach the state
    inputs: { x: f(B * T * D), dt: f(B * T * D, 0.01, 1), b: f(B * T * N), c: f(B * T * N), slot_ids: slotIds, valid },
    weights: { alog: f(D * N, -1, 1), d: f(D) },
    states: { ssm: f(SLOTS * D * N) },
  };
}

/** The recurrence over each row's real tokens only: its final state and its real tokens' y. */
function recurrence({ B, T, D, N, slotIds, valid }: Dims, run: RunData) {
  const [x, dt, b, c, ssm] = [run.inputs!.x, run.inputs!.dt, run.inputs!.b, run.inputs!.c, run.states!.ssm] as number[][];
  const [alog, dSkip] = [run.weights!.alog, run.weights!.d] as number[][];
  const h = Array.from({ length: B }, (_, r) => ssm!.slice(slotIds[r]! * D * N, (slotIds[r]! + 1) * D * N));
  const y: number[][] = Array.from({ length: B }, () => []);
  for (let r = 0; r < B; r++)
    for (let t = 0; t < valid[r]!; t++)
      for (let d = 0; d < D; d++) {
        const at = (r * T + t) * D + d;
        let acc = dSkip![d]! * x![at]!;
        for (let n = 0; n < N; n++) {
          const i = d * N + n;
          h[r]![i] = Math.exp(-dt![at]! * Math.exp(alog![i]!)) * h[r]![i]! + dt![at]! * x![at]! * b![(r * T + t) * N + n]!;
          acc += c![(r * T + t) * N + n]! * h[r]![i]!;
        }
        y[r]!.push(acc);
      }
  return { h, y };
}

function near(got: ArrayLike<number>, want: readonly number[], atol: number): void {
  expect(got.length).toBe(want.length);
  Array.from(got).forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(atol));
}

/** f32 (GPU) against f64 (CPU): 20 dependent steps, sums of N terms of magnitude ~1. */
const tol = { atol: 5e-5, rtol: 5e-4 };

describe('selective_scan', () => {
  // the CPU backend keeps f32 results: 1e-6 between its two forms
  it('its CPU reference equals its composition (chunks of 16) and the recurrence over real tokens', () => {
    for (const d of [SHORT, LONG, WIDE]) {
      const run = data(d, 1);
      const fused = runCpuRef(trace(scanFn(d, true)), run);
      const composed = runCpuRef(trace(scanFn(d, false)), run);
      expectClose(fused.outputs, composed.outputs, { atol: 1e-6, rtol: 1e-5 });
      expectClose(fused.states, composed.states, { atol: 1e-6, rtol: 1e-5 });
      const want = recurrence(d, run);
      const { D, N, T } = d;
      for (let r = 0; r < d.B; r++) {
        const slot = d.slotIds[r]!;
        near(fused.states.ssm!.data.slice(slot * D * N, (slot + 1) * D * N), want.h[r]!, 1e-6);
        near(fused.outputs.y!.data.slice(r * T * D, (r * T + d.valid[r]!) * D), want.y[r]!, 1e-6);
      }
    }
  });

  it('on WebGPU: one kernel writes y and the final state in place, as the CPU reference', async () => {
    for (const d of [SHORT, LONG, WIDE, MAMBA2]) {
      const run = data(d, 2);
      const r = await expectBothClose(scanFn(d, true), {}, run, tol);
      expect(r.program.kernels.map((k) => k.templates.join('+'))).toEqual(['selscan']);
      // the padded row's final state is its state at its last real token; the slot no row names is unchanged
      const want = recurrence(d, run);
      const { D, N } = d;
      const padded = d.valid.findIndex((v) => v < d.T);
      const slot = d.slotIds[padded]!;
      near(r.gpu.states.ssm!.data.slice(slot * D * N, (slot + 1) * D * N), want.h[padded]!, 1e-4);
      const free = [...Array(SLOTS).keys()].find((s) => !d.slotIds.includes(s))!;
      expect(Array.from(r.gpu.states.ssm!.data.slice(free * D * N, (free + 1) * D * N))).toEqual((run.states!.ssm as number[]).slice(free * D * N, (free + 1) * D * N));
    }
  });

  it('on WebGPU: the composition and standalone parts (no in-place write) agree too', async () => {
    await expectBothClose(scanFn(SHORT, false), {}, data(SHORT, 3), tol);
    // without fusion every node is its own kernel: both parts of the op and the scatter
    const r = await expectBothClose(scanFn(SHORT, true), {}, data(SHORT, 4), tol, { fuse: false });
    expect(r.program.kernels.filter((k) => k.templates.includes('selscan')).length).toBe(2);
  });
});
