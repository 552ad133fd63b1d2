// The Mamba-1 decode step kernel (the `selective_step` op, compiler/selectiveStep.ts): dt_proj, the SSM update and
// the gated read-out of a few channels per workgroup, and, when passes/absorbStateWrites.ts hands it the step's
// state scatter, the new SSM state written in place.
import type { Node } from '../ir.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { wgslLiteral } from '../ops.ts';
import { selectiveStepDims } from '../selectiveStep.ts';
import { CHANNEL_LANES_WG, channelLanes } from './channelLanes.ts';
import { Emitter, type LoweredKernel, assemble, finish } from './emitter.ts';

/** Threads of a workgroup (16 channels of 8 lanes, or 8 of 16 at Mamba's N = 16). */
const WG = CHANNEL_LANES_WG;

/** The state version the kernel writes in place (a scatter of this step's `ssm` part at the slot ids). */
export interface SelectiveStepWrites {
  ssm?: Node;
}

/**
 * One workgroup per (sequence, CW channels), L = nextPow2(N) lanes per channel, lane n owning state element n.
 * Round 1: each lane adds its strided share of channel d's dt_proj dot product (lanes read adjacent weights) and of
 * the squares that Jamba's dt/B/C norms need, and the L partial sums of each meet in workgroup memory (every lane
 * then sums its channel's L entries itself: no second barrier). Then each lane updates its state element (read and
 * written by the same thread) and round 2 sums C . h, which lane 0 finishes into y = (C . h + D x) silu(z).
 * The norms are recomputed per channel from sums of R + 2N values: cheaper than a workgroup-wide round.
 */
