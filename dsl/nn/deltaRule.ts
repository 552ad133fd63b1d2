// The gated delta rule of Gated DeltaNet (Qwen3-Next linear attention, hybrid-architectures.md §11.4): the
// recurrent definition (HF torch_recurrent_gated_delta_rule; the decode path at T = 1) and the chunked WY form
// (HF torch_chunk_gated_delta_rule). Pure functions: the caller passes S0 in and gets the new state back.
import { ShapeError } from '../../compiler/ops.ts';
import { Tensor } from '../tensor.ts';
import { constant, iota } from '../trace.ts';
import { validMask } from './conv.ts';

/** HF's l2norm: x * rsqrt(sum(x^2) + eps) over the last axis (eps inside the root of the sum, not the mean). */
export function l2norm(x: Tensor, eps = 1e-6): Tensor {
  return x.mul(x.square().sum(-1, true).add(eps).rsqrt());
}

/** repeat_interleave over the heads axis: [B,T,Hk,D] -> [B,T,Hk*r,D], head h reading key head h // r. */
export function repeatHeads(x: Tensor, r: number): Tensor {
  if (r === 1) return x;
  const [B, T, H, D] = x.shape as [number, number, number, number];
  return x.reshape(B, T, H, 1, D).broadcastTo([B, T, H, r, D]).reshape(B, T, H * r, D);
}

export interface DeltaRuleArgs {
  q: Tensor; // [B,T,H,Dk]
  k: Tensor; // [B,T,H,Dk]
  v: Tensor; // [B,T,H,Dv]
  g: Tensor; // [B,T,H] log decay (<= 0): -exp(A_log) * softplus(a + dt_bias)
  beta: Tensor; // [B,T,H] sigmoid(b)
  S0: Tensor; // [B,H,Dk,Dv]
  valid: Tensor; // [B] i32: tokens t >= valid[b] are padding and leave the state unchanged
  /** l2-normalise q and k first (HF use_qk_l2norm_in_kernel; Qwen3-Next passes true). Default true. */
  useQkL2Norm?: boolean;
  /** Chunk length of the chunked form (HF: 64). */
  chunkSize?: number;
}

interface Prepared {
  B: number;
  T: number;
  H: number;
  Dk: number;
  Dv: number;
  q: Tensor; // [B,H,T,Dk], l2-normalised if asked and scaled by Dk^-1/2
  k: Tensor; // [B,H,T,Dk]
  v: Tensor; // [B,H,T,Dv]
  g: Tensor; // [B,H,T], 0 on padded steps
  beta: Tensor; // [B,H,T], 0 on padded steps
}

/** Shape checks, padding masks, q/k normalisation and q scaling, head-major layouts: shared by both forms. */
function prepare(op: string, a: DeltaRuleArgs): Prepared {
  const [B, T, H, Dk] = a.q.shape as [number, number, number, number];
  const Dv = a.v.shape[3]!;
  for (const [name, t, want] of [
    ['k', a.k, [B, T, H, Dk]],
    ['v', a.v, [B, T, H, Dv]],
    ['g', a.g, [B, T, H]],
    ['beta', a.beta, [B, T, H]],
    ['S0', a.S0, [B, H, Dk, Dv]],
    ['valid', a.valid, [B]],
  ] as const)
    if (t.shape.join() !== want.join()) throw new ShapeError(`[${op}] ${name} (${t.shape.join(',')}) must be (${want.join(',')}) for q (${B},${T},${H},${Dk})`);
  // Padded steps: g = 0 (decay 1) and beta = 0 (no write) leave S unchanged; k, v zeroed so garbage cannot leak.
  const real = validMask(a.valid, B, T).reshape(B, T, 1);
  const real4 = real.reshape(B, T, 1, 1);
  let q = a.q;
  let k = Tensor.where(real4, a.k, 0);
  if (a.useQkL2Norm ?? true) {
    q = l2norm(q);
    k = l2norm(k);
  }
  q = q.mul(1 / Math.sqrt(Dk));
  const headMajor = (x: Tensor) => x.permute(0, 2, 1, 3);
  return {
    B, T, H, Dk, Dv,
    q: headMajor(q),
    k: headMajor(k),
    v: headMajor(Tensor.where(real4, a.v, 0)),
    g: Tensor.where(real, a.g, 0).permute(0, 2, 1),
    beta: Tensor.where(real, a.beta, 0).permute(0, 2, 1),
  };
}

/**
 * The recurrence, one traced step per token (T is small and static; T = 1 is decode):
 *   S <- S exp(g_t);  m = S^T k_t;  delta = beta_t (v_t - m);  S <- S + k_t (x) delta;  o_t = S^T q_t.
 * Returns o [B,T,H,Dv] and the final state [B,H,Dk,Dv].
 */
