// SSM / linear-attention mixers and MoE (dsl/nn/{conv,mamba,mamba2,deltaRule,moe}.ts) against naive Float64
// loop references written from the math in docs/hybrid-architectures.md, on the CPU backend; then each once on
// WebGPU against the CPU. Padding (valid < T) must leave states as if only the real tokens had been fed.
import { describe, expect, it } from 'vitest';
import { Tensor } from '../../dsl/tensor.ts';
import { type Dims, input, trace } from '../../dsl/trace.ts';
import type { NDArray } from '../../runtime/ndarray.ts';
import { causalConv1d } from '../../dsl/nn/conv.ts';
import { type MambaWeights, mambaMixer, selectiveScan } from '../../dsl/nn/mamba.ts';
import { type Mamba2Config, type SsdArgs, gatedRmsNorm, mamba2Mixer, ssdChunked, ssdScan, ssdSelective, ssdSequential, ssdStep } from '../../dsl/nn/mamba2.ts';
import { type DeltaRuleArgs, gatedDeltaRule, gatedDeltaRuleChunked } from '../../dsl/nn/deltaRule.ts';
import { type RoutingMode, moe, route, topkProbabilityColumns } from '../../dsl/nn/moe.ts';
import { compile } from '../../compiler/compile.ts';
import { type RunData, expectBothClose, rng, runCpuRef, uniform } from '../helpers/gpu.ts';

// ---------------------------------------------------------------- harness

type Arrays = Record<string, number[]>;

/** Declares every entry of `spec` as an f32 input (i32 for names in `ints`) and traces `fn` over them. */
function traceWith(spec: Record<string, number[]>, fn: (t: Record<string, Tensor>) => Record<string, Tensor>, ints: string[] = ['valid'], dims: Dims = {}) {
  return trace(() => {
    const t: Record<string, Tensor> = {};
    for (const [name, shape] of Object.entries(spec)) t[name] = input(name, shape, ints.includes(name) ? 'i32' : 'f32');
    return fn(t);
  }, dims);
}

function cpu(spec: Record<string, number[]>, data: Arrays, fn: (t: Record<string, Tensor>) => Record<string, Tensor>): Record<string, NDArray> {
  return runCpuRef(traceWith(spec, fn), { inputs: data }).outputs;
}

/** Fails with the worst element when |a - e| > atol + rtol |e| anywhere (optionally only where `keep(i)`). */
function expectNear(actual: NDArray, expected: ArrayLike<number>, tol: { atol?: number; rtol?: number } = {}, keep?: (i: number) => boolean): void {
  const { atol = 2e-5, rtol = 2e-4 } = tol;
  expect(actual.data.length).toBe(expected.length);
  let worst = -1;
  let worstErr = 0;
  for (let i = 0; i < expected.length; i++) {
    if (keep && !keep(i)) continue;
    const err = Math.abs(actual.data[i]! - expected[i]!) - (atol + rtol * Math.abs(expected[i]!));
    if (!(err <= 0) && (worst < 0 || !(err <= worstErr))) [worst, worstErr] = [i, err];
  }
  if (worst >= 0) expect.fail(`element ${worst} of (${actual.shape.join(',')}): got ${actual.data[worst]}, want ${expected[worst]} (atol ${atol}, rtol ${rtol})`);
}

/** Keep only rows of real tokens: element i of a [B,T,...] array with `inner` trailing elements. */
const realTokens = (T: number, inner: number, valid: number[]) => (i: number) => Math.floor(i / inner) % T < valid[Math.floor(i / (inner * T))]!;

/** Row-major offset of a multi-index. */
function at(shape: number[], ...idx: number[]): number {
  let off = 0;
  for (let d = 0; d < shape.length; d++) off = off * shape[d]! + idx[d]!;
  return off;
}

const softplus = (x: number) => (x > 20 ? x : Math.log1p(Math.exp(x)));
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const silu = (x: number) => x * sigmoid(x);

/** W [O, I] (HF Linear) times x[off..off+I) -> [O]. */
function matvec(w: ArrayLike<number>, O: number, I: number, x: ArrayLike<number>, off = 0, bias?: ArrayLike<number>): number[] {
  const out = new Array<number>(O).fill(0);
  for (let o = 0; o < O; o++) {
    let acc = bias ? bias[o]! : 0;
    for (let i = 0; i < I; i++) acc += w[o * I + i]! * x[off + i]!;
    out[o] = acc;
  }
  return out;
}

function rmsnormRef(x: number[], w: ArrayLike<number> | undefined, eps: number): number[] {
  const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
  const r = 1 / Math.sqrt(ms + eps);
  return x.map((v, i) => v * r * (w ? w[i]! : 1));
}

/** A rolling conv window per channel, fed one token at a time (the HF decode formula of §1.3). */
class ConvRef {
  readonly window: number[][]; // [C][K-1], oldest first
  constructor(state: ArrayLike<number>, readonly C: number, readonly K: number, b: number) {
    this.window = Array.from({ length: C }, (_, c) => Array.from({ length: K - 1 }, (_, j) => state[(b * C + c) * (K - 1) + j]!));
  }
  step(u: ArrayLike<number>, w: ArrayLike<number>, bias?: ArrayLike<number>, off = 0): number[] {
    const out: number[] = [];
    for (let c = 0; c < this.C; c++) {
      const full = [...this.window[c]!, u[off + c]!];
      let acc = bias ? bias[c]! : 0;
      for (let k = 0; k < this.K; k++) acc += w[c * this.K + k]! * full[k]!;
      out.push(acc);
      this.window[c] = full.slice(1);
    }
    return out;
  }
}

const R = rng(20240611);
const rand = (n: number, lo = -1, hi = 1) => uniform(R, n, lo, hi);

// ---------------------------------------------------------------- causal conv1d

