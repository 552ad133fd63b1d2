// Mamba-2 / SSD (hybrid-architectures.md §3): the chunked state-space-duality scan HF's torch_forward uses for
// prefill, the single-step recurrence for decode, the gated RMSNorm variants and the mixer. Pure functions: the
// caller passes the previous conv and SSM states in and gets the new ones back.
import { OPS, ShapeError } from '../../compiler/ops.ts';
import { Tensor } from '../tensor.ts';
import { composer, constant, iota } from '../trace.ts';
import { activate, linear } from './basic.ts';
import { causalConv1d, causalConv1dRing, validMask } from './conv.ts';
import { selectiveScan } from './mamba.ts';

export interface SsdArgs {
  x: Tensor; // [B,T,Hh,P]
  dt: Tensor; // [B,T,Hh], processed: softplus(dt + dt_bias), clamped per model (§3.7)
  A: Tensor; // [Hh], = -exp(A_log)
  Bm: Tensor; // [B,T,G,N]
  Cm: Tensor; // [B,T,G,N]
  D: Tensor; // [Hh]
  h0: Tensor; // [B,Hh,P,N]
  valid: Tensor; // [B] i32: tokens t >= valid[b] are padding and leave the state unchanged
  /** Chunk length Q of the SSD algorithm (HF's chunk_size is 256; 16..64 keeps intra-chunk sums cheap here). */
  chunkSize?: number;
  /** false: a scan of T > 1 tokens is the chunked SSD algorithm (ssdChunked) instead of the selective_scan kernel. */
  fused?: boolean;
}

interface Dims {
  B: number;
  T: number;
  Hh: number;
  P: number;
  G: number;
  N: number;
}

function checkArgs(op: string, a: SsdArgs): Dims {
  const [B, T, Hh, P] = a.x.shape as [number, number, number, number];
  const [, , G, N] = a.Bm.shape as [number, number, number, number];
  if (Hh % G !== 0) throw new ShapeError(`[${op}] ${Hh} heads do not divide into ${G} groups`);
  for (const [name, t, want] of [
    ['dt', a.dt, [B, T, Hh]],
    ['A', a.A, [Hh]],
    ['Bm', a.Bm, [B, T, G, N]],
    ['Cm', a.Cm, [B, T, G, N]],
    ['D', a.D, [Hh]],
    ['h0', a.h0, [B, Hh, P, N]],
    ['valid', a.valid, [B]],
  ] as const)
    if (t.shape.join() !== want.join()) throw new ShapeError(`[${op}] ${name} (${t.shape.join(',')}) must be (${want.join(',')}) for x (${B},${T},${Hh},${P})`);
  return { B, T, Hh, P, G, N };
}

/** dt and x with padded steps zeroed (`where`, so garbage in padded rows cannot leak into the state). */
function maskPadding(a: SsdArgs, d: Dims): { dt: Tensor; x: Tensor } {
  const real = validMask(a.valid, d.B, d.T).reshape(d.B, d.T, 1);
  return { dt: Tensor.where(real, a.dt, 0), x: Tensor.where(real.reshape(d.B, d.T, 1, 1), a.x, 0) };
}

/** Per-head view of per-group values: [B,T,G,N] -> [B,T,Hh,N], head h reading group h // (Hh/G). */
function groupsToHeads(v: Tensor, Hh: number): Tensor {
  const [B, T, G, N] = v.shape as [number, number, number, number];
  return v.reshape(B, T, G, 1, N).broadcastTo([B, T, G, Hh / G, N]).reshape(B, T, Hh, N);
}

/**
 * segsum(a)[..., i, j] = sum_{j < k <= i} a_k for j <= i, -inf above the diagonal (HF's segment_sum): a masked
 * cumulative sum, so no difference of two large running sums loses precision. a [..., Q] -> [..., Q, Q].
 */
export function segsum(a: Tensor): Tensor {
  const Q = a.shape[a.rank - 1]!;
  const row = iota([Q, Q], 0);
  const col = iota([Q, Q], 1);
  const terms = Tensor.where(row.gt(col), a.unsqueeze(-1), 0); // [..., i, j]: a_i where i > j
  return Tensor.where(row.ge(col), terms.cumsum(-2), -Infinity);
}

/**
 * One recurrent step (T = 1, the decode path, §3.5):
 *   h = exp(dt A) h + dt x (x) B;   y = C . h + D x.
 */
