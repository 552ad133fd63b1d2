// The fused attention kernel template (see dsl/nn/attention.ts for the op and its composition).
import type { Node } from '../ir.ts';
import { numel } from '../ir.ts';
import { delinearize } from '../indexAlgebra.ts';
import { wgslLiteral } from '../ops.ts';
import { Emitter, type LoweredKernel, assemble, finish } from './emitter.ts';

/** Threads of a key group: each scores one key, then owns value dimensions lane, lane + 32, ... */
const LANES = 32;
/** Key groups of a workgroup: they walk disjoint keys in parallel, each with its own online softmax. */
const GROUPS = 8;
const WG = LANES * GROUPS;
/** Key elements whose loads are written out together in the score loop. */
const UNROLL_D = 16;
/** Keys whose value loads are written out together in the p * v loop. */
const UNROLL_KEYS = 8;

/** Query rows that share a workgroup (and every key load): the largest of 4, 3, 2, 1 dividing the row count. */
export function attentionRowsPerGroup(m: number): number {
  return [4, 3, 2, 1].find((r) => m % r === 0)!;
}

/**
 * Fused attention with keys split inside the workgroup. A workgroup takes R neighbouring query rows of one batch
 * index (in decode the G query heads of a KV head, in prefill neighbouring tokens), so each key is loaded once for
 * R rows. Its 256 threads form 8 groups of 32; per round the workgroup covers 256 keys below the rows' largest
 * limit (read from the device, so the cost follows the real length), each thread scoring one key against the R
 * queries (held in shared memory). Each group keeps its own running max and sum per row over the keys it saw
 * (online softmax), and its lanes accumulate p * v for their value dimensions with loads contiguous along the
 * dimension. At the end the groups' partial results are rescaled to the common maximum and added.
 *
 * Why: the earlier kernel (one workgroup per query row, keys in tiles of 128 walked one tile after another) spent
 * its time in the serial chain of tiles: 22 us per decode call of llama-400m at 128 positions on an H200, and at
 * 128 prefill rows 1.9 ms per call. Splitting keys across groups shortens the chain by 8 and sharing rows cuts
 * the loads by R.
 */
