// The selective scan kernels' staged rounds (lower/selectiveScanKernel.ts, N <= 16; selectiveScanWideKernel.ts,
// larger states): what a thread stores of a round's inputs in workgroup memory.
import type { Node } from '../ir.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { selectiveScanDims } from '../selectiveScan.ts';
import type { Emitter } from './emitter.ts';

/**
 * A round's inputs, staged in workgroup memory by all threads at once (one memory latency a round, not one a token,
 * and inlined producers such as the conv, dt's softplus or Jamba's B/C norms evaluated once an element, not per
 * lane): `stageDx` stores dt and x of (token in_tok, channel in_ch) at sel_dt[lid] and sel_x[lid], zero past the
 * sequence's real tokens (n_valid); `stageBcTrips` B and C of a round's tokens at sel_b and sel_c. The kernel's text
 * names those variables and the round's loop variable `round`.
 */
export function stageScanInputs(e: Emitter, root: Node, b: KExpr): { round: string; oc: KExpr; ot: KExpr; stageDx: string[]; stageBcTrips: (TC: number, wg: number) => string[] } {
  const [x, dt, , Bm, Cm] = root.inputs as Node[];
  const { part } = (root as Node<'selective_scan'>).attrs;
  const { T, D, N } = selectiveScanDims(root.inputs);
  const zero = V.lit(0, 'f32');
  const round = e.fresh('k');
  const ot = e.bound('in_tok', T - 1);
  const oc = e.bound('in_ch', D - 1);
  const stageDx = e.nested(() => {
    e.line(`let in_real = ${V.compare('<', V.cast('i32', ot), K.v('n_valid', 'i32'))};`);
    const inReal = K.v('in_real', 'bool');
    e.line(`sel_dt[lid] = ${V.select(zero, e.value(dt!, [b, ot, oc]), inReal)};`);
    e.line(`sel_x[lid] = ${V.select(zero, e.value(x!, [b, ot, oc]), inReal)};`);
  });
  const bcTrip = e.fresh('k');
  const bt = e.bound('bc_tok', T - 1);
  const bn = e.bound('bc_n', N - 1);
  const stageBc = e.nested(() => {
    e.line(`sel_b[bc_at] = ${e.value(Bm!, [b, bt, bn])};`);
    if (part === 'y') e.line(`sel_c[bc_at] = ${e.value(Cm!, [b, bt, bn])};`);
  });
  // the B and C loads of a round of TC tokens, in strided trips of the workgroup's threads
  const stageBcTrips = (TC: number, wg: number): string[] => [
    `for (var ${bcTrip}: u32 = 0u; ${bcTrip} < ${Math.ceil((TC * N) / wg)}u; ${bcTrip}++) {`,
    `  let bc_at = ${V.arith('+', K.v('lid'), V.arith('*', K.v(bcTrip), K.u32(wg)))};`,
    `  if (bc_at >= ${TC * N}u) { break; }`,
    `  let bc_tok = ${V.fn('min', [V.arith('+', V.arith('*', K.v(round), K.u32(TC)), V.arith('/', K.v('bc_at'), K.u32(N))), K.u32(T - 1)])};`,
    `  let bc_n = ${V.arith('%', K.v('bc_at'), K.u32(N))};`,
    ...stageBc.map((l) => '  ' + l),
    `}`,
  ];
  return { round, oc, ot, stageDx, stageBcTrips };
}
