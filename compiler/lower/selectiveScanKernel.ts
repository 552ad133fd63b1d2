// The Mamba-1 selective scan kernel (the `selective_scan` op, compiler/selectiveScan.ts): the recurrence run token by
// token, as Mamba's CUDA selective_scan does, parallel over sequences, channels and state lanes; when
// passes/absorbStateWrites.ts hands it the scan's state scatter, the final state written in place.
import type { Node } from '../ir.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { selectiveScanDims } from '../selectiveScan.ts';
import { CHANNEL_LANES_WG, channelLanes } from './channelLanes.ts';
import { Emitter, type LoweredKernel, assemble, finish } from './emitter.ts';
import { stageScanInputs } from './scanStaging.ts';
import { lowerSelectiveScanWide } from './selectiveScanWideKernel.ts';

/** Threads of a workgroup (8 channels of 16 lanes at Mamba's N = 16). */
const WG = CHANNEL_LANES_WG;
/** States a channel up to which a lane owns one (larger states, Mamba-2's: lower/selectiveScanWideKernel.ts). */
const WIDE_FROM = 16;

/** The state version the kernel writes in place (a scatter of the scan's `ssm` part at the slot ids). */
export interface SelectiveScanWrites {
  ssm?: Node;
}

/**
 * One workgroup per (sequence, CW channels), L = nextPow2(N) lanes per channel, lane n owning state element n in a
 * register for the whole scan. Tokens go in rounds of TC = WG / CW (16 at N = 16): the round's dt, x, B and C are
 * staged in workgroup memory; after a barrier each step updates h and leaves C_t[n] h[n] in workgroup memory; after
 * a second barrier every thread sums the L lanes of one (token, channel) into y = C . h + D x (TC x CW = WG
 * outputs, one a thread). The next round's staging cannot overwrite what a slower thread still reads: a thread
 * reads back only its own staged x, and the steps' products are read before the next round's first barrier. Rows
 * of the products are padded to L + 1 floats so that neither the lanes' writes nor the summing threads' reads share
 * banks. Workgroup memory grows as N^2 (about 12 KB at N = 16): meant for Mamba's N = 16.
 */
