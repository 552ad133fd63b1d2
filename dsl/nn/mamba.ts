// Mamba-1 selective scan and mixer (hybrid-architectures.md §2, Jamba additions §5.4) as pure functions: the
// caller passes the previous conv and SSM states in and gets the new ones back.
import { OPS, ShapeError } from '../../compiler/ops.ts';
import { selectiveScanChunked } from '../../compiler/selectiveScan.ts';
import { Tensor } from '../tensor.ts';
import { composer } from '../trace.ts';
import { activate, linear, rmsnorm } from './basic.ts';
import { causalConv1d, validMask } from './conv.ts';

export interface SelectiveScanArgs {
  x: Tensor; // [B,T,D]
  dt: Tensor; // [B,T,D], after dt_proj bias and softplus
  A: Tensor; // [D,N], = -exp(A_log)
  Bm: Tensor; // [B,T,N]
  Cm: Tensor; // [B,T,N]
  Dskip: Tensor; // [D]
  h0: Tensor; // [B,D,N]
  valid: Tensor; // [B] i32: tokens t >= valid[b] are padding and leave the state unchanged
  /** Tokens per chunk of the composition's quadratic form (default 16: its sums over tokens stay inline loops). */
  chunkSize?: number;
  /** false: T > 1 emits the selective_scan composition (the chunked form) instead of its fused kernel. */
  fused?: boolean;
}

/**
 * h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t;  y_t = C_t . h_t + D x_t   (per channel d and state n).
 *
 * T > 1 is the selective_scan op (compiler/selectiveScan.ts): one kernel running the recurrence token by token,
 * or, with `fused` false, its composition (the chunked cumulative-sum form). T = 1 takes the plain recurrence.
 */
export function selectiveScan(args: SelectiveScanArgs): { y: Tensor; hT: Tensor } {
  const { A, Dskip, h0, valid } = args;
  const [B, T, D] = args.x.shape as [number, number, number];
  const N = A.shape[1]!;
  for (const [name, t, want] of [
    ['dt', args.dt, [B, T, D]],
    ['A', A, [D, N]],
    ['Bm', args.Bm, [B, T, N]],
    ['Cm', args.Cm, [B, T, N]],
    ['Dskip', Dskip, [D]],
    ['h0', h0, [B, D, N]],
    ['valid', valid, [B]],
  ] as const)
    if (t.shape.join() !== want.join()) throw new ShapeError(`[selectiveScan] ${name} (${t.shape.join(',')}) must be (${want.join(',')}) for x (${B},${T},${D})`);

  if (T === 1) {
    // Padded steps: dt = 0 gives decay exp(0) = 1 and no input, so the state passes through unchanged. `where`
    // rather than a multiply, so garbage (even NaN) in padded rows cannot leak into the state.
    const real = validMask(valid, B, T).reshape(B, T, 1);
    const dt = Tensor.where(real, args.dt, 0);
    const x = Tensor.where(real, args.x, 0);
    const u = dt.mul(x); // [B,T,D] dt_t x_t
    const h = dt.reshape(B, D, 1).mul(A).exp().mul(h0).add(u.reshape(B, D, 1).mul(args.Bm.reshape(B, 1, N))); // [B,D,N]
    const y = h.mul(args.Cm.reshape(B, 1, N)).sum(-1).add(x.reshape(B, D).mul(Dskip)).reshape(B, 1, D);
    return { y, hT: h };
  }

  // T > 1: the selective_scan op (compiler/selectiveScan.ts), its kernel or its chunked composition
  const inputs = [args.x, args.dt, A, args.Bm, args.Cm, Dskip, h0, valid].map((t) => t.node);
  const chunkSize = args.chunkSize ?? 16;
  if (args.fused === false) {
    const r = selectiveScanChunked(composer, inputs, chunkSize);
    return { y: new Tensor(r.y), hT: new Tensor(r.hT) };
  }
  const part = (p: 'y' | 'ssm') => new Tensor(composer.emit('selective_scan', inputs, { part: p, chunkSize }));
  return { y: part('y'), hT: part('ssm') };
}

export interface MambaWeights {
  inProj: Tensor; // [2I, H]
  inProjBias?: Tensor; // [2I]
  convWeight: Tensor; // [I, K] (or HF's [I, 1, K])
  convBias?: Tensor; // [I]
  xProj: Tensor; // [R + 2N, I]
  dtProjWeight: Tensor; // [I, R]
  dtProjBias: Tensor; // [I]
  ALog: Tensor; // [I, N]
  D: Tensor; // [I]
  outProj: Tensor; // [H, I]
  outProjBias?: Tensor; // [H]
  /** Jamba: RMSNorms on dt (size R), B and C (size N), applied before dt_proj. */
  dtNorm?: Tensor;
  bNorm?: Tensor;
  cNorm?: Tensor;
}

export interface MambaState {
  conv: Tensor; // [B, I, K-1]
  ssm: Tensor; // [B, I, N]
}

/** The inputs of one decode step, after the conv and x_proj (rank 2: one token per sequence). */
export interface SelectiveStepArgs {
  x: Tensor; // [S,D] the conv output after silu
  z: Tensor; // [S,D] the gate, before silu
  dtLow: Tensor; // [S,R]
  Bm: Tensor; // [S,N]
  Cm: Tensor; // [S,N]
  h0: Tensor; // [S,D,N]
  valid: Tensor; // [S] i32
}

