// The selective scan kernel for large states (N > 16: Mamba-2's prefill, 64-256 states a channel, as the
// `selective_scan` op per group, dsl/nn/mamba2.ts): the recurrence token by token, as lower/selectiveScanKernel.ts
// runs it for Mamba-1's N = 16, but each lane owning several state elements, so that a workgroup holds whole
// channels and a round of tokens fits 16 KiB of workgroup memory.
import type { Node } from '../ir.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { selectiveScanDims } from '../selectiveScan.ts';
import { CHANNEL_LANES_WG, channelLanes } from './channelLanes.ts';
import { Emitter, type LoweredKernel, assemble, finish } from './emitter.ts';
import { stageScanInputs } from './scanStaging.ts';

/** Threads of a workgroup (channelLanes.ts), lanes of a channel (channels a workgroup: WG / LANES). */
const WG = CHANNEL_LANES_WG;
const LANES = 16;
/** Workgroup memory a round of tokens may take (WebGPU's default limit). */
const ROUND_BYTES = 16384;

/**
 * One workgroup per (sequence, CW = 8 channels), LANES lanes a channel, lane l owning state elements l, l + 16, ...
 * (E = N / 16 of them, in registers for the whole scan). Tokens go in rounds of TC (8 at N = 128): the round's dt
 * and x (TC x CW) and B and C (TC x N) are staged in workgroup memory; after a barrier each step updates the lane's
 * elements and leaves its share of C_t . h in workgroup memory; after a second barrier TC x CW threads each add the
 * LANES shares of one (token, channel) into y = C . h + D x. Padded tokens were staged with dt = 0 and x = 0, so the
 * state passes through them.
 */