describe('causalConv1d', () => {
  const [B, T, C, K] = [3, 6, 5, 4];
  const spec = { x: [B, T, C], state: [B, C, K - 1], weight: [C, K], bias: [C], valid: [B] };
  const run = (data: Arrays) => cpu(spec, data, (t) => {
    const r = causalConv1d(t.x!, t.state!, t.weight!, t.bias, t.valid!);
    return { y: r.y, state: r.newState };
  });

  function reference(d: Arrays): { y: number[]; state: number[] } {
    const y = new Array<number>(B * T * C).fill(NaN);
    const state: number[] = [];
    for (let b = 0; b < B; b++) {
      const conv = new ConvRef(d.state!, C, K, b);
      for (let t = 0; t < d.valid![b]!; t++) conv.step(d.x!, d.weight!, d.bias, at(spec.x, b, t, 0)).forEach((v, c) => (y[at(spec.x, b, t, c)] = v));
      for (let c = 0; c < C; c++) state.push(...conv.window[c]!);
    }
    return { y, state };
  }

  it('matches a rolling-window reference, padding included (valid = T, < T, 0)', () => {
    const data = { x: rand(B * T * C), state: rand(B * C * (K - 1)), weight: rand(C * K), bias: rand(C), valid: [T, 2, 0] };
    const out = run(data);
    const ref = reference(data);
    expectNear(out.y!, ref.y, {}, realTokens(T, C, data.valid));
    expectNear(out.state!, ref.state);
  });

  it('accepts HF conv1d weights [C, 1, K] and works without a bias at T = 1', () => {
    const one = { x: [2, 1, C], state: [2, C, K - 1], weight: [C, 1, K], valid: [2] };
    const data = { x: rand(2 * C), state: rand(2 * C * (K - 1)), weight: rand(C * K), valid: [1, 0] };
    const out = cpu(one, data, (t) => {
      const r = causalConv1d(t.x!, t.state!, t.weight!, undefined, t.valid!);
      return { y: r.y, state: r.newState };
    });
    for (let b = 0; b < 2; b++) {
      const conv = new ConvRef(data.state, C, K, b);
      const y = conv.step(data.x, data.weight, undefined, b * C);
      if (b === 0) expectNear({ ...out.y!, data: out.y!.data.slice(0, C) }, y);
      const st = b === 0 ? conv.window.flat() : data.state.slice(C * (K - 1)); // valid 0: unchanged
      expectNear({ ...out.state!, data: out.state!.data.slice(b * C * (K - 1), (b + 1) * C * (K - 1)) }, st);
    }
  });
});

// ---------------------------------------------------------------- Mamba-1

/** h_t = exp(dt A) h + dt B x;  y = C.h + D x, fed only each sequence's real tokens. */
function selectiveScanRef(d: Arrays, B: number, T: number, D: number, N: number) {
  const y = new Array<number>(B * T * D).fill(NaN);
  const h = Float64Array.from(d.h0!);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < d.valid![b]!; t++)
      for (let i = 0; i < D; i++) {
        const dt = d.dt![at([B, T, D], b, t, i)]!;
        const x = d.x![at([B, T, D], b, t, i)]!;
        let acc = d.Dskip![i]! * x;
        for (let n = 0; n < N; n++) {
          const hi = at([B, D, N], b, i, n);
          h[hi] = Math.exp(dt * d.A![i * N + n]!) * h[hi]! + dt * d.Bm![at([B, T, N], b, t, n)]! * x;
          acc += d.Cm![at([B, T, N], b, t, n)]! * h[hi]!;
        }
        y[at([B, T, D], b, t, i)] = acc;
      }
  return { y, h: [...h] };
}

function scanData(B: number, T: number, D: number, N: number, valid: number[]): Arrays {
  return {
    x: rand(B * T * D),
    dt: rand(B * T * D, 0.01, 0.6),
    A: rand(D * N, -3, -0.2),
    Bm: rand(B * T * N),
    Cm: rand(B * T * N),
    Dskip: rand(D),
    h0: rand(B * D * N),
    valid,
  };
}

describe('selectiveScan (Mamba-1)', () => {
  const scanSpec = (B: number, T: number, D: number, N: number) => ({ x: [B, T, D], dt: [B, T, D], A: [D, N], Bm: [B, T, N], Cm: [B, T, N], Dskip: [D], h0: [B, D, N], valid: [B] });
  // a chunk size asks for the composition (chunked); without one, T > 1 is the fused selective_scan op
  const scan = (chunkSize?: number) => (t: Record<string, Tensor>) => {
    const r = selectiveScan({ x: t.x!, dt: t.dt!, A: t.A!, Bm: t.Bm!, Cm: t.Cm!, Dskip: t.Dskip!, h0: t.h0!, valid: t.valid!, chunkSize, fused: chunkSize === undefined });
    return { y: r.y, h: r.hT };
  };

  for (const chunkSize of [undefined, 1, 4, 16])
    it(`matches the recurrence over 9 tokens ${chunkSize ? `in chunks of ${chunkSize}` : 'fused'}, padded rows leaving the state alone`, () => {
      const [B, T, D, N] = [3, 9, 5, 4];
      const data = scanData(B, T, D, N, [9, 5, 0]);
      const out = cpu(scanSpec(B, T, D, N), data, scan(chunkSize));
      const ref = selectiveScanRef(data, B, T, D, N);
      expectNear(out.y!, ref.y, {}, realTokens(T, D, data.valid!));
      expectNear(out.h!, ref.h);
    });

  it('takes the single-step form at T = 1', () => {
    const [B, T, D, N] = [2, 1, 6, 3];
    const data = scanData(B, T, D, N, [1, 0]);
    const out = cpu(scanSpec(B, T, D, N), data, scan());
    const ref = selectiveScanRef(data, B, T, D, N);
    expectNear(out.y!, ref.y, {}, realTokens(T, D, data.valid!));
    expectNear(out.h!, ref.h);
  });

  it('prefill of T tokens then one step equals a prefill of T + 1', () => {
    const [B, T, D, N] = [2, 6, 4, 3];
    const data = scanData(B, T + 1, D, N, [T + 1, T + 1]);
    const whole = cpu(scanSpec(B, T + 1, D, N), data, scan(4));
    const sliceT = (a: number[], inner: number, from: number, to: number) => Array.from({ length: B }, (_, b) => a.slice((b * (T + 1) + from) * inner, (b * (T + 1) + to) * inner)).flat();
    const part = (from: number, to: number, h0: ArrayLike<number>) => ({
      ...data,
      x: sliceT(data.x!, D, from, to),
      dt: sliceT(data.dt!, D, from, to),
      Bm: sliceT(data.Bm!, N, from, to),
      Cm: sliceT(data.Cm!, N, from, to),
      h0: Array.from(h0),
      valid: [to - from, to - from],
    });
    const first = cpu(scanSpec(B, T, D, N), part(0, T, data.h0!), scan(4));
    const step = cpu(scanSpec(B, 1, D, N), part(T, T + 1, first.h!.data), scan());
    expectNear(step.h!, [...whole.h!.data], { atol: 1e-6, rtol: 1e-5 });
    expectNear(step.y!, sliceT([...whole.y!.data], D, T, T + 1), { atol: 1e-6, rtol: 1e-5 });
  });
});