export function lowerAttention(root: Node, isMat: (n: Node) => boolean, subgroups = false): LoweredKernel {
  const [q, kT, v, mask, limit] = root.inputs as [Node, Node, Node, Node, Node];
  const { scale, softcap } = (root as Node<'attention'>).attrs;
  const e = new Emitter(root, isMat, 'attention', subgroups);
  e.workgroupSize = WG;
  const r = root.shape.length;
  const Dv = root.shape[r - 1]!;
  const M = root.shape[r - 2]!;
  const D = q.shape[r - 1]!;
  const E = kT.shape[r - 1]!;
  const rows = numel(root.shape) / Dv;
  const R = attentionRowsPerGroup(M);
  const DL = Math.ceil(Dv / LANES); // value dimensions per lane
  const groups = rows / R;
  const f = (x: number) => wgslLiteral(x, 'f32');
  const rs = Array.from({ length: R }, (_, i) => i);
  const js = Array.from({ length: DL }, (_, i) => i);

  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  e.bound('gi', groups - 1);
  e.declareTop('rb', `gi * ${R}u`);
  const outer = delinearize(e.ix, 'rb', root.shape.slice(0, -1)).map((s, d) => e.declareTop(`o${d}`, s));
  const batch = outer.slice(0, -1);
  const m0 = outer[outer.length - 1]!;
  const mr = rs.map((i) => (i === 0 ? m0 : e.declareTop(`o${outer.length + i - 1}`, `${m0} + ${i}u`)));
  // the query rows, computed once (their prologue, e.g. RoPE, runs once per element) into shared memory
  const kd = e.bound(e.fresh('k'), D - 1);
  const qLoad = e.nested(() => rs.forEach((i) => e.line(`att_q[${i * D}u + ${kd}] = ${e.value(q, [...batch, mr[i]!, kd])};`)));
  e.line(`for (var ${kd}: u32 = lid; ${kd} < ${D}u; ${kd} += WG) {`);
  qLoad.forEach((l) => e.line('  ' + l));
  e.line('}');
  rs.forEach((i) => e.line(`let lim_${i} = min(${E}u, u32(max(${e.value(limit, [...batch, mr[i]!])}, 0)));`));
  // the round loop holds barriers: its bound must be uniform, which a value read through workgroup memory is
  e.line(`if (lid == 0u) { att_lim = ${rs.map((i) => `lim_${i}`).reduce((a, b) => `max(${a}, ${b})`)}; }`);
  e.line(`let lim = workgroupUniformLoad(&att_lim);`);
  e.line(`let grp = lid / ${LANES}u;`);
  e.line(`let lane = lid % ${LANES}u;`);
  for (const i of rs) {
    e.line(`var rmax_${i}: f32 = -3.0e38;`);
    e.line(`var rsum_${i}: f32 = 0.0;`);
    for (const j of js) e.line(`var acc_${i}_${j}: f32 = 0.0;`);
  }
  // this thread's key: scores against every row, one load of each key element serving all rows
  const kc = e.bound(e.fresh('k'), E - 1);
  const score = e.nested(() => {
    rs.forEach((i) => e.line(`var sc_${i}: f32 = -3.0e38;`));
    e.line(`if (t0 + lid < lim) {`);
    rs.forEach((i) => e.line(`  var dot_${i}: f32 = 0.0;`));
    const chunk = Math.min(UNROLL_D, D);
    const kd0 = e.bound(e.fresh('k'), D % chunk === 0 ? D - chunk : D - 1); // it steps by chunk
    const dot = e.nested(() => {
      for (let u = 0; u < chunk; u++) {
        const k = e.bound(e.ix.add(kd0, `${u}u`), D - 1);
        const at = D % chunk === 0 ? k : `min(${k}, ${D - 1}u)`;
        const key = e.value(kT, [...batch, at, kc]);
        const w = D % chunk === 0 ? key : e.fresh('v');
        if (w !== key) e.line(`let ${w} = ${key} * select(0.0, 1.0, ${k} < ${D}u);`);
        rs.forEach((i) => e.line(`dot_${i} = dot_${i} + att_q[${i * D}u + ${at}] * ${w};`));
      }
    });
    e.line(`  for (var ${kd0}: u32 = 0u; ${kd0} < ${D}u; ${kd0} += ${chunk}u) {`);
    dot.forEach((l) => e.line('    ' + l));
    e.line(`  }`);
    for (const i of rs) {
      e.line(`  if (t0 + lid < lim_${i} && ${e.value(mask, [...batch, mr[i]!, kc])}) {`);
      e.line(`    sc_${i} = dot_${i} * ${f(scale)};`);
      if (softcap) e.line(`    sc_${i} = strata_tanh(sc_${i} / ${f(softcap)}) * ${f(softcap)};`);
      e.line(`  }`);
    }
    e.line(`}`);
  });
  // p * v over the group's keys, UNROLL_KEYS a trip with their value loads in flight together
  const u0 = e.fresh('k');
  const pv = e.nested(() => {
    for (let u = 0; u < UNROLL_KEYS; u++) {
      const key = e.bound(`min(t0 + grp * ${LANES}u + ${u0} + ${u}u, ${E - 1}u)`, E - 1);
      for (const j of js) {
        const dim = e.bound(Dv % LANES === 0 ? (j === 0 ? 'lane' : `(lane + ${j * LANES}u)`) : `min(lane + ${j * LANES}u, ${Dv - 1}u)`, Dv - 1);
        const w = e.fresh('v');
        e.line(`let ${w} = ${e.value(v, [...batch, key, dim])};`);
        for (const i of rs) {
          const p = `att_p[${i * WG}u + grp * ${LANES}u + ${u0} + ${u}u]`;
          e.line(`acc_${i}_${j} = acc_${i}_${j} + ${p} * ${w};`);
          if (j === 0) e.line(`rsum_${i} = rsum_${i} + ${p};`);
        }
      }
    }
  });
  e.line(`for (var t0: u32 = 0u; t0 < lim; t0 += WG) {`);
  e.line(`  let ${kc} = min(t0 + lid, ${E - 1}u);`);
  score.forEach((l) => e.line('  ' + l));
  rs.forEach((i) => e.line(`  att_s[${i * WG}u + lid] = sc_${i};`));
  e.line(`  workgroupBarrier();`);
  // every lane of a group folds the group's scores into the group's running max (the same value in each lane)
  for (const i of rs) {
    e.line(`  var tmax_${i}: f32 = -3.0e38;`);
    e.line(`  for (var s: u32 = 0u; s < ${LANES}u; s++) { tmax_${i} = max(tmax_${i}, att_s[${i * WG}u + grp * ${LANES}u + s]); }`);
    e.line(`  let nmax_${i} = max(rmax_${i}, tmax_${i});`);
    e.line(`  let corr_${i} = exp(rmax_${i} - nmax_${i});`);
    e.line(`  rmax_${i} = nmax_${i};`);
    e.line(`  rsum_${i} = rsum_${i} * corr_${i};`);
    for (const j of js) e.line(`  acc_${i}_${j} = acc_${i}_${j} * corr_${i};`);
    e.line(`  att_p[${i * WG}u + lid] = select(0.0, exp(sc_${i} - nmax_${i}), sc_${i} > -1.0e38);`);
  }
  e.line(`  workgroupBarrier();`);
  e.line(`  for (var ${u0}: u32 = 0u; ${u0} < ${LANES}u; ${u0} += ${UNROLL_KEYS}u) {`);
  pv.forEach((l) => e.line('    ' + l));
  e.line(`  }`);
  e.line(`}`);
  // the groups' partials, rescaled to the row's common maximum and added (one value dimension per lane a pass)
  const out = `@B${root.id}@`;
  e.line(`if (lane == 0u) {`);
  rs.forEach((i) => e.line(`  att_m[grp * ${R}u + ${i}u] = rmax_${i};`));
  rs.forEach((i) => e.line(`  att_l[grp * ${R}u + ${i}u] = rsum_${i};`));
  e.line(`}`);
  for (const j of js) {
    rs.forEach((i) => e.line(`att_s[${i * WG}u + lid] = acc_${i}_${j};`));
    e.line(`workgroupBarrier();`);
    e.line(`if (lid < ${R * LANES}u && lane + ${j * LANES}u < ${Dv}u) {`);
    e.line(`  let row = lid / ${LANES}u;`);
    e.line(`  var top: f32 = -3.0e38;`);
    e.line(`  for (var g: u32 = 0u; g < ${GROUPS}u; g++) { top = max(top, att_m[g * ${R}u + row]); }`);
    e.line(`  var num: f32 = 0.0;`);
    e.line(`  var den: f32 = 0.0;`);
    e.line(`  for (var g: u32 = 0u; g < ${GROUPS}u; g++) {`);
    e.line(`    let w = exp(att_m[g * ${R}u + row] - top);`);
    e.line(`    num = num + w * att_s[row * ${WG}u + g * ${LANES}u + lane];`);
    e.line(`    den = den + w * att_l[g * ${R}u + row];`);
    e.line(`  }`);
    e.line(`  ${out}[(rb + row) * ${Dv}u + lane + ${j * LANES}u] = select(0.0, num / den, den > 0.0);`);
    e.line(`}`);
    e.line(`workgroupBarrier();`);
  }
  const shared = [
    `var<workgroup> att_lim: u32;`,
    `var<workgroup> att_q: array<f32, ${R * D}>;`,
    `var<workgroup> att_s: array<f32, ${R * WG}>;`,
    `var<workgroup> att_p: array<f32, ${R * WG}>;`,
    `var<workgroup> att_m: array<f32, ${R * GROUPS}>;`,
    `var<workgroup> att_l: array<f32, ${R * GROUPS}>;`,
  ];
  return finish(e, 'attention', assemble(e, e.topLines(), WG, shared), groups);
}