export function lowerSelectiveStep(root: Node, isMat: (n: Node) => boolean, writes: SelectiveStepWrites = {}): LoweredKernel {
  const [x, z, dtLow, Bm, Cm, h0, dtW, dtBias, A, Dskip, valid, dtNorm, bNorm, cNorm] = root.inputs as Node[];
  const { part, eps } = (root as Node<'selective_step'>).attrs;
  const { S, D, R, N, normed } = selectiveStepDims(root.inputs);
  const e = new Emitter(root, isMat, 'selstep');
  const f = (v: number) => wgslLiteral(v, 'f32');
  const ssmOut = writes.ssm ?? (part === 'ssm' ? root : undefined);
  const { L, CW, groups, seq: s, first, d, n } = channelLanes(e, S, D, N);

  // this lane's loads first, so that they are in flight with round 1's (a barrier would hold them back)
  /** The kernel's named f32 values and elements of its workgroup arrays. */
  const named = (name: string) => K.v(name, 'f32');
  const wgArray = (name: string, i: KExpr, type: 'f32' | 'vec4<f32>' = 'f32') => K.load(name, i, WG, type);
  const [zero, real, okN] = [V.lit(0, 'f32'), K.v('real', 'bool'), K.v('ok_n', 'bool')];
  const validS = e.value(valid, [s]);
  e.line(`let real = ${V.compare('>', validS, V.lit(0, validS.type))};`);
  e.line(`let xv = ${V.select(zero, e.value(x, [s, d]), real)};`);
  e.line(`let dt_bias = ${e.value(dtBias, [d])};`);
  e.line(`let a_dn = ${e.value(A, [d, n])};`);
  e.line(`let h_old = ${e.value(h0, [s, d, n])};`);
  const normOf = (w: Node | undefined) => (w ? V.arith('*', V.lit(1, 'f32'), e.value(w, [n])) : V.lit(1, 'f32'));
  e.line(`let bw = ${normOf(bNorm)};`);
  e.line(`let cw = ${normOf(cNorm)};`);

  // round 1: dt_proj's dot product and the squares of dtLow, B and C, in strided shares of the lanes
  const trip = e.fresh('k');
  const r = e.bound('sr', R - 1);
  const share = e.nested(() => {
    e.line(`let u = ${e.value(dtLow, [s, r])};`);
    const u = named('u');
    const weight = e.value(dtW, [d, r]);
    e.line(`dt_dot = ${V.arith('+', named('dt_dot'), V.arith('*', normed ? V.arith('*', weight, e.value(dtNorm!, [r])) : weight, u))};`);
    e.line(`dt_sq = ${V.arith('+', named('dt_sq'), V.arith('*', u, u))};`);
  });
  e.line(`var dt_dot: f32 = 0.0;`);
  e.line(`var dt_sq: f32 = 0.0;`);
  e.line(`for (var ${trip}: u32 = 0u; ${trip} < ${Math.ceil(R / L)}u; ${trip}++) {`);
  e.line(`  let sr = ${V.arith('+', K.v('lane'), V.arith('*', K.v(trip), K.u32(L)))};`);
  e.line(`  if (sr >= ${R}u) { break; }`);
  share.forEach((l) => e.line('  ' + l));
  e.line(`}`);
  e.line(`let bv = ${V.select(zero, e.value(Bm, [s, n]), okN)};`);
  e.line(`let cv = ${V.select(zero, e.value(Cm, [s, n]), okN)};`);
  const [bv, cv] = [named('bv'), named('cv')];
  e.line(`sel_red4[lid] = ${V.vector([named('dt_dot'), named('dt_sq'), V.arith('*', bv, bv), V.arith('*', cv, cv)])};`);
  e.line(`workgroupBarrier();`);
  e.line(`var tot = vec4<f32>(0.0);`);
  const j = e.fresh('k');
  const tot = K.v('tot', 'vec4<f32>');
  const lid = K.v('lid');
  e.line(`for (var ${j}: u32 = 0u; ${j} < ${L}u; ${j}++) { tot = ${V.arith('+', tot, wgArray('sel_red4', V.arith('+', V.arith('-', lid, K.v('lane')), K.v(j)), 'vec4<f32>'))}; }`);

  // the state element of this lane
  const rms = (x: KExpr, sum: 'y' | 'z' | 'w', width: number) =>
    normed ? V.arith('*', x, V.fn('inverseSqrt', [V.arith('+', V.arith('/', V.field(tot, sum), f(width)), f(eps))])) : x;
  const dt = named('dt');
  e.line(`let dt = ${V.select(zero, V.fn('strata_softplus', [V.arith('+', rms(V.field(tot, 'x'), 'y', R), named('dt_bias'))]), real)};`);
  e.line(`let bn = ${V.arith('*', rms(bv, 'z', N), named('bw'))};`);
  e.line(`let cn = ${V.arith('*', rms(cv, 'w', N), named('cw'))};`);
  e.line(`let hv = ${V.arith('+', V.arith('*', V.fn('exp', [V.arith('*', dt, named('a_dn'))]), named('h_old')), V.arith('*', V.arith('*', dt, named('xv')), named('bn')))};`);
  const hv = named('hv');
  if (writes.ssm) {
    e.line(`let ssm_row = u32(${e.value(writes.ssm.inputs[1]!, [s])});`);
    e.line(`if (ok_ch && ok_n && ssm_row < ${writes.ssm.shape[0]}u) { @B${writes.ssm.id}@[(ssm_row * ${D}u + ch) * ${N}u + sn] = hv; }`);
  } else if (ssmOut) e.line(`if (ok_ch && ok_n) { ${e.store(root, e.ix.add(e.ix.mul(e.ix.add(e.ix.mul(s, D), d), N), n), hv)} }`);

  // round 2: y = C . h + D x, gated, by lane 0 of each channel
  if (part === 'y') {
    e.line(`sel_red[lid] = ${V.select(zero, V.arith('*', named('cn'), hv), okN)};`);
    e.line(`workgroupBarrier();`);
    const k = e.fresh('k');
    const out = e.nested(() => {
      const [y, zv] = [named('y'), named('zv')];
      e.line(`var y = ${V.arith('*', e.value(Dskip, [d]), named('xv'))};`);
      e.line(`for (var ${k}: u32 = 0u; ${k} < ${L}u; ${k}++) { y = ${V.arith('+', y, wgArray('sel_red', V.arith('+', lid, K.v(k))))}; }`);
      e.line(`let zv = ${e.value(z, [s, d])};`);
      e.line(e.store(root, e.ix.add(e.ix.mul(s, D), d), V.arith('*', V.arith('*', y, zv), V.fn('strata_sigmoid', [zv]))));
    });
    e.line(`if (ok_ch && lane == 0u) {`);
    out.forEach((l) => e.line('  ' + l));
    e.line(`}`);
  }
  const shared = [`var<workgroup> sel_red4: array<vec4<f32>, ${WG}>;`, ...(part === 'y' ? [`var<workgroup> sel_red: array<f32, ${WG}>;`] : [])];
  const k = finish(e, 'selstep', assemble(e, e.topLines(), WG, shared), groups);
  return writes.ssm ? { ...k, alsoWrites: [writes.ssm] } : k;
}