interface MambaDims {
  B: number;
  T: number;
  H: number;
  I: number;
  N: number;
  K: number;
  Rk: number;
}

function mambaSpec({ B, T, H, I, N, K, Rk }: MambaDims) {
  return {
    hidden: [B, T, H], conv: [B, I, K - 1], ssm: [B, I, N], valid: [B],
    inProj: [2 * I, H], convWeight: [I, 1, K], convBias: [I], xProj: [Rk + 2 * N, I], dtProjWeight: [I, Rk], dtProjBias: [I],
    ALog: [I, N], D: [I], outProj: [H, I], dtNorm: [Rk], bNorm: [N], cNorm: [N],
  };
}

function mambaData(d: MambaDims, valid: number[]): Arrays {
  const spec = mambaSpec(d);
  const data: Arrays = {};
  for (const [name, shape] of Object.entries(spec)) data[name] = rand(shape.reduce((a, b) => a * b, 1), -0.5, 0.5);
  data.ALog = rand(d.I * d.N, -1, 1.2);
  data.dtNorm = rand(d.Rk, 0.5, 1.5);
  data.valid = valid;
  return data;
}

/** Mamba-1 / Jamba mixer (§2.2, §5.4), token by token. */
function mambaMixerRef(w: Arrays, { B, T, H, I, N, K, Rk }: MambaDims, eps: number) {
  const out = new Array<number>(B * T * H).fill(NaN);
  const ssm = Float64Array.from(w.ssm!);
  const conv: number[] = [];
  for (let b = 0; b < B; b++) {
    const cr = new ConvRef(w.conv!, I, K, b);
    for (let t = 0; t < w.valid![b]!; t++) {
      const xz = matvec(w.inProj!, 2 * I, H, w.hidden!, at([B, T, H], b, t, 0));
      const v = cr.step(xz, w.convWeight!, w.convBias).map(silu);
      const p = matvec(w.xProj!, Rk + 2 * N, I, v);
      const dtLow = rmsnormRef(p.slice(0, Rk), w.dtNorm, eps);
      const Bt = rmsnormRef(p.slice(Rk, Rk + N), w.bNorm, eps);
      const Ct = rmsnormRef(p.slice(Rk + N), w.cNorm, eps);
      const dt = matvec(w.dtProjWeight!, I, Rk, dtLow, 0, w.dtProjBias).map(softplus);
      const gated: number[] = [];
      for (let i = 0; i < I; i++) {
        let y = w.D![i]! * v[i]!;
        for (let n = 0; n < N; n++) {
          const hi = at([B, I, N], b, i, n);
          ssm[hi] = Math.exp(-dt[i]! * Math.exp(w.ALog![i * N + n]!)) * ssm[hi]! + dt[i]! * Bt[n]! * v[i]!;
          y += Ct[n]! * ssm[hi]!;
        }
        gated.push(y * silu(xz[I + i]!));
      }
      matvec(w.outProj!, H, I, gated).forEach((o, h) => (out[at([B, T, H], b, t, h)] = o));
    }
    conv.push(...cr.window.flat());
  }
  return { out, conv, ssm: [...ssm] };
}

function mambaMixerFn(chunkSize?: number) {
  return (t: Record<string, Tensor>) => {
    const weights: MambaWeights = {
      inProj: t.inProj!, convWeight: t.convWeight!, convBias: t.convBias, xProj: t.xProj!, dtProjWeight: t.dtProjWeight!, dtProjBias: t.dtProjBias!,
      ALog: t.ALog!, D: t.D!, outProj: t.outProj!, dtNorm: t.dtNorm, bNorm: t.bNorm, cNorm: t.cNorm,
    };
    const r = mambaMixer(t.hidden!, weights, { conv: t.conv!, ssm: t.ssm! }, t.valid!, { rmsNormEps: 1e-6, chunkSize });
    return { out: r.out, conv: r.state.conv, ssm: r.state.ssm };
  };
}

describe('mambaMixer (Jamba flavour: dt/B/C RMSNorms)', () => {
  const dims: MambaDims = { B: 2, T: 7, H: 6, I: 8, N: 4, K: 4, Rk: 2 };

  it('matches a token-by-token reference, with a padded sequence', () => {
    const data = mambaData(dims, [7, 4]);
    const out = cpu(mambaSpec(dims), data, mambaMixerFn(3));
    const ref = mambaMixerRef(data, dims, 1e-6);
    expectNear(out.out!, ref.out, {}, realTokens(dims.T, dims.H, data.valid!));
    expectNear(out.conv!, ref.conv);
    expectNear(out.ssm!, ref.ssm);
  });

  it('prefill of T tokens then a decode step equals a prefill of T + 1', () => {
    const d1 = { ...dims, T: dims.T + 1 };
    const data = mambaData(d1, [d1.T, d1.T]);
    const whole = cpu(mambaSpec(d1), data, mambaMixerFn(3));
    const hiddenAt = (from: number, to: number) => Array.from({ length: dims.B }, (_, b) => data.hidden!.slice((b * d1.T + from) * dims.H, (b * d1.T + to) * dims.H)).flat();
    const first = cpu(mambaSpec(dims), { ...data, hidden: hiddenAt(0, dims.T), valid: [dims.T, dims.T] }, mambaMixerFn(3));
    const step = cpu(mambaSpec({ ...dims, T: 1 }), { ...data, hidden: hiddenAt(dims.T, d1.T), conv: [...first.conv!.data], ssm: [...first.ssm!.data], valid: [1, 1] }, mambaMixerFn());
    expectNear(step.ssm!, [...whole.ssm!.data], { atol: 1e-6, rtol: 1e-5 });
    expectNear(step.conv!, [...whole.conv!.data], { atol: 0, rtol: 0 });
    const lastRow = Array.from({ length: dims.B }, (_, b) => [...whole.out!.data.slice((b * d1.T + dims.T) * dims.H, (b * d1.T + d1.T) * dims.H)]).flat();
    expectNear(step.out!, lastRow, { atol: 1e-6, rtol: 1e-5 });
  });
});

// ---------------------------------------------------------------- Mamba-2 / SSD