export function lowerSelectiveScan(root: Node, isMat: (n: Node) => boolean, writes: SelectiveScanWrites = {}): LoweredKernel {
  const [, , A, , , Dskip, h0, valid] = root.inputs as Node[];
  const { part } = (root as Node<'selective_scan'>).attrs;
  const { B, T, D, N } = selectiveScanDims(root.inputs);
  if (N > WIDE_FROM) return lowerSelectiveScanWide(root, isMat, writes);
  const e = new Emitter(root, isMat, 'selscan');
  const ssmOut = writes.ssm ?? (part === 'ssm' ? root : undefined);
  const { L, CW, groups, seq: b, first, d, n } = channelLanes(e, B, D, N);
  const TC = WG / CW; // tokens a round
  const row = L + 1; // padded row of one channel's products
  const rounds = Math.ceil(T / TC);
  /** The kernel's named f32 values and elements of its workgroup arrays. */
  const named = (name: string) => K.v(name, 'f32');
  const wgArray = (name: string, i: KExpr, length: number) => K.load(name, i, length, 'f32');
  const [zero, lid, u] = [V.lit(0, 'f32'), K.v('lid'), K.u32];
  e.line(`let n_valid = ${e.value(valid, [b])};`);
  e.line(`let a_dn = ${e.value(A, [d, n])};`);
  e.line(`var h = ${e.value(h0, [b, d, n])};`);

  // a round's inputs (dt and x of (token lid / CW, channel lid % CW), B and C of (token e / N, state e % N) in
  // strided trips), staged in workgroup memory
  const { round, oc, ot, stageDx, stageBcTrips } = stageScanInputs(e, root, b);
  // after a round: thread lid finishes token lid / CW of channel lid % CW
  const tk = e.fresh('k');
  const out = part !== 'y' ? [] : e.nested(() => {
    e.line(`var y = ${V.arith('*', e.value(Dskip, [oc]), wgArray('sel_x', lid, WG))};`);
    const product = V.arith('+', V.arith('+', V.arith('*', V.arith('/', lid, u(CW)), u(CW * row)), V.arith('*', V.arith('%', lid, u(CW)), u(row))), K.v(tk));
    e.line(`for (var ${tk}: u32 = 0u; ${tk} < ${L}u; ${tk}++) { y = ${V.arith('+', named('y'), wgArray('sel_ch', product, TC * CW * row))}; }`);
    e.line(e.store(root, e.ix.add(e.ix.mul(e.ix.add(e.ix.mul(b, T), ot), D), oc), named('y')));
  });

  const j = e.fresh('k');
  // the round's first token; thread lid's input channel (it stages token lid / CW of channel lid % CW)
  const roundStart = V.arith('*', K.v(round), u(TC));
  const inCh = V.arith('+', first, V.arith('%', lid, u(CW)));
  e.line(`let cw = ${V.arith('/', lid, u(L))};`);
  e.line(`for (var ${round}: u32 = 0u; ${round} < ${rounds}u; ${round}++) {`);
  e.line(`  let in_at = ${V.arith('+', roundStart, V.arith('/', lid, u(CW)))};`);
  e.line(`  let in_tok = ${V.fn('min', [K.v('in_at'), u(T - 1)])};`);
  e.line(`  let in_ch = ${V.fn('min', [inCh, u(D - 1)])};`);
  stageDx.forEach((l) => e.line('  ' + l));
  stageBcTrips(TC, WG).forEach((l) => e.line('  ' + l));
  e.line(`  workgroupBarrier();`);
  // the round's steps: padded tokens were staged with dt = 0 and x = 0, so h passes through them
  e.line(`  for (var ${j}: u32 = 0u; ${j} < ${TC}u; ${j}++) {`);
  e.line(`    if (${V.compare('>=', V.arith('+', roundStart, K.v(j)), u(T))}) { break; }`);
  const [jv, cw, sn, h, dtv] = [K.v(j), K.v('cw'), K.v('sn'), named('h'), named('dtv')];
  const stepAt = V.arith('+', V.arith('*', jv, u(CW)), cw);
  const stateAt = V.arith('+', V.arith('*', jv, u(N)), sn);
  e.line(`    let dtv = ${wgArray('sel_dt', stepAt, WG)};`);
  e.line(`    h = ${V.arith('+', V.arith('*', V.fn('exp', [V.arith('*', dtv, named('a_dn'))]), h), V.arith('*', V.arith('*', dtv, wgArray('sel_x', stepAt, WG)), wgArray('sel_b', stateAt, TC * N)))};`);
  if (part === 'y') e.line(`    sel_ch[${V.arith('+', V.arith('+', V.arith('*', jv, u(CW * row)), V.arith('*', cw, u(row))), K.v('lane'))}] = ${V.select(zero, V.arith('*', wgArray('sel_c', stateAt, TC * N), h), K.v('ok_n', 'bool'))};`);
  e.line(`  }`);
  e.line(`  workgroupBarrier();`);
  if (part === 'y') {
    e.line(`  if (${V.logic('&&', V.compare('<', K.v('in_at'), u(T)), V.compare('<', inCh, u(D)))}) {`);
    out.forEach((l) => e.line('    ' + l));
    e.line(`  }`);
  }
  e.line(`}`);

  if (writes.ssm) {
    e.line(`let ssm_row = u32(${e.value(writes.ssm.inputs[1]!, [b])});`);
    e.line(`if (ok_ch && ok_n && ssm_row < ${writes.ssm.shape[0]}u) { @B${writes.ssm.id}@[${V.arith('+', V.arith('*', V.arith('+', V.arith('*', K.v('ssm_row'), u(D)), K.v('ch')), u(N)), sn)}] = h; }`);
  } else if (ssmOut) e.line(`if (ok_ch && ok_n) { ${e.store(root, e.ix.add(e.ix.mul(e.ix.add(e.ix.mul(b, D), d), N), n), named('h'))} }`);

  const shared = [
    `var<workgroup> sel_dt: array<f32, ${WG}>;`,
    `var<workgroup> sel_x: array<f32, ${WG}>;`,
    `var<workgroup> sel_b: array<f32, ${TC * N}>;`,
    ...(part === 'y' ? [`var<workgroup> sel_c: array<f32, ${TC * N}>;`, `var<workgroup> sel_ch: array<f32, ${TC * CW * row}>;`] : []),
  ];
  const k = finish(e, 'selscan', assemble(e, e.topLines(), WG, shared), groups);
  return writes.ssm ? { ...k, alsoWrites: [writes.ssm] } : k;
}