export function gatedDeltaRule(args: DeltaRuleArgs): { o: Tensor; ST: Tensor } {
  const p = prepare('gatedDeltaRule', args);
  const { B, T, H, Dk, Dv } = p;
  let S = args.S0; // [B,H,Dk,Dv]
  const outs: Tensor[] = [];
  for (let t = 0; t < T; t++) {
    const qt = p.q.slice(2, t, t + 1); // [B,H,1,Dk]
    const kt = p.k.slice(2, t, t + 1); // [B,H,1,Dk]
    const vt = p.v.slice(2, t, t + 1); // [B,H,1,Dv]
    const decayed = S.mul(p.g.slice(2, t, t + 1).exp().reshape(B, H, 1, 1));
    const delta = vt.sub(kt.matmul(decayed)).mul(p.beta.slice(2, t, t + 1).reshape(B, H, 1, 1)); // [B,H,1,Dv]
    S = decayed.add(kt.reshape(B, H, Dk, 1).mul(delta)); // [B,H,Dk,Dv]
    outs.push(qt.matmul(S)); // [B,H,1,Dv]
  }
  const o = Tensor.concat(outs, 2).permute(0, 2, 1, 3); // [B,T,H,Dv]
  void Dv;
  return { o, ST: S };
}

/** (I - L)^-1 for strictly lower-triangular L [..., Q, Q]: L is nilpotent, so the inverse is the product of
 *  (I + L^(2^j)) for 2^j < Q — log2(Q) squarings instead of Q dependent row updates. */
function unitLowerInverse(L: Tensor): Tensor {
  const Q = L.shape[L.rank - 1]!;
  const eye = iota([Q, Q], 0).eq(iota([Q, Q], 1));
  const identity = Tensor.where(eye, 1, 0);
  let inverse = identity.add(L);
  let power = L;
  for (let span = 2; span < Q; span *= 2) {
    power = power.matmul(power);
    inverse = inverse.add(inverse.matmul(power));
  }
  return inverse;
}

/**
 * The chunked (WY / UT-transform) form of HF's torch_chunk_gated_delta_rule: within a chunk of Q tokens the Q
 * rank-one updates collapse into matmuls, chunks pass the state sequentially. Mathematically identical to
 * gatedDeltaRule; HF's forward substitution over rows is replaced by the nilpotent-product inverse above.
 */
export function gatedDeltaRuleChunked(args: DeltaRuleArgs): { o: Tensor; ST: Tensor } {
  const p = prepare('gatedDeltaRuleChunked', args);
  const { B, T, H, Dk, Dv } = p;
  const Q = Math.max(1, Math.min(args.chunkSize ?? 64, T));
  const nC = Math.ceil(T / Q);
  const pad = nC * Q - T;
  const padT = (x: Tensor) => (pad > 0 ? Tensor.concat([x, constant(0).broadcastTo([...x.shape.slice(0, 2), pad, ...x.shape.slice(3)])], 2) : x);
  const chunked = (x: Tensor) => padT(x).reshape(B, H, nC, Q, ...x.shape.slice(3)); // [B,H,nC,Q,...]
  const q = chunked(p.q); // [B,H,nC,Q,Dk]
  const k = chunked(p.k);
  const v = chunked(p.v); // [B,H,nC,Q,Dv]
  const beta = chunked(p.beta).unsqueeze(-1); // [B,H,nC,Q,1]
  const g = chunked(p.g).cumsum(-1); // [B,H,nC,Q] decay within the chunk
  const kBeta = k.mul(beta);
  const vBeta = v.mul(beta);

  const row = iota([Q, Q], 0);
  const col = iota([Q, Q], 1);
  // decay[i,j] = exp(g_i - g_j) for j <= i, else 0 (exponent masked first so it cannot overflow)
  const decay = Tensor.where(row.ge(col), g.unsqueeze(-1).sub(g.unsqueeze(-2)), -Infinity).exp(); // [B,H,nC,Q,Q]
  const strictLower = Tensor.where(row.gt(col), kBeta.matmul(k.T).mul(decay).neg(), 0);
  const wy = unitLowerInverse(strictLower); // [B,H,nC,Q,Q]
  const u = wy.matmul(vBeta); // [B,H,nC,Q,Dv]
  const w = wy.matmul(kBeta.mul(g.exp().unsqueeze(-1))); // [B,H,nC,Q,Dk]
  const intra = Tensor.where(row.ge(col), q.matmul(k.T).mul(decay), 0); // [B,H,nC,Q,Q]

  let S = args.S0; // [B,H,Dk,Dv]
  const outs: Tensor[] = [];
  for (let c = 0; c < nC; c++) {
    const at = (x: Tensor) => x.slice(2, c, c + 1).squeeze(2);
    const [qc, kc, gc] = [at(q), at(k), at(g)]; // [B,H,Q,Dk] [B,H,Q,Dk] [B,H,Q]
    const vNew = at(u).sub(at(w).matmul(S)); // [B,H,Q,Dv]
    outs.push(qc.mul(gc.exp().unsqueeze(-1)).matmul(S).add(at(intra).matmul(vNew)));
    const gLast = gc.slice(-1, Q - 1); // [B,H,1]
    S = S.mul(gLast.exp().unsqueeze(-1)).add(kc.mul(gLast.sub(gc).exp().unsqueeze(-1)).T.matmul(vNew));
  }
  const o = Tensor.concat(outs, 2).slice(2, 0, T).permute(0, 2, 1, 3); // [B,T,H,Dv]
  void Dk;
  void Dv;
  return { o, ST: S };
}