/** §3.5 recurrence per head, head h reading group h // (Hh/G), fed only the real tokens. */
function ssdRef(d: Arrays, [B, T, Hh, P, G, N]: number[]) {
  const y = new Array<number>(B * T * Hh * P).fill(NaN);
  const h = Float64Array.from(d.h0!);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < d.valid![b]!; t++)
      for (let hd = 0; hd < Hh; hd++) {
        const g = Math.floor(hd / (Hh / G));
        const dt = d.dt![at([B, T, Hh], b, t, hd)]!;
        const decay = Math.exp(dt * d.A![hd]!);
        for (let p = 0; p < P; p++) {
          const x = d.x![at([B, T, Hh, P], b, t, hd, p)]!;
          let acc = d.D![hd]! * x;
          for (let n = 0; n < N; n++) {
            const hi = at([B, Hh, P, N], b, hd, p, n);
            h[hi] = decay * h[hi]! + dt * x * d.Bm![at([B, T, G, N], b, t, g, n)]!;
            acc += d.Cm![at([B, T, G, N], b, t, g, n)]! * h[hi]!;
          }
          y[at([B, T, Hh, P], b, t, hd, p)] = acc;
        }
      }
  return { y, h: [...h] };
}

function ssdData([B, T, Hh, P, G, N]: number[], valid: number[]): Arrays {
  return {
    x: rand(B * T * Hh * P),
    dt: rand(B * T * Hh, 0.01, 0.8),
    A: rand(Hh, -4, -0.3),
    Bm: rand(B * T * G * N),
    Cm: rand(B * T * G * N),
    D: rand(Hh),
    h0: rand(B * Hh * P * N),
    valid,
  };
}

const ssdSpec = ([B, T, Hh, P, G, N]: number[]) => ({ x: [B, T, Hh, P], dt: [B, T, Hh], A: [Hh], Bm: [B, T, G, N], Cm: [B, T, G, N], D: [Hh], h0: [B, Hh, P, N], valid: [B] });
const ssdArgs = (t: Record<string, Tensor>, chunkSize?: number): SsdArgs => ({ x: t.x!, dt: t.dt!, A: t.A!, Bm: t.Bm!, Cm: t.Cm!, D: t.D!, h0: t.h0!, valid: t.valid!, chunkSize });

describe('SSD (Mamba-2 scan)', () => {
  const dims = [3, 10, 4, 3, 2, 5]; // B, T, Hh, P, G, N: two heads per group
  const valid = [10, 6, 0];

  for (const chunkSize of [1, 3, 5, 16])
    it(`chunked form (Q=${chunkSize}) matches the recurrence, padded rows leaving the state alone`, () => {
      const data = ssdData(dims, valid);
      const out = cpu(ssdSpec(dims), data, (t) => {
        const r = ssdChunked(ssdArgs(t, chunkSize));
        return { y: r.y, h: r.hT };
      });
      const ref = ssdRef(data, dims);
      expectNear(out.y!, ref.y, {}, realTokens(dims[1]!, dims[2]! * dims[3]!, valid));
      expectNear(out.h!, ref.h);
    });

  it('as the selective_scan op per group (ssdSelective, the prefill kernel) matches the recurrence, padded rows leaving the state alone', () => {
    const data = ssdData(dims, valid);
    const out = cpu(ssdSpec(dims), data, (t) => {
      const r = ssdSelective(ssdArgs(t));
      return { y: r.y, h: r.hT };
    });
    const ref = ssdRef(data, dims);
    expectNear(out.y!, ref.y, {}, realTokens(dims[1]!, dims[2]! * dims[3]!, valid));
    expectNear(out.h!, ref.h);
  });

  it('chunked SSD equals the step-by-step SSD on every output, padded rows included', () => {
    const data = ssdData(dims, valid);
    const out = cpu(ssdSpec(dims), data, (t) => {
      const c = ssdChunked(ssdArgs(t, 4));
      const s = ssdSequential(ssdArgs(t));
      return { yc: c.y, hc: c.hT, ys: s.y, hs: s.hT };
    });
    expectNear(out.yc!, [...out.ys!.data], { atol: 1e-5, rtol: 1e-4 });
    expectNear(out.hc!, [...out.hs!.data], { atol: 1e-5, rtol: 1e-4 });
  });

  it('single step (T = 1) matches the recurrence; ssdScan picks it', () => {
    const one = [2, 1, 4, 3, 1, 6];
    const data = ssdData(one, [1, 0]);
    const out = cpu(ssdSpec(one), data, (t) => {
      const a = ssdStep(ssdArgs(t));
      const b = ssdScan(ssdArgs(t));
      return { y: a.y, h: a.hT, y2: b.y };
    });
    const ref = ssdRef(data, one);
    expectNear(out.y!, ref.y, {}, realTokens(1, 12, [1, 0]));
    expectNear(out.h!, ref.h);
    expect([...out.y2!.data]).toEqual([...out.y!.data]);
  });

  it('prefill of T tokens then one step equals a prefill of T + 1', () => {
    const [B, T, Hh, P, G, N] = [2, 7, 2, 2, 1, 3];
    const whole = [B, T + 1, Hh, P, G, N];
    const data = ssdData(whole, [T + 1, T + 1]);
    const run = (dims: number[], d: Arrays) => cpu(ssdSpec(dims), d, (t) => {
      const r = ssdScan(ssdArgs(t, 3));
      return { y: r.y, h: r.hT };
    });
    const full = run(whole, data);
    const cut = (a: number[], inner: number, from: number, to: number) => Array.from({ length: B }, (_, b) => a.slice((b * (T + 1) + from) * inner, (b * (T + 1) + to) * inner)).flat();
    const part = (from: number, to: number, h0: ArrayLike<number>): Arrays => ({
      ...data, x: cut(data.x!, Hh * P, from, to), dt: cut(data.dt!, Hh, from, to), Bm: cut(data.Bm!, G * N, from, to), Cm: cut(data.Cm!, G * N, from, to), h0: Array.from(h0), valid: [to - from, to - from],
    });
    const first = run([B, T, Hh, P, G, N], part(0, T, data.h0!));
    const step = run([B, 1, Hh, P, G, N], part(T, T + 1, first.h!.data));
    expectNear(step.h!, [...full.h!.data], { atol: 1e-5, rtol: 1e-4 });
    expectNear(step.y!, cut([...full.y!.data], Hh * P, T, T + 1), { atol: 1e-5, rtol: 1e-4 });
  });
});

/** Gated RMSNorm (§3.6): per group of I/groups channels; before or after the gate. */
function gatedNormRef(y: number[], z: number[], w: ArrayLike<number>, groups: number, eps: number, before: boolean): number[] {
  const I = y.length;
  const gs = I / groups;
  const out: number[] = [];
  for (let g = 0; g < groups; g++) {
    const ys = y.slice(g * gs, (g + 1) * gs);
    const zs = z.slice(g * gs, (g + 1) * gs);
    const src = before ? ys : ys.map((v, i) => v * silu(zs[i]!));
    const normed = rmsnormRef(src, Array.from(w).slice(g * gs, (g + 1) * gs), eps);
    out.push(...(before ? normed.map((v, i) => v * silu(zs[i]!)) : normed));
  }
  return out;
}