export function ssdStep(args: SsdArgs): { y: Tensor; hT: Tensor } {
  const d = checkArgs('ssdStep', args);
  if (d.T !== 1) throw new ShapeError(`[ssdStep] takes one token, got T=${d.T} (use ssdScan)`);
  const { B, Hh, P, N } = d;
  const { dt, x } = maskPadding(args, d);
  const dtH = dt.reshape(B, Hh, 1, 1);
  const xH = x.reshape(B, Hh, P, 1);
  const bH = groupsToHeads(args.Bm, Hh).reshape(B, Hh, 1, N);
  const cH = groupsToHeads(args.Cm, Hh).reshape(B, Hh, 1, N);
  const h = dtH.mul(args.A.reshape(Hh, 1, 1)).exp().mul(args.h0).add(dtH.mul(xH).mul(bH)); // [B,Hh,P,N]
  const y = h.mul(cH).sum(-1).add(xH.reshape(B, Hh, P).mul(args.D.reshape(Hh, 1))); // [B,Hh,P]
  return { y: y.reshape(B, 1, Hh, P), hT: h };
}

/** The recurrence applied token by token (T dependent steps): the definition the chunked form is tested against. */
export function ssdSequential(args: SsdArgs): { y: Tensor; hT: Tensor } {
  const d = checkArgs('ssdSequential', args);
  const ys: Tensor[] = [];
  let h = args.h0;
  for (let t = 0; t < d.T; t++) {
    // a token is real when t < valid; as a one-token chunk that is valid - t > 0
    const step = ssdStep({
      ...args,
      x: args.x.slice(1, t, t + 1),
      dt: args.dt.slice(1, t, t + 1),
      Bm: args.Bm.slice(1, t, t + 1),
      Cm: args.Cm.slice(1, t, t + 1),
      h0: h,
      valid: args.valid.sub(t),
    });
    ys.push(step.y);
    h = step.hT;
  }
  return { y: Tensor.concat(ys, 1), hT: h };
}

/**
 * The chunked SSD algorithm (§3.8). Tokens are padded to whole chunks of Q (padded steps have dt = 0, x = 0:
 * decay 1, no input) and heads are split as (group, head-in-group) so B and C are shared without copies.
 * Per chunk c, with cs the inclusive cumsum of a = dt A:
 *   Y_diag[l] = sum_{s<=l} exp(segsum(a))[l,s] (C_l . B_s) dt_s x_s          (a QxQ matmul per head)
 *   S_c       = sum_s exp(cs_last - cs_s) dt_s x_s (x) B_s                    (the chunk's own state)
 *   S_in      = states passed between chunks: exp(segsum over chunk decays) . [h0, S_0, S_1, ...]
 *   Y_off[l]  = exp(cs_l) C_l . S_in(c)
 *   y = Y_diag + Y_off + D x;   final state = S_in(n_chunks).
 * Every step is a batched matmul or an elementwise map; the kernel count does not grow with T.
 */
