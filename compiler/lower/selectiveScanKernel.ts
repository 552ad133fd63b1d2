// The Mamba-1 selective scan kernel (the `selective_scan` op, compiler/selectiveScan.ts): the recurrence run token by
// token, as Mamba's CUDA selective_scan does, parallel over sequences, channels and state lanes; when
// passes/absorbStateWrites.ts hands it the scan's state scatter, the final state written in place.
import type { Node } from '../ir.ts';
import { selectiveScanDims } from '../selectiveScan.ts';
import { Emitter, type LoweredKernel, assemble, finish, nextPow2 } from './emitter.ts';

/** Threads of a workgroup (8 channels of 16 lanes at Mamba's N = 16). */
const WG = 128;

/** The state version the kernel writes in place (a scatter of the scan's `ssm` part at the slot ids). */
export interface SelectiveScanWrites {
  ssm?: Node;
}

/**
 * One workgroup per (sequence, CW channels), L = nextPow2(N) lanes per channel, lane n owning state element n in a
 * register for the whole scan. Tokens go in rounds of TC = WG / CW: each step of a round updates h and leaves
 * C_t[n] h[n] in workgroup memory; after the round one barrier, then every thread sums the L lanes of one
 * (token, channel) into y = C . h + D x (TC x CW = WG outputs, one a thread), and a second barrier before the next
 * round reuses the memory. Two barriers per TC tokens instead of a reduction per token. Rows of the products are
 * padded to L + 1 floats so that neither the lanes' writes nor the summing threads' reads share banks.
 */
export function lowerSelectiveScan(root: Node, isMat: (n: Node) => boolean, writes: SelectiveScanWrites = {}): LoweredKernel {
  const [x, dt, A, Bm, Cm, Dskip, h0, valid] = root.inputs as Node[];
  const { part } = (root as Node<'selective_scan'>).attrs;
  const { B, T, D, N } = selectiveScanDims(root.inputs);
  const e = new Emitter(root, isMat, 'selscan');
  const L = Math.min(WG, nextPow2(N));
  const CW = WG / L; // channels a workgroup
  const TC = WG / CW; // tokens a round
  const row = L + 1; // padded row of one channel's products
  const perSeq = Math.ceil(D / CW);
  const groups = B * perSeq;
  const rounds = Math.ceil(T / TC);
  e.workgroupSize = WG;
  const ssmOut = writes.ssm ?? (part === 'ssm' ? root : undefined);

  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const gi = e.bound('gi', groups - 1);
  const b = e.declareTop('o0', e.ix.div(gi, perSeq));
  const first = e.declareTop('o1', e.ix.mul(e.ix.mod(gi, perSeq), CW));
  e.line(`let lane = lid % ${L}u;`);
  e.line(`let ok_ch = ${first} + lid / ${L}u < ${D}u;`);
  const d = e.bound('ch', D - 1);
  e.line(`let ch = min(${first} + lid / ${L}u, ${D - 1}u);`);
  const n = e.bound('sn', N - 1);
  e.line(`let sn = min(lane, ${N - 1}u);`);
  e.line(`let ok_n = lane < ${N}u;`);
  e.line(`let n_valid = ${e.value(valid, [b])};`);
  e.line(`let a_dn = ${e.value(A, [d, n])};`);
  e.line(`var h = ${e.value(h0, [b, d, n])};`);

  // one step: padded tokens (t >= valid) have dt = 0 and x = 0, so h passes through
  const round = e.fresh('k');
  const j = e.fresh('k');
  const t = e.bound('tok', T - 1);
  const step = e.nested(() => {
    e.line(`let real = i32(tok) < n_valid;`);
    e.line(`let dtv = select(0.0, ${e.value(dt, [b, t, d])}, real);`);
    e.line(`let xv = select(0.0, ${e.value(x, [b, t, d])}, real);`);
    e.line(`h = exp(dtv * a_dn) * h + dtv * xv * ${e.value(Bm, [b, t, n])};`);
    if (part === 'y') e.line(`sel_ch[${j} * ${CW * row}u + (lid / ${L}u) * ${row}u + lane] = select(0.0, ${e.value(Cm, [b, t, n])} * h, ok_n);`);
  });
  // after a round: thread lid finishes token lid / CW of channel lid % CW
  const tk = e.fresh('k');
  const ot = e.bound('out_tok', T - 1);
  const oc = e.bound('out_ch', D - 1);
  const out = part !== 'y' ? [] : e.nested(() => {
    e.line(`let out_real = i32(out_tok) < n_valid;`);
    e.line(`var y = ${e.value(Dskip, [oc])} * select(0.0, ${e.value(x, [b, ot, oc])}, out_real);`);
    e.line(`for (var ${tk}: u32 = 0u; ${tk} < ${L}u; ${tk}++) { y = y + sel_ch[(lid / ${CW}u) * ${CW * row}u + (lid % ${CW}u) * ${row}u + ${tk}]; }`);
    e.line(e.store(root, e.ix.add(e.ix.mul(e.ix.add(e.ix.mul(b, T), ot), D), oc), 'y'));
  });

  e.line(`for (var ${round}: u32 = 0u; ${round} < ${rounds}u; ${round}++) {`);
  e.line(`  for (var ${j}: u32 = 0u; ${j} < ${TC}u; ${j}++) {`);
  e.line(`    let tok = ${round} * ${TC}u + ${j};`);
  e.line(`    if (tok >= ${T}u) { break; }`);
  step.forEach((l) => e.line('    ' + l));
  e.line(`  }`);
  if (part === 'y') {
    e.line(`  workgroupBarrier();`);
    e.line(`  let out_at = ${round} * ${TC}u + lid / ${CW}u;`);
    e.line(`  let out_tok = min(out_at, ${T - 1}u);`);
    e.line(`  let out_ch = min(${first} + lid % ${CW}u, ${D - 1}u);`);
    e.line(`  if (out_at < ${T}u && ${first} + lid % ${CW}u < ${D}u) {`);
    out.forEach((l) => e.line('    ' + l));
    e.line(`  }`);
    e.line(`  workgroupBarrier();`);
  }
  e.line(`}`);

  if (writes.ssm) {
    e.line(`let ssm_row = u32(${e.value(writes.ssm.inputs[1]!, [b])});`);
    e.line(`if (ok_ch && ok_n && ssm_row < ${writes.ssm.shape[0]}u) { @B${writes.ssm.id}@[(ssm_row * ${D}u + ch) * ${N}u + sn] = h; }`);
  } else if (ssmOut) e.line(`if (ok_ch && ok_n) { ${e.store(root, e.ix.add(e.ix.mul(e.ix.add(e.ix.mul(b, D), d), N), n), 'h')} }`);

  const shared = part === 'y' ? [`var<workgroup> sel_ch: array<f32, ${TC * CW * row}>;`] : [];
  const k = finish(e, 'selscan', assemble(e, e.topLines(), WG, shared), groups);
  return writes.ssm ? { ...k, alsoWrites: [writes.ssm] } : k;
}