describe('gatedRmsNorm', () => {
  for (const [groups, before] of [[1, false], [2, false], [2, true], [1, true]] as const)
    it(`groups=${groups}, normBeforeGate=${before}`, () => {
      const [M, I] = [3, 8];
      const data = { y: rand(M * I, -2, 2), z: rand(M * I, -2, 2), w: rand(I, 0.5, 1.5) };
      const out = cpu({ y: [M, I], z: [M, I], w: [I] }, data, (t) => ({ o: gatedRmsNorm(t.y!, t.z!, t.w, groups, 1e-5, before) }));
      const ref = Array.from({ length: M }, (_, m) => gatedNormRef(data.y.slice(m * I, (m + 1) * I), data.z.slice(m * I, (m + 1) * I), data.w, groups, 1e-5, before)).flat();
      expectNear(out.o!, ref);
    });
});

interface Mamba2Dims {
  B: number;
  T: number;
  H: number;
  Hh: number;
  P: number;
  G: number;
  N: number;
  K: number;
}

function mamba2Spec({ B, T, H, Hh, P, G, N, K }: Mamba2Dims) {
  const I = Hh * P;
  const convDim = I + 2 * G * N;
  return {
    hidden: [B, T, H], conv: [B, convDim, K - 1], ssm: [B, Hh, P, N], valid: [B],
    inProj: [I + convDim + Hh, H], convWeight: [convDim, 1, K], convBias: [convDim], dtBias: [Hh], ALog: [Hh], D: [Hh], norm: [I], outProj: [H, I],
  };
}

function mamba2Data(d: Mamba2Dims, valid: number[]): Arrays {
  const data: Arrays = {};
  for (const [name, shape] of Object.entries(mamba2Spec(d))) data[name] = rand(shape.reduce((a, b) => a * b, 1), -0.5, 0.5);
  data.ALog = rand(d.Hh, 0, 1.5);
  data.dtBias = rand(d.Hh, -5, -1); // softplus(dt) ~ 0.01..0.3, some below timeStepMin
  data.norm = rand(d.Hh * d.P, 0.5, 1.5);
  data.valid = valid;
  return data;
}

/** The Mamba-2 mixer (§3.3-§3.7), token by token with HF's decode formulas. */
function mamba2MixerRef(w: Arrays, { B, T, H, Hh, P, G, N, K }: Mamba2Dims, cfg: Mamba2Config) {
  const I = Hh * P;
  const convDim = I + 2 * G * N;
  const out = new Array<number>(B * T * H).fill(NaN);
  const ssm = Float64Array.from(w.ssm!);
  const conv: number[] = [];
  for (let b = 0; b < B; b++) {
    const cr = new ConvRef(w.conv!, convDim, K, b);
    for (let t = 0; t < w.valid![b]!; t++) {
      const proj = matvec(w.inProj!, I + convDim + Hh, H, w.hidden!, at([B, T, H], b, t, 0));
      const z = proj.slice(0, I);
      const xbc = cr.step(proj.slice(I, I + convDim), w.convWeight!, w.convBias).map(silu);
      const [x, Bt, Ct] = [xbc.slice(0, I), xbc.slice(I, I + G * N), xbc.slice(I + G * N)];
      const y: number[] = [];
      for (let h = 0; h < Hh; h++) {
        const g = Math.floor(h / (Hh / G));
        const dt = Math.max(softplus(proj[I + convDim + h]! + w.dtBias![h]!), cfg.timeStepMin ?? 0);
        const decay = Math.exp(-dt * Math.exp(w.ALog![h]!));
        for (let p = 0; p < P; p++) {
          let acc = w.D![h]! * x[h * P + p]!;
          for (let n = 0; n < N; n++) {
            const hi = at([B, Hh, P, N], b, h, p, n);
            ssm[hi] = decay * ssm[hi]! + dt * x[h * P + p]! * Bt[g * N + n]!;
            acc += Ct[g * N + n]! * ssm[hi]!;
          }
          y.push(acc);
        }
      }
      const o = gatedNormRef(y, z, w.norm!, cfg.normGroups, cfg.eps, cfg.normBeforeGate ?? false);
      matvec(w.outProj!, H, I, o).forEach((v, h) => (out[at([B, T, H], b, t, h)] = v));
    }
    conv.push(...cr.window.flat());
  }
  return { out, conv, ssm: [...ssm] };
}

function mamba2Fn(d: Mamba2Dims, cfg: Mamba2Config) {
  return (t: Record<string, Tensor>) => {
    const r = mamba2Mixer(
      t.hidden!,
      { inProj: t.inProj!, convWeight: t.convWeight!, convBias: t.convBias, dtBias: t.dtBias!, ALog: t.ALog!, D: t.D!, norm: t.norm, outProj: t.outProj! },
      { conv: t.conv!, ssm: t.ssm! },
      t.valid!,
      cfg,
    );
    void d;
    return { out: r.out, conv: r.state.conv, ssm: r.state.ssm };
  };
}