export function ssdChunked(args: SsdArgs): { y: Tensor; hT: Tensor } {
  const d = checkArgs('ssdChunked', args);
  const { B, T, Hh, P, G, N } = d;
  const R = Hh / G; // heads per group
  const Q = Math.max(1, Math.min(args.chunkSize ?? 64, T));
  const nC = Math.ceil(T / Q);
  const pad = nC * Q - T;
  let { dt, x } = maskPadding(args, d);
  let Bm = args.Bm;
  let Cm = args.Cm;
  if (pad > 0) {
    const zeros = (shape: number[]) => constant(0).broadcastTo(shape);
    dt = Tensor.concat([dt, zeros([B, pad, Hh])], 1);
    x = Tensor.concat([x, zeros([B, pad, Hh, P])], 1);
    Bm = Tensor.concat([Bm, zeros([B, pad, G, N])], 1);
    Cm = Tensor.concat([Cm, zeros([B, pad, G, N])], 1);
  }
  // Chunked layouts, heads as (g, r) with h = g R + r.
  const xc = x.reshape(B, nC, Q, G, R, P).permute(0, 1, 3, 4, 2, 5); // [B,nC,G,R,Q,P]
  const dtc = dt.reshape(B, nC, Q, G, R).permute(0, 1, 3, 4, 2); // [B,nC,G,R,Q]
  const bc = Bm.reshape(B, nC, Q, G, N).permute(0, 1, 3, 2, 4); // [B,nC,G,Q,N]
  const cc = Cm.reshape(B, nC, Q, G, N).permute(0, 1, 3, 2, 4); // [B,nC,G,Q,N]

  const a = dtc.mul(args.A.reshape(G, R, 1)); // [B,nC,G,R,Q]
  const cs = a.cumsum(-1); // [B,nC,G,R,Q]
  const xdt = xc.mul(dtc.unsqueeze(-1)); // [B,nC,G,R,Q,P]

  // Intra-chunk (diagonal blocks).
  const cb = cc.matmul(bc.T).unsqueeze(3); // [B,nC,G,1,Q(l),Q(s)]
  const yDiag = cb.mul(segsum(a).exp()).matmul(xdt); // [B,nC,G,R,Q,P]

  // Each chunk's own end state.
  const csLast = cs.slice(-1, Q - 1); // [B,nC,G,R,1]
  const toEnd = csLast.sub(cs).exp().unsqueeze(-1); // [B,nC,G,R,Q,1]
  const chunkStates = xdt.mul(toEnd).T.matmul(bc.unsqueeze(3)); // [B,nC,G,R,P,N]

  // Inter-chunk state passing: entry z of exp(segsum([0, cs_last(0..nC-1)])) weighs state c into chunk z.
  const h0 = args.h0.reshape(B, 1, G, R, P, N);
  const states = Tensor.concat([h0, chunkStates], 1).permute(0, 2, 3, 1, 4, 5).reshape(B, G, R, nC + 1, P * N);
  const chunkDecay = Tensor.concat([constant(0).broadcastTo([B, G, R, 1]), csLast.reshape(B, nC, G, R).permute(0, 2, 3, 1)], -1); // [B,G,R,nC+1]
  const passed = segsum(chunkDecay).exp().matmul(states); // [B,G,R,nC+1,P*N]
  const stateIn = passed.slice(3, 0, nC).reshape(B, G, R, nC, P, N).permute(0, 3, 1, 2, 4, 5); // [B,nC,G,R,P,N]
  const hT = passed.slice(3, nC).reshape(B, Hh, P, N);

  // Contribution of the state entering each chunk.
  const yOff = cc.unsqueeze(3).matmul(stateIn.T).mul(cs.exp().unsqueeze(-1)); // [B,nC,G,R,Q,P]

  const yc = yDiag.add(yOff).permute(0, 1, 4, 2, 3, 5).reshape(B, nC * Q, Hh, P); // [B,T+pad,Hh,P]
  const y = (pad > 0 ? yc.slice(1, 0, T) : yc).add(x.slice(1, 0, T).mul(args.D.reshape(Hh, 1)));
  return { y, hT };
}

/**
 * The SSD as Mamba-1's selective_scan op (dsl/nn/mamba.ts), once per group of heads: a head's scalar dt and A
 * broadcast over its P channels and N states, the group's B and C shared by its channels, as Mamba-1's are by all.
 * One kernel a group (lower/selectiveScanWideKernel.ts: the recurrence token by token), where ssdChunked is about
 * ten kernels a layer; the same recurrence, so the same result up to f32 rounding.
 */
export function ssdSelective(args: SsdArgs): { y: Tensor; hT: Tensor } {
  const { B, T, Hh, P, G, N } = checkArgs('ssdSelective', args);
  const R = Hh / G; // heads per group
  const ys: Tensor[] = [];
  const hs: Tensor[] = [];
  for (let g = 0; g < G; g++) {
    const heads = (t: Tensor, axis: number) => (G === 1 ? t : t.slice(axis, g * R, (g + 1) * R));
    const group = (t: Tensor) => (G === 1 ? t : t.slice(2, g, g + 1)).reshape(B, T, N);
    const perChannel = (t: Tensor, lead: number[]) => heads(t, lead.length).reshape(...lead, R, 1).broadcastTo([...lead, R, P]).reshape(...lead, R * P);
    const r = selectiveScan({
      x: heads(args.x, 2).reshape(B, T, R * P),
      dt: perChannel(args.dt, [B, T]),
      A: heads(args.A, 0).reshape(R, 1, 1).broadcastTo([R, P, N]).reshape(R * P, N),
      Bm: group(args.Bm),
      Cm: group(args.Cm),
      Dskip: perChannel(args.D, []),
      h0: heads(args.h0, 1).reshape(B, R * P, N),
      valid: args.valid,
    });
    ys.push(r.y.reshape(B, T, R, P));
    hs.push(r.hT.reshape(B, R, P, N));
  }
  return { y: G === 1 ? ys[0]! : Tensor.concat(ys, 2), hT: G === 1 ? hs[0]! : Tensor.concat(hs, 1) };
}

