// Mamba-1 selective scan and mixer (hybrid-architectures.md §2, Jamba additions §5.4) as pure functions: the
// caller passes the previous conv and SSM states in and gets the new ones back.
import { OPS, ShapeError } from '../../compiler/ops.ts';
import { Tensor } from '../tensor.ts';
import { composer, iota } from '../trace.ts';
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
  /** Tokens per chunk of the quadratic form (default 16: its sums over tokens stay inline loops). */
  chunkSize?: number;
}

/**
 * h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t;  y_t = C_t . h_t + D x_t   (per channel d and state n).
 *
 * Within a chunk the scan is the cumulative-sum form: with L_t = sum_{j<=t} dt_j A,
 *   h_t = exp(L_t) h_in + sum_{s<=t} exp(L_t - L_s) dt_s B_s x_s,
 * so a chunk is a few fused kernels instead of T dependent steps. Mamba-1's decay depends on (d, n), so the
 * quadratic term is [B,Q,Q,D,N] (never materialised: its sums are inline loops in the kernel computing y) and
 * chunks pass the state along sequentially. Differences L_t - L_s stay small within a chunk, which keeps the
 * f32 cancellation error low. T = 1 (decode) takes the plain recurrence.
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

  // Padded steps: dt = 0 gives decay exp(0) = 1 and no input, so the state passes through unchanged. `where`
  // rather than a multiply, so garbage (even NaN) in padded rows cannot leak into the state.
  const real = validMask(valid, B, T).reshape(B, T, 1);
  const dt = Tensor.where(real, args.dt, 0);
  const x = Tensor.where(real, args.x, 0);
  const u = dt.mul(x); // [B,T,D] dt_t x_t

  if (T === 1) {
    const h = dt.reshape(B, D, 1).mul(A).exp().mul(h0).add(u.reshape(B, D, 1).mul(args.Bm.reshape(B, 1, N))); // [B,D,N]
    const y = h.mul(args.Cm.reshape(B, 1, N)).sum(-1).add(x.reshape(B, D).mul(Dskip)).reshape(B, 1, D);
    return { y, hT: h };
  }

  const Q = Math.max(1, Math.min(args.chunkSize ?? 16, T));
  const ys: Tensor[] = [];
  let h = h0;
  for (let start = 0; start < T; start += Q) {
    const end = Math.min(T, start + Q);
    const out = scanChunk(
      dt.slice(1, start, end),
      x.slice(1, start, end),
      u.slice(1, start, end),
      A,
      args.Bm.slice(1, start, end),
      args.Cm.slice(1, start, end),
      Dskip,
      h,
    );
    ys.push(out.y);
    h = out.hT;
  }
  return { y: Tensor.concat(ys, 1), hT: h };
}

/** One chunk of the cumulative-sum form; shapes as selectiveScan with Q tokens. */
function scanChunk(dt: Tensor, x: Tensor, u: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, Dskip: Tensor, hIn: Tensor): { y: Tensor; hT: Tensor } {
  const [B, Q, D] = dt.shape as [number, number, number];
  const N = A.shape[1]!;
  const L = dt.reshape(B, Q, D, 1).mul(A).cumsum(1); // [B,Q,D,N] running log-decay (<= 0, decreasing)

  // Quadratic term: y_diag[t,d] = sum_{s<=t} u_s[d] sum_n C_t[n] B_s[n] exp(L_t[d,n] - L_s[d,n]).
  // Masking the exponent (not the product) keeps exp(L_t - L_s) for s > t from overflowing.
  const causal = iota([Q, Q], 1).le(iota([Q, Q], 0)).reshape(1, Q, Q, 1, 1); // [t,s]: s <= t
  const decay = Tensor.where(causal, L.reshape(B, Q, 1, D, N).sub(L.reshape(B, 1, Q, D, N)), -Infinity).exp(); // [B,t,s,D,N]
  const cb = Cm.reshape(B, Q, 1, 1, N).mul(Bm.reshape(B, 1, Q, 1, N)); // [B,t,s,1,N]
  const yDiag = decay.mul(cb).sum(-1).mul(u.reshape(B, 1, Q, D)).sum(2); // [B,Q,D]
  // Carried-in state: y_off[t,d] = sum_n C_t[n] exp(L_t[d,n]) h_in[d,n].
  const yOff = L.exp().mul(hIn.reshape(B, 1, D, N)).mul(Cm.reshape(B, Q, 1, N)).sum(-1); // [B,Q,D]
  const y = yDiag.add(yOff).add(x.mul(Dskip));

  // State at the chunk's end: exp(L_last) h_in + sum_s exp(L_last - L_s) B_s u_s.
  const last = L.slice(1, Q - 1); // [B,1,D,N]
  const inflow = last.sub(L).exp().mul(Bm.reshape(B, Q, 1, N)).mul(u.reshape(B, Q, D, 1)).sum(1); // [B,D,N]
  const hT = last.reshape(B, D, N).exp().mul(hIn).add(inflow);
  return { y, hT };
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
  const scan = selectiveScan({ x: v, dt, A, Bm, Cm, Dskip: w.D, h0: state.ssm, valid, chunkSize: config.chunkSize });
  const out = linear(scan.y.mul(activate(z, act)), w.outProj, w.outProjBias);
  return { out, state: { conv: conv.newState, ssm: scan.hT } };
}