describe('mamba2Mixer', () => {
  const dims: Mamba2Dims = { B: 2, T: 9, H: 6, Hh: 4, P: 2, G: 2, N: 3, K: 4 };
  const base = { numHeads: dims.Hh, headDim: dims.P, nGroups: dims.G, stateSize: dims.N, eps: 1e-5, chunkSize: 4 };
  const variants: [string, Mamba2Config][] = [
    ['Mamba2/Bamba/Granite: full-width norm after the gate', { ...base, normGroups: 1 }],
    ['NemotronH/Zamba2: grouped norm, dt >= time_step_min', { ...base, normGroups: 2, timeStepMin: 0.05 }],
    ['Falcon-H1 norm_before_gate', { ...base, normGroups: 2, normBeforeGate: true }],
  ];
  for (const [name, cfg] of variants)
    it(`matches a token-by-token reference (${name}), with a padded sequence`, () => {
      const data = mamba2Data(dims, [9, 5]);
      const out = cpu(mamba2Spec(dims), data, mamba2Fn(dims, cfg));
      const ref = mamba2MixerRef(data, dims, cfg);
      expectNear(out.out!, ref.out, {}, realTokens(dims.T, dims.H, data.valid!));
      expectNear(out.conv!, ref.conv);
      expectNear(out.ssm!, ref.ssm);
    });

  it('prefill of T tokens then a decode step equals a prefill of T + 1', () => {
    const cfg: Mamba2Config = { ...base, normGroups: 1 };
    const d1 = { ...dims, T: dims.T + 1 };
    const data = mamba2Data(d1, [d1.T, d1.T]);
    const whole = cpu(mamba2Spec(d1), data, mamba2Fn(d1, cfg));
    const hiddenAt = (from: number, to: number) => Array.from({ length: dims.B }, (_, b) => data.hidden!.slice((b * d1.T + from) * dims.H, (b * d1.T + to) * dims.H)).flat();
    const first = cpu(mamba2Spec(dims), { ...data, hidden: hiddenAt(0, dims.T), valid: [dims.T, dims.T] }, mamba2Fn(dims, cfg));
    const step = cpu(mamba2Spec({ ...dims, T: 1 }), { ...data, hidden: hiddenAt(dims.T, d1.T), conv: [...first.conv!.data], ssm: [...first.ssm!.data], valid: [1, 1] }, mamba2Fn(dims, cfg));
    expectNear(step.ssm!, [...whole.ssm!.data], { atol: 1e-6, rtol: 1e-5 });
    expectNear(step.conv!, [...whole.conv!.data], { atol: 0, rtol: 0 });
    const lastRow = Array.from({ length: dims.B }, (_, b) => [...whole.out!.data.slice((b * d1.T + dims.T) * dims.H, (b * d1.T + d1.T) * dims.H)]).flat();
    expectNear(step.out!, lastRow, { atol: 1e-5, rtol: 1e-4 });
  });
});

// ---------------------------------------------------------------- Gated DeltaNet

/** §11.4: l2norm q, k (eps 1e-6 inside the root of the sum), q / sqrt(Dk), then the recurrence per head. */
function deltaRuleRef(d: Arrays, [B, T, H, Dk, Dv]: number[]) {
  const o = new Array<number>(B * T * H * Dv).fill(NaN);
  const S = Float64Array.from(d.S0!);
  const l2 = (v: number[]) => {
    const r = 1 / Math.sqrt(v.reduce((a, x) => a + x * x, 0) + 1e-6);
    return v.map((x) => x * r);
  };
  for (let b = 0; b < B; b++)
    for (let t = 0; t < d.valid![b]!; t++)
      for (let h = 0; h < H; h++) {
        const vec = (a: number[], D: number) => a.slice(at([B, T, H, D], b, t, h, 0), at([B, T, H, D], b, t, h, 0) + D);
        const q = l2(vec(d.q!, Dk)).map((x) => x / Math.sqrt(Dk));
        const k = l2(vec(d.k!, Dk));
        const v = vec(d.v!, Dv);
        const g = Math.exp(d.g![at([B, T, H], b, t, h)]!);
        const beta = d.beta![at([B, T, H], b, t, h)]!;
        const s = (i: number, j: number) => at([B, H, Dk, Dv], b, h, i, j);
        for (let i = 0; i < Dk; i++) for (let j = 0; j < Dv; j++) S[s(i, j)]! *= g;
        for (let j = 0; j < Dv; j++) {
          let mem = 0;
          for (let i = 0; i < Dk; i++) mem += S[s(i, j)]! * k[i]!;
          const delta = beta * (v[j]! - mem);
          for (let i = 0; i < Dk; i++) S[s(i, j)]! += k[i]! * delta;
        }
        for (let j = 0; j < Dv; j++) {
          let acc = 0;
          for (let i = 0; i < Dk; i++) acc += S[s(i, j)]! * q[i]!;
          o[at([B, T, H, Dv], b, t, h, j)] = acc;
        }
      }
  return { o, S: [...S] };
}

function deltaData([B, T, H, Dk, Dv]: number[], valid: number[]): Arrays {
  return {
    q: rand(B * T * H * Dk),
    k: rand(B * T * H * Dk),
    v: rand(B * T * H * Dv),
    g: rand(B * T * H, -1.5, -0.01),
    beta: rand(B * T * H, 0.05, 0.95),
    S0: rand(B * H * Dk * Dv),
    valid,
  };
}

const deltaSpec = ([B, T, H, Dk, Dv]: number[]) => ({ q: [B, T, H, Dk], k: [B, T, H, Dk], v: [B, T, H, Dv], g: [B, T, H], beta: [B, T, H], S0: [B, H, Dk, Dv], valid: [B] });
const deltaArgs = (t: Record<string, Tensor>, chunkSize?: number): DeltaRuleArgs => ({ q: t.q!, k: t.k!, v: t.v!, g: t.g!, beta: t.beta!, S0: t.S0!, valid: t.valid!, chunkSize });

describe('gated delta rule (Gated DeltaNet)', () => {
  const dims = [3, 7, 2, 4, 3]; // B, T, H, Dk, Dv
  const valid = [7, 3, 0];

  it('recurrent form matches the reference, padded rows leaving the state alone', () => {
    const data = deltaData(dims, valid);
    const out = cpu(deltaSpec(dims), data, (t) => {
      const r = gatedDeltaRule(deltaArgs(t));
      return { o: r.o, S: r.ST };
    });
    const ref = deltaRuleRef(data, dims);
    expectNear(out.o!, ref.o, {}, realTokens(dims[1]!, dims[2]! * dims[4]!, valid));
    expectNear(out.S!, ref.S);
  });

  for (const chunkSize of [1, 3, 4, 8])
    it(`chunked (WY) form with Q=${chunkSize} matches the reference`, () => {
      const data = deltaData(dims, valid);
      const out = cpu(deltaSpec(dims), data, (t) => {
        const r = gatedDeltaRuleChunked(deltaArgs(t, chunkSize));
        return { o: r.o, S: r.ST };
      });
      const ref = deltaRuleRef(data, dims);
      expectNear(out.o!, ref.o, {}, realTokens(dims[1]!, dims[2]! * dims[4]!, valid));
      expectNear(out.S!, ref.S);
    });

  it('prefill of T tokens then one decode step equals a prefill of T + 1', () => {
    const [B, T, H, Dk, Dv] = [2, 5, 2, 3, 4];
    const whole = [B, T + 1, H, Dk, Dv];
    const data = deltaData(whole, [T + 1, T + 1]);
    const full = cpu(deltaSpec(whole), data, (t) => ({ S: gatedDeltaRuleChunked(deltaArgs(t, 4)).ST }));
    const cut = (a: number[], inner: number, from: number, to: number) => Array.from({ length: B }, (_, b) => a.slice((b * (T + 1) + from) * inner, (b * (T + 1) + to) * inner)).flat();
    const part = (from: number, to: number, S0: ArrayLike<number>): Arrays => ({
      q: cut(data.q!, H * Dk, from, to), k: cut(data.k!, H * Dk, from, to), v: cut(data.v!, H * Dv, from, to), g: cut(data.g!, H, from, to), beta: cut(data.beta!, H, from, to), S0: Array.from(S0), valid: [to - from, to - from],
    });
    const first = cpu(deltaSpec([B, T, H, Dk, Dv]), part(0, T, data.S0!), (t) => ({ S: gatedDeltaRuleChunked(deltaArgs(t, 4)).ST }));
    const step = cpu(deltaSpec([B, 1, H, Dk, Dv]), part(T, T + 1, first.S!.data), (t) => ({ S: gatedDeltaRule(deltaArgs(t)).ST }));
    expectNear(step.S!, [...full.S!.data], { atol: 1e-5, rtol: 1e-4 });
  });
});