/** SSD over T tokens: the single step for T = 1, else the selective_scan kernel per group (the chunked algorithm with `fused` false). */
export function ssdScan(args: SsdArgs): { y: Tensor; hT: Tensor } {
  if (args.x.shape[1] === 1) return ssdStep(args);
  return args.fused === false ? ssdChunked(args) : ssdSelective(args);
}

/**
 * Gated RMSNorm over `groups` contiguous groups of the last axis (§3.6, §11.4). y, z [..., I], weight [I].
 *   normBeforeGate = false (Mamba2, Bamba, Granite, NemotronH, Zamba2):  w * norm(y * silu(z))
 *   normBeforeGate = true  (Falcon-H1 option, Qwen3-Next GDN):          (w * norm(y)) * silu(z)
 * groups = 1 is one RMS over the full width (HF Mamba2/Bamba/Granite even when n_groups > 1).
 */
export function gatedRmsNorm(y: Tensor, z: Tensor, weight: Tensor | undefined, groups: number, eps: number, normBeforeGate: boolean): Tensor {
  const I = y.shape[y.rank - 1]!;
  if (I % groups !== 0) throw new ShapeError(`[gatedRmsNorm] width ${I} does not split into ${groups} groups`);
  const gate = z.silu();
  const norm = (v: Tensor): Tensor => {
    const grouped = v.reshape(...v.shape.slice(0, -1), groups, I / groups);
    const normed = grouped.mul(grouped.square().mean(-1, true).add(eps).rsqrt()).reshape(...v.shape);
    return weight ? normed.mul(weight) : normed;
  };
  return normBeforeGate ? norm(y).mul(gate) : norm(y.mul(gate));
}

export interface Mamba2Weights {
  inProj: Tensor; // [2 d_mlp + I + convDim + Hh, H]; d_mlp = 0 for every HF checkpoint
  inProjBias?: Tensor;
  convWeight: Tensor; // [convDim, K] (or HF's [convDim, 1, K]); convDim = I + 2 G N
  convBias?: Tensor; // [convDim]
  dtBias: Tensor; // [Hh]
  ALog: Tensor; // [Hh]
  D: Tensor; // [Hh]
  /** Gated RMSNorm weight [I]; absent for Falcon-H1 with mamba_rms_norm = false (then o = y * silu(z)). */
  norm?: Tensor;
  outProj: Tensor; // [H, I]
  outProjBias?: Tensor;
}

export interface Mamba2State {
  /** [B, convDim, K-1], oldest first; with `start`, a ring [B, convDim, K] (slot q % K: position q). */
  conv: Tensor;
  ssm: Tensor; // [B, Hh, P, N]
  /** [B] i32 positions of the step's first tokens: the conv state is a ring (conv.ts causalConv1dRing). */
  start?: Tensor;
}

export interface Mamba2Config {
  numHeads: number;
  headDim: number;
  nGroups: number;
  stateSize: number;
  /** eps of the gated norm (Zamba2 hard-codes 1e-5). */
  eps: number;
  /** Groups of the gated RMSNorm: 1 for Mamba2/Bamba/GraniteMoeHybrid, n_groups for NemotronH/Zamba2/Falcon-H1. */
  normGroups: number;
  /** Falcon-H1's mamba_norm_before_gate; false elsewhere. */
  normBeforeGate?: boolean;
  /** HF time_step_limit (min, max) clamp; default (0, inf), a no-op. */
  timeStepLimit?: [number, number];
  /** NemotronH/Zamba2 torch path: dt = max(dt, time_step_min). */
  timeStepMin?: number;
  /** hidden_act of the conv (silu). */
  activation?: string;
  chunkSize?: number;
  /** false: a one-token step over a ring state emits the ssd_step composition instead of its fused kernel. */
  fusedStep?: boolean;
  /** false: a scan of T > 1 tokens is the chunked SSD algorithm instead of the selective_scan kernel (ssdScan). */
  fusedScan?: boolean;
}

/**
 * The Mamba-2 mixer (Mamba2Mixer.torch_forward and its Bamba/Granite/Falcon-H1/NemotronH/Zamba2 copies):
 * in_proj split [z | xBC | dt] (§3.3), conv + act over xBC, split [x | B | C], dt processing (§3.7), SSD,
 * gated RMSNorm (§3.6), out_proj. hidden [B,T,H], valid [B] i32 -> out [B,T,H] and the new state.
 */