/**
 * One decode step as the selective_step op (compiler/selectiveStep.ts): dt = softplus(dt_proj(norm(dtLow))), the
 * state update with norm(B), y = (norm(C) . h + D x) silu(z) -> y [S,D], hT [S,D,N]; the norms are Jamba's when
 * the weights carry them. `fused` false emits the op's composition instead of its kernel.
 */
export function selectiveStep(a: SelectiveStepArgs, w: Pick<MambaWeights, 'dtProjWeight' | 'dtProjBias' | 'ALog' | 'D' | 'dtNorm' | 'bNorm' | 'cNorm'>, eps: number, fused: boolean): { y: Tensor; hT: Tensor } {
  const norms = w.dtNorm && w.bNorm && w.cNorm ? [w.dtNorm, w.bNorm, w.cNorm] : [];
  const inputs = [a.x, a.z, a.dtLow, a.Bm, a.Cm, a.h0, w.dtProjWeight, w.dtProjBias, w.ALog.exp().neg(), w.D, a.valid, ...norms].map((t) => t.node);
  const part = (p: 'y' | 'ssm') => new Tensor(fused ? composer.emit('selective_step', inputs, { part: p, eps }) : OPS.selective_step.decompose(composer, inputs, { part: p, eps }));
  return { y: part('y'), hT: part('ssm') };
}

export interface MambaConfig {
  /** eps of Jamba's dt/B/C RMSNorms (rms_norm_eps). */
  rmsNormEps?: number;
  /** hidden_act: the conv and gate activation (silu for every released checkpoint). */
  activation?: string;
  chunkSize?: number;
  /** false: a one-token step emits the selective_step composition instead of its fused kernel. */
  fusedStep?: boolean;
  /** false: a scan of T > 1 tokens emits the selective_scan composition (chunked) instead of its fused kernel. */
  fusedScan?: boolean;
}

/**
 * The Mamba-1 mixer (MambaMixer / JambaMambaMixer slow_forward): in_proj -> [x; z], causal conv + act on x,
 * x_proj -> [dt_r; B; C] (Jamba: RMSNorm each), dt = softplus(dt_proj(dt_r)), selective scan, y * act(z),
 * out_proj. hidden [B,T,H], valid [B] i32 -> out [B,T,H] and the new state. A one-token step (decode) after the
 * conv and x_proj is the selective_step op (compiler/selectiveStep.ts): one kernel for dt_proj, the state update
 * (written in place) and the gated read-out.
 */
export function mambaMixer(hidden: Tensor, w: MambaWeights, state: MambaState, valid: Tensor, config: MambaConfig = {}): { out: Tensor; state: MambaState } {
  const act = config.activation ?? 'silu';
  const I = w.inProj.shape[0]! / 2;
  const [, R] = w.dtProjWeight.shape as [number, number];
  const N = w.ALog.shape[1]!;
  if (w.xProj.shape[0] !== R + 2 * N) throw new ShapeError(`[mambaMixer] x_proj (${w.xProj.shape.join(',')}) must have R + 2N = ${R + 2 * N} rows (dt_proj rank ${R}, A_log state ${N})`);
  const [x, z] = linear(hidden, w.inProj, w.inProjBias).split(-1, [I, I]) as [Tensor, Tensor]; // [B,T,I] each
  const conv = causalConv1d(x, state.conv, w.convWeight, w.convBias, valid);
  const v = activate(conv.y, act);
  let [dtLow, Bm, Cm] = linear(v, w.xProj).split(-1, [R, N, N]) as [Tensor, Tensor, Tensor];
  const eps = config.rmsNormEps ?? 1e-6;
  const [B, T] = hidden.shape as [number, number, number];
  if (T === 1 && act === 'silu') {
    const flat = (t: Tensor) => t.reshape(B, t.shape[2]!);
    const step = selectiveStep({ x: flat(v), z: flat(z), dtLow: flat(dtLow), Bm: flat(Bm), Cm: flat(Cm), h0: state.ssm, valid }, w, eps, config.fusedStep ?? true);
    return { out: linear(step.y.reshape(B, 1, I), w.outProj, w.outProjBias), state: { conv: conv.newState, ssm: step.hT } };
  }
  if (w.dtNorm) dtLow = rmsnorm(dtLow, w.dtNorm, eps);
  if (w.bNorm) Bm = rmsnorm(Bm, w.bNorm, eps);
  if (w.cNorm) Cm = rmsnorm(Cm, w.cNorm, eps);
  const dt = linear(dtLow, w.dtProjWeight, w.dtProjBias).softplus();
  const A = w.ALog.exp().neg();
  const scan = selectiveScan({ x: v, dt, A, Bm, Cm, Dskip: w.D, h0: state.ssm, valid, chunkSize: config.chunkSize, fused: config.fusedScan });
  const out = linear(scan.y.mul(activate(z, act)), w.outProj, w.outProjBias);
  return { out, state: { conv: conv.newState, ssm: scan.hT } };
}