// ---------------------------------------------------------------- MoE

/** Router, top-k by sorting, experts one by one (§5.6, §7.6, §11.6). */
function moeRef(d: Arrays, [N, H, E, I]: number[], k: number, mode: RoutingMode, opts: { norm?: boolean; shared?: boolean; separate?: boolean } = {}) {
  const out: number[] = [];
  const expert = (e: number | undefined, x: number[]) => {
    const gu = e === undefined ? d.sharedGateUp! : d.gateUp!.slice(e * 2 * I * H, (e + 1) * 2 * I * H);
    const dn = e === undefined ? d.sharedDown! : d.down!.slice(e * H * I, (e + 1) * H * I);
    const h = matvec(gu, 2 * I, H, x);
    return matvec(dn, H, I, h.slice(0, I).map((a, i) => silu(a) * h[I + i]!));
  };
  for (let n = 0; n < N; n++) {
    const x = d.x!.slice(n * H, (n + 1) * H);
    const logits = matvec(d.router!, E, H, x);
    const softmax = (v: number[]) => {
      const m = Math.max(...v);
      const e = v.map((a) => Math.exp(a - m));
      const s = e.reduce((a, b) => a + b, 0);
      return e.map((a) => a / s);
    };
    const scores = mode === 'softmax-then-topk' ? softmax(logits) : logits;
    const order = [...scores.keys()].sort((a, b) => scores[b]! - scores[a]! || a - b).slice(0, k);
    let w = order.map((e) => scores[e]!);
    if (mode === 'topk-then-softmax') w = softmax(w);
    else if (opts.norm) w = w.map((v) => v / w.reduce((a, b) => a + b, 0));
    const y = new Array<number>(H).fill(0);
    order.forEach((e, j) => expert(e, x).forEach((v, h) => (y[h]! += w[j]! * v)));
    if (opts.shared) {
      const gate = sigmoid(matvec(d.sharedGate!, 1, H, x)[0]!);
      expert(undefined, x).forEach((v, h) => (y[h]! += gate * v));
    }
    out.push(...y);
  }
  return out;
}

describe('moe', () => {
  const [N, H, E, I, k] = [5, 6, 7, 4, 3];
  const spec = { x: [N, H], router: [E, H], gateUp: [E, 2 * I, H], down: [E, H, I], sharedGateUp: [2 * I, H], sharedDown: [H, I], sharedGate: [1, H] };
  const data = (): Arrays => ({ x: rand(N * H), router: rand(E * H), gateUp: rand(E * 2 * I * H), down: rand(E * H * I), sharedGateUp: rand(2 * I * H), sharedDown: rand(H * I), sharedGate: rand(H) });

  for (const mode of ['softmax-then-topk', 'topk-then-softmax'] as const)
    for (const strategy of ['dense', 'gather'] as const)
      it(`${mode}, ${strategy} experts`, () => {
        const d = data();
        const out = cpu(spec, d, (t) => ({ y: moe(t.x!, t.router!, { gateUp: t.gateUp!, down: t.down! }, k, mode, undefined, { strategy }) }));
        expectNear(out.y!, moeRef(d, [N, H, E, I], k, mode));
      });

  it('Qwen3-Next: renormalised top-k, separate gate/up stacks, sigmoid-gated shared expert', () => {
    const d = data();
    const out = cpu(spec, d, (t) => {
      const [gate, up] = t.gateUp!.split(1, [I, I]) as [Tensor, Tensor];
      const [sGate, sUp] = t.sharedGateUp!.split(0, [I, I]) as [Tensor, Tensor];
      const shared = { weights: { gate: sGate, up: sUp, down: t.sharedDown! }, gate: t.sharedGate };
      return {
        dense: moe(t.x!, t.router!, { gate, up, down: t.down! }, k, 'softmax-then-topk', shared, { strategy: 'dense', normTopkProb: true }),
        gather: moe(t.x!, t.router!, { gate, up, down: t.down! }, k, 'softmax-then-topk', shared, { strategy: 'gather', normTopkProb: true }),
      };
    });
    const ref = moeRef(d, [N, H, E, I], k, 'softmax-then-topk', { norm: true, shared: true });
    expectNear(out.dense!, ref);
    expectNear(out.gather!, ref);
  });

  it("Jamba's routing columns (a rank count per expert) equal route's dense weights, ties to the lower expert", () => {
    // rows 0-2 random; row 3 ties experts 1, 4 and 6 at the top; row 4 ties every expert
    const logits = [...rand(3 * E), ...[0, 2, 1, -1, 2, 0.5, 2], ...new Array<number>(E).fill(0.25)];
    const out = cpu({ logits: [N, E] }, { logits }, (t) => ({ dense: route(t.logits!, k, 'softmax-then-topk').dense, columns: Tensor.concat(topkProbabilityColumns(t.logits!, k), 1) }));
    expect(Array.from(out.columns!.data)).toEqual(Array.from(out.dense!.data));
    expect(Array.from(out.columns!.data.slice(3 * E, 4 * E)).map((v) => v > 0)).toEqual([false, true, false, false, true, false, true]);
  });
});

// ---------------------------------------------------------------- compiled size

describe('compiled mixers', () => {
  it('keep every kernel small: long index expressions through view chains are named once, not repeated', () => {
    // Before lowerToWgsl named them, one kernel of this mixer was 637 KB of WGSL (minutes to compile on lavapipe).
    const dims: Mamba2Dims = { B: 2, T: 6, H: 5, Hh: 4, P: 2, G: 2, N: 3, K: 4 };
    const cfg: Mamba2Config = { numHeads: 4, headDim: 2, nGroups: 2, stateSize: 3, eps: 1e-5, normGroups: 2, chunkSize: 4 };
    const program = compile(traceWith(mamba2Spec(dims), mamba2Fn(dims, cfg)), { limits: { maxStorageBuffersPerShaderStage: 16 } });
    const largest = Math.max(...program.kernels.map((k) => k.wgsl.length));
    expect(largest).toBeLessThan(20_000);
  });
});