export function mamba2Mixer(hidden: Tensor, w: Mamba2Weights, state: Mamba2State, valid: Tensor, config: Mamba2Config): { out: Tensor; state: Mamba2State } {
  const { numHeads: Hh, headDim: P, nGroups: G, stateSize: N } = config;
  const I = Hh * P;
  const convDim = I + 2 * G * N;
  const total = w.inProj.shape[0]!;
  const dMlp = (total - I - convDim - Hh) / 2;
  if (!Number.isInteger(dMlp) || dMlp < 0)
    throw new ShapeError(`[mamba2Mixer] in_proj has ${total} rows; heads ${Hh} x ${P}, groups ${G} x ${N} need 2*d_mlp + ${I + convDim + Hh}`);
  // HF's torch path splits off 2 d_mlp leading columns and ignores them (always 0 in released checkpoints).
  const zxbcdt = linear(hidden, w.inProj, w.inProjBias);
  const [z, xBC, dtRaw] = (dMlp > 0 ? zxbcdt.slice(-1, 2 * dMlp) : zxbcdt).split(-1, [I, convDim, Hh]) as [Tensor, Tensor, Tensor];
  const scan = mamba2ConvScan(xBC, dtRaw, w, state, valid, config);
  const y = scan.y;
  const o = w.norm ? gatedRmsNorm(y, z, w.norm, config.normGroups, config.eps, config.normBeforeGate ?? false) : y.mul(z.silu());
  return { out: linear(o, w.outProj, w.outProjBias), state: scan.state };
}

/**
 * The mixer between in_proj and the gated norm: conv + act over xBC [B,T,convDim], dt processing (§3.7) of
 * dtRaw [B,T,Hh], SSD -> y [B,T,I] and the new state. A one-token step over a ring state (decode) is the ssd_step
 * op (compiler/ssdStep.ts): one kernel for all of it, its state writes included.
 */
export function mamba2ConvScan(xBC: Tensor, dtRaw: Tensor, w: Pick<Mamba2Weights, 'convWeight' | 'convBias' | 'dtBias' | 'ALog' | 'D'>, state: Mamba2State, valid: Tensor, config: Mamba2Config): { y: Tensor; state: Mamba2State } {
  const [B, T] = xBC.shape as [number, number, number];
  const { numHeads: Hh, headDim: P, nGroups: G, stateSize: N } = config;
  const I = Hh * P;
  const [lo, hi] = config.timeStepLimit ?? [0, Infinity];
  const A = w.ALog.exp().neg();
  if (state.start && T === 1 && (config.activation ?? 'silu') === 'silu' && config.timeStepMin === undefined) {
    const C = xBC.shape[2]!;
    const K = w.convWeight.shape[w.convWeight.rank - 1]!;
    const inputs = [xBC.reshape(B, C), dtRaw.reshape(B, Hh), state.conv, state.ssm, w.convWeight.reshape(C, K), w.convBias ?? constant(0).broadcastTo([C]), w.dtBias, A, w.D, state.start, valid].map((t) => t.node);
    const part = (p: 'y' | 'ssm' | 'conv') => {
      const attrs = { part: p, dtMin: lo, dtMax: hi };
      return new Tensor(config.fusedStep === false ? OPS.ssd_step.decompose(composer, inputs, attrs) : composer.emit('ssd_step', inputs, attrs));
    };
    return { y: part('y').reshape(B, 1, I), state: { conv: part('conv'), ssm: part('ssm'), start: state.start } };
  }
  const conv = state.start ? causalConv1dRing(xBC, state.conv, w.convWeight, w.convBias, valid, state.start) : causalConv1d(xBC, state.conv, w.convWeight, w.convBias, valid);
  const [x, Bm, Cm] = activate(conv.y, config.activation ?? 'silu').split(-1, [I, G * N, G * N]) as [Tensor, Tensor, Tensor];
  let dt = dtRaw.add(w.dtBias).softplus();
  if (lo > 0) dt = dt.maximum(lo);
  if (hi < Infinity) dt = dt.minimum(hi);
  if (config.timeStepMin !== undefined) dt = dt.maximum(config.timeStepMin);
  const scan = ssdScan({
    x: x.reshape(B, T, Hh, P),
    dt,
    A,
    Bm: Bm.reshape(B, T, G, N),
    Cm: Cm.reshape(B, T, G, N),
    D: w.D,
    h0: state.ssm,
    valid,
    chunkSize: config.chunkSize,
    fused: config.fusedScan,
  });
  return { y: scan.y.reshape(B, T, I), state: { conv: conv.newState, ssm: scan.hT, ...(state.start ? { start: state.start } : {}) } };
}