export function lowerSelectiveScanWide(root: Node, isMat: (n: Node) => boolean, writes: { ssm?: Node } = {}): LoweredKernel {
  const [, , A, , , Dskip, h0, valid] = root.inputs as Node[];
  const { part } = (root as Node<'selective_scan'>).attrs;
  const { B, T, D, N } = selectiveScanDims(root.inputs);
  const e = new Emitter(root, isMat, 'selscan');
  const ssmOut = writes.ssm ?? (part === 'ssm' ? root : undefined);
  const { CW, groups, seq: b, first, d: ch } = channelLanes(e, B, D, N, LANES);
  const E = Math.ceil(N / LANES);
  const row = LANES + 1; // padded row of one (token, channel)'s shares
  const perToken = 4 * (2 * CW + 2 * N + CW * row);
  const TC = Math.max(1, Math.min(WG / CW, 2 ** Math.floor(Math.log2(ROUND_BYTES / perToken)), T));
  const rounds = Math.ceil(T / TC);
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const named = (name: string) => K.v(name, 'f32');
  const wgArray = (name: string, i: KExpr, length: number) => K.load(name, i, length, 'f32');
  const [zero, lid, u] = [V.lit(0, 'f32'), K.v('lid'), K.u32];

  e.line(`let cw = ${V.arith('/', lid, u(LANES))};`);
  e.line(`let n_valid = ${e.value(valid, [b])};`);
  // the lane's state elements: index, whether it exists, A and the state
  for (const j of range(E)) {
    const sn = e.bound(`sn${j}`, N - 1);
    const element = V.arith('+', K.v('lane'), u(j * LANES)); // the lane's state element j
    e.line(`let sn${j} = ${V.fn('min', [element, u(N - 1)])};`);
    e.line(`let ok${j} = ${V.compare('<', element, u(N))};`);
    e.line(`let a${j} = ${e.value(A, [ch, sn])};`);
    e.line(`var h${j} = ${e.value(h0, [b, ch, sn])};`);
  }

  // a round's inputs (dt and x of (token lid / CW, channel lid % CW), B and C of (token e / N, state e % N) in
  // strided trips), staged in workgroup memory
  const { round, oc, ot, stageDx, stageBcTrips } = stageScanInputs(e, root, b);
  // after a round: thread lid < TC x CW finishes token lid / CW of channel lid % CW
  const tk = e.fresh('k');
  const out = part !== 'y' ? [] : e.nested(() => {
    e.line(`var y = ${V.arith('*', e.value(Dskip, [oc]), wgArray('sel_x', lid, TC * CW))};`);
    e.line(`for (var ${tk}: u32 = 0u; ${tk} < ${LANES}u; ${tk}++) { y = ${V.arith('+', named('y'), wgArray('sel_ch', V.arith('+', V.arith('*', lid, u(row)), K.v(tk)), TC * CW * row))}; }`);
    e.line(e.store(root, e.ix.add(e.ix.mul(e.ix.add(e.ix.mul(b, T), ot), D), oc), named('y')));
  });

  const j = e.fresh('k');
  // the round's first token; thread lid's input channel (it stages token lid / CW of channel lid % CW)
  const roundStart = V.arith('*', K.v(round), u(TC));
  const inCh = V.arith('+', first, V.arith('%', lid, u(CW)));
  e.line(`for (var ${round}: u32 = 0u; ${round} < ${rounds}u; ${round}++) {`);
  e.line(`  let in_at = ${V.arith('+', roundStart, V.arith('/', lid, u(CW)))};`);
  e.line(`  let in_tok = ${V.fn('min', [K.v('in_at'), u(T - 1)])};`);
  e.line(`  let in_ch = ${V.fn('min', [inCh, u(D - 1)])};`);
  e.line(`  if (lid < ${TC * CW}u) {`);
  stageDx.forEach((l) => e.line('    ' + l));
  e.line(`  }`);
  stageBcTrips(TC, WG).forEach((l) => e.line('  ' + l));
  e.line(`  workgroupBarrier();`);
  e.line(`  for (var ${j}: u32 = 0u; ${j} < ${TC}u; ${j}++) {`);
  e.line(`    if (${V.compare('>=', V.arith('+', roundStart, K.v(j)), u(T))}) { break; }`);
  const [jv, cw] = [K.v(j), K.v('cw')];
  const stepAt = V.arith('+', V.arith('*', jv, u(CW)), cw);
  e.line(`    let dtv = ${wgArray('sel_dt', stepAt, TC * CW)};`);
  e.line(`    let dxv = ${V.arith('*', named('dtv'), wgArray('sel_x', stepAt, TC * CW))};`);
  e.line(`    var share: f32 = 0.0;`);
  for (const k of range(E)) {
    const stateAt = V.arith('+', V.arith('*', jv, u(N)), K.v(`sn${k}`));
    const h = named(`h${k}`);
    e.line(`    h${k} = ${V.arith('+', V.arith('*', V.fn('exp', [V.arith('*', named('dtv'), named(`a${k}`))]), h), V.arith('*', named('dxv'), wgArray('sel_b', stateAt, TC * N)))};`);
    if (part === 'y') e.line(`    share = ${V.arith('+', named('share'), V.select(zero, V.arith('*', wgArray('sel_c', stateAt, TC * N), h), K.v(`ok${k}`, 'bool')))};`);
  }
  if (part === 'y') e.line(`    sel_ch[${V.arith('+', V.arith('*', stepAt, u(row)), K.v('lane'))}] = share;`);
  e.line(`  }`);
  e.line(`  workgroupBarrier();`);
  if (part === 'y') {
    e.line(`  if (${V.logic('&&', V.logic('&&', V.compare('<', lid, u(TC * CW)), V.compare('<', K.v('in_at'), u(T))), V.compare('<', inCh, u(D)))}) {`);
    out.forEach((l) => e.line('    ' + l));
    e.line(`  }`);
  }
  e.line(`}`);

  for (const k of range(E)) {
    const ok = `ok_ch && ok${k}`;
    if (writes.ssm) {
      if (k === 0) e.line(`let ssm_row = u32(${e.value(writes.ssm.inputs[1]!, [b])});`);
      e.line(`if (${ok} && ssm_row < ${writes.ssm.shape[0]}u) { @B${writes.ssm.id}@[${V.arith('+', V.arith('*', V.arith('+', V.arith('*', K.v('ssm_row'), u(D)), ch), u(N)), K.v(`sn${k}`))}] = h${k}; }`);
    } else if (ssmOut) e.line(`if (${ok}) { ${e.store(root, e.ix.add(e.ix.mul(e.ix.add(e.ix.mul(b, D), ch), N), e.bound(`sn${k}`, N - 1)), named(`h${k}`))} }`);
  }

  const shared = [
    `var<workgroup> sel_dt: array<f32, ${TC * CW}>;`,
    `var<workgroup> sel_x: array<f32, ${TC * CW}>;`,
    `var<workgroup> sel_b: array<f32, ${TC * N}>;`,
    ...(part === 'y' ? [`var<workgroup> sel_c: array<f32, ${TC * N}>;`, `var<workgroup> sel_ch: array<f32, ${TC * CW * row}>;`] : []),
  ];
  const k = finish(e, 'selscan', assemble(e, e.topLines(), WG, shared), groups);
  return writes.ssm ? { ...k, alsoWrites: [writes.ssm] } : k;
}