// ---------------------------------------------------------------- WebGPU (small shapes: lavapipe is slow)

describe('mixers on WebGPU agree with the CPU reference', () => {
  const tol = { atol: 2e-5, rtol: 2e-4 };
  const asData = (d: Arrays): RunData => ({ inputs: d });
  const gpu = (spec: Record<string, number[]>, fn: (t: Record<string, Tensor>) => Record<string, Tensor>, d: Arrays, maxStorageBuffersPerShaderStage?: number) =>
    expectBothClose(() => {
      const t: Record<string, Tensor> = {};
      for (const [name, shape] of Object.entries(spec)) t[name] = input(name, shape, name === 'valid' ? 'i32' : 'f32');
      return fn(t);
    }, {}, asData(d), tol, maxStorageBuffersPerShaderStage ? { limits: { maxStorageBuffersPerShaderStage } } : {});

  it('causalConv1d (padded batch)', async () => {
    const [B, T, C, K] = [2, 5, 3, 4];
    const spec = { x: [B, T, C], state: [B, C, K - 1], weight: [C, K], bias: [C], valid: [B] };
    const d = { x: rand(B * T * C), state: rand(B * C * (K - 1)), weight: rand(C * K), bias: rand(C), valid: [5, 2] };
    const r = await gpu(spec, (t) => {
      const o = causalConv1d(t.x!, t.state!, t.weight!, t.bias, t.valid!);
      return { y: o.y, state: o.newState };
    }, d);
    expect(r.program.kernels.length).toBeLessThanOrEqual(2);
  });

  it('mambaMixer (prefill in 2 chunks, padded batch)', async () => {
    const dims: MambaDims = { B: 2, T: 5, H: 4, I: 6, N: 3, K: 3, Rk: 2 };
    const d = mambaData(dims, [5, 3]);
    const r = await gpu(mambaSpec(dims), mambaMixerFn(3), d);
    const ref = mambaMixerRef(d, dims, 1e-6);
    expectNear(r.gpu.outputs.ssm!, ref.ssm);
  });

  it('mambaMixer decode step (T = 1)', async () => {
    const dims: MambaDims = { B: 2, T: 1, H: 4, I: 6, N: 3, K: 3, Rk: 2 };
    await gpu(mambaSpec(dims), mambaMixerFn(), mambaData(dims, [1, 0]));
  });

  it('mamba2Mixer prefill (the selective scan kernel per group; its composition on a portable 8 storage buffers) and decode (single step)', async () => {
    const cfg: Mamba2Config = { numHeads: 4, headDim: 2, nGroups: 2, stateSize: 3, eps: 1e-5, normGroups: 2, chunkSize: 4, timeStepMin: 0.05 };
    const prefill: Mamba2Dims = { B: 2, T: 6, H: 5, Hh: 4, P: 2, G: 2, N: 3, K: 4 };
    const d = mamba2Data(prefill, [6, 4]);
    for (const buffers of [undefined, 8]) {
      const r = await gpu(mamba2Spec(prefill), mamba2Fn(prefill, cfg), d, buffers);
      expectNear(r.gpu.outputs.ssm!, mamba2MixerRef(d, prefill, cfg).ssm);
      // the scan kernel for each group's y and final state (outputs here, not a state write it could absorb); with
      // 8 bindings the scan's inputs need 9 and it is its chunked composition (passes/decomposeKernels.ts)
      expect(r.program.kernels.flatMap((k) => k.templates).filter((t) => t === 'selscan')).toHaveLength(buffers ? 0 : 4);
    }
    const decode = { ...prefill, T: 1 };
    await gpu(mamba2Spec(decode), mamba2Fn(decode, cfg), mamba2Data(decode, [1, 0]));
  });

  it('SSD chunked with an uneven last chunk', async () => {
    const dims = [1, 7, 2, 2, 1, 4];
    await gpu(ssdSpec(dims), (t) => {
      const r = ssdChunked(ssdArgs(t, 3));
      return { y: r.y, h: r.hT };
    }, ssdData(dims, [6]));
  });

  it('gated delta rule: recurrent and chunked', async () => {
    const dims = [1, 4, 2, 4, 3];
    const d = deltaData(dims, [3]);
    const r = await gpu(deltaSpec(dims), (t) => {
      const a = gatedDeltaRule(deltaArgs(t));
      const b = gatedDeltaRuleChunked(deltaArgs(t, 2));
      return { o: a.o, S: a.ST, oc: b.o, Sc: b.ST };
    }, d);
    const ref = deltaRuleRef(d, dims);
    expectNear(r.gpu.outputs.S!, ref.S);
    expectNear(r.gpu.outputs.Sc!, ref.S);
  });

  it('moe: both routing modes, dense and gathered experts, shared expert', async () => {
    const [N, H, E, I] = [2, 4, 5, 3];
    const spec = { x: [N, H], router: [E, H], gateUp: [E, 2 * I, H], down: [E, H, I], sharedGateUp: [2 * I, H], sharedDown: [H, I], sharedGate: [1, H] };
    const d: Arrays = { x: rand(N * H), router: rand(E * H), gateUp: rand(E * 2 * I * H), down: rand(E * H * I), sharedGateUp: rand(2 * I * H), sharedDown: rand(H * I), sharedGate: rand(H) };
    const r = await gpu(spec, (t) => {
      const experts = { gateUp: t.gateUp!, down: t.down! };
      const shared = { weights: { gateUp: t.sharedGateUp!, down: t.sharedDown! }, gate: t.sharedGate };
      return {
        jamba: moe(t.x!, t.router!, experts, 2, 'softmax-then-topk', undefined, { strategy: 'dense' }),
        granite: moe(t.x!, t.router!, experts, 2, 'topk-then-softmax', undefined, { strategy: 'gather' }),
        qwen: moe(t.x!, t.router!, experts, 2, 'softmax-then-topk', shared, { normTopkProb: true }),
      };
    }, d);
    expectNear(r.gpu.outputs.jamba!, moeRef(d, [N, H, E, I], 2, 'softmax-then-topk'));
    expectNear(r.gpu.outputs.granite!, moeRef(d, [N, H, E, I], 2, 'topk-then-softmax'));
  });
});
