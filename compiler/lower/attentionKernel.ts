// The fused attention kernel template (see dsl/nn/attention.ts for the op and its composition).
import type { Node } from '../ir.ts';
import { numel } from '../ir.ts';
import { delinearize, wgslIndex } from '../indexAlgebra.ts';
import { wgslLiteral } from '../ops.ts';
import { Emitter, type LoweredKernel, assemble, finish } from './emitter.ts';

/**
 * Fused attention, one workgroup per query row: each thread walks its share of the keys below the row's limit
 * (a tiled variant, one key per thread with the softmax in shared memory, measured 150 us against this kernel's
 * 50 us per decode call of llama-400m on an H100, so it was dropped)
 * (read from the device, so the cost follows the real length, not the capacity) with an online softmax, then
 * the workgroup merges the partial maxima, sums and value accumulators in shared memory.
 */
export function lowerAttention(root: Node, isMat: (n: Node) => boolean): LoweredKernel {
  const [q, kT, v, mask, limit] = root.inputs as [Node, Node, Node, Node, Node];
  const { scale, softcap } = (root as Node<'attention'>).attrs;
  const e = new Emitter(root, isMat, 'attention');
  const r = root.shape.length;
  const Dv = root.shape[r - 1]!;
  const D = q.shape[r - 1]!;
  const E = kT.shape[r - 1]!;
  const rows = numel(root.shape) / Dv;
  const wg = Math.max(8, Math.min(64, 1 << Math.floor(Math.log2(4096 / Dv))));
  // loop indices named like the emitter's own (k<n>), so its index naming and hoisting checks see them
  const [kd, kc, kv] = [e.fresh('k'), e.fresh('k'), e.fresh('k')];
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${rows}u) { return; }`);
  const outer = delinearize(wgslIndex, 'gi', root.shape.slice(0, -1)).map((s, d) => e.declareTop(`o${d}`, s));
  const batch = outer.slice(0, -1);
  const m = outer[outer.length - 1]!;
  // the query row, once, into registers
  e.line(`var qv: array<f32, ${D}>;`);
  const qLoad = e.nested(() => e.line(`qv[${kd}] = ${e.value(q, [...batch, m, kd])};`));
  e.line(`for (var ${kd}: u32 = 0u; ${kd} < ${D}u; ${kd}++) {`);
  qLoad.forEach((l) => e.line('  ' + l));
  e.line('}');
  const lim = e.value(limit, [...batch, m]);
  e.line(`let lim = min(${E}u, u32(max(${lim}, 0)));`);
  e.line(`var mi: f32 = -3.0e38;`);
  e.line(`var li: f32 = 0.0;`);
  e.line(`var acc: array<f32, ${Dv}>;`);
  const body = e.nested(() => {
    const ok = e.value(mask, [...batch, m, kc]);
    e.line(`if (!${ok}) { continue; }`);
    e.line(`var sc: f32 = 0.0;`);
    const dot = e.nested(() => e.line(`sc = sc + qv[${kd}] * ${e.value(kT, [...batch, kd, kc])};`));
    e.line(`for (var ${kd}: u32 = 0u; ${kd} < ${D}u; ${kd}++) {`);
    dot.forEach((l) => e.line('  ' + l));
    e.line('}');
    e.line(`sc = sc * ${wgslLiteral(scale, 'f32')};`);
    if (softcap) e.line(`sc = strata_tanh(sc / ${wgslLiteral(softcap, 'f32')}) * ${wgslLiteral(softcap, 'f32')};`);
    e.line(`let mn = max(mi, sc);`);
    e.line(`let corr = exp(mi - mn);`);
    e.line(`let p = exp(sc - mn);`);
    e.line(`li = li * corr + p;`);
    e.line(`mi = mn;`);
    const acc = e.nested(() => e.line(`acc[${kv}] = acc[${kv}] * corr + p * ${e.value(v, [...batch, kc, kv])};`));
    e.line(`for (var ${kv}: u32 = 0u; ${kv} < ${Dv}u; ${kv}++) {`);
    acc.forEach((l) => e.line('  ' + l));
    e.line('}');
  });
  e.line(`for (var ${kc}: u32 = lid; ${kc} < lim; ${kc} += WG) {`);
  body.forEach((l) => e.line('  ' + l));
  e.line('}');
  const out = `@B${root.id}@`;
  [
    `att_m[lid] = mi;`,
    `workgroupBarrier();`,
    `for (var s: u32 = WG / 2u; s > 0u; s >>= 1u) { if (lid < s) { att_m[lid] = max(att_m[lid], att_m[lid + s]); } workgroupBarrier(); }`,
    `let gm = att_m[0];`,
    `let own = select(0.0, exp(mi - gm), li > 0.0);`,
    `workgroupBarrier();`,
    `att_m[lid] = li * own;`,
    `workgroupBarrier();`,
    `for (var s: u32 = WG / 2u; s > 0u; s >>= 1u) { if (lid < s) { att_m[lid] = att_m[lid] + att_m[lid + s]; } workgroupBarrier(); }`,
    `let gl = att_m[0];`,
    `for (var kv: u32 = 0u; kv < ${Dv}u; kv++) { att_acc[lid * ${Dv}u + kv] = acc[kv] * own; }`,
    `workgroupBarrier();`,
    `for (var kv: u32 = lid; kv < ${Dv}u; kv += WG) {`,
    `  var total: f32 = 0.0;`,
    `  for (var t: u32 = 0u; t < WG; t++) { total = total + att_acc[t * ${Dv}u + kv]; }`,
    `  ${out}[gi * ${Dv}u + kv] = select(0.0, total / gl, gl > 0.0);`,
    `}`,
  ].forEach((l) => e.line(l));
  const body2 = assemble(e, e.topLines(), wg).replace(
    `@compute`,
    `var<workgroup> att_m: array<f32, ${wg}>;\nvar<workgroup> att_acc: array<f32, ${wg * Dv}>;\n@compute`,
  );
  return finish(e, 'attention', body2, wg, rows);
}

