// The decode attention kernel's projection prologue (DeviceLimits.attentionProjection, passes/planProjections.ts):
// the workgroup computes its q row and its KV head's k and v rows of the step's token into workgroup memory, writes
// the k and v cache rows it will read, and from then on value(matmul, idx) reads workgroup memory.
import { type Node, numel } from '../ir.ts';
import { delinearize, linearize } from '../indexAlgebra.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import type { AttentionProjection } from '../passes/planProjections.ts';
import type { Emitter } from './emitter.ts';

/** Lanes that share one projected row's K loop (a warp reads 4 rows' 32-byte runs of 16-bit weights at once). */
const LANES = 8;

/** Workgroup floats the prologue declares beside the attention's own arrays. */
export const projectionFloats = (p: AttentionProjection, wg: number): number => reduceOf(p) + p.matmuls.reduce((a, m) => a + m.width, 0) + wg;
const reduceOf = (p: AttentionProjection) => p.left.shape[p.left.shape.length - 1]!;

/**
 * Emits the prologue at the kernel's top level after `gi` (the workgroup's row) is declared; returns its
 * workgroup declarations. Order: the left operand's row staged in workgroup memory (its norm as the emitter's
 * phases), a barrier, each matmul's rows (LANES lanes a row, WG / LANES rows at once), a barrier, the cache
 * writes, and a storage barrier so the workgroup's reads of the caches see its own writes. Every workgroup of a
 * KV head computes the same k and v values (the same code on the same data) and writes them to the same places.
 */
export function emitProjection(e: Emitter, p: AttentionProjection, gi: KExpr, wg: number, subgroups: boolean): string[] {
  const stride = 1 + p.matmuls.length + p.scatters.length;
  const Kd = reduceOf(p);
  const entry = (i: number, max: number, name: string) => e.declareTop(name, e.ix.min(K.wgsl(`proj_tab[${gi} * ${stride}u + ${i}u]`, 'u32'), max));
  const rowMax = numel(p.left.shape) / Kd - 1;
  const row = entry(0, rowMax, 'prow');
  p.matmuls.forEach((m, j) => entry(1 + j, m.node.shape[m.node.shape.length - 1]! - m.width, `pc${j}`));
  p.scatters.forEach((s, j) => entry(1 + p.matmuls.length + j, numel(s.node.inputs[2]!.shape) - s.elements, `ps${j}`));
  const lead = delinearize(e.ix, row, p.left.shape.slice(0, -1)).map((s, d) => e.declareTop(`pl${d}`, s));
  // the left operand's row: its reductions (the norm's mean) become phases placed before the staging loop
  e.cooperative = true;
  const kx = e.bound('pk', Kd - 1);
  const staging = e.nested(() => e.line(`proj_x[pk] = ${e.value(p.left, [...lead, kx])};`));
  e.cooperative = false;
  e.phases.forEach((l) => e.line(l));
  e.line(`for (var pk: u32 = lid; pk < ${Kd}u; pk += WG) {`);
  staging.forEach((l) => e.line('  ' + l));
  e.line(`}`);
  e.line(`workgroupBarrier();`);
  const rowsAtOnce = wg / LANES;
  e.line(`let pj_lane = lid % ${LANES}u;`);
  e.line(`let pj_row = lid / ${LANES}u;`);
  const sharedDots = !subgroups;
  p.matmuls.forEach((m, j) => {
    const N = m.width;
    const w = m.weight;
    const storage = w.op === 'weight' ? (w as Node<'weight'>).attrs.storage : 'f32';
    e.line(`for (var r0: u32 = 0u; r0 < ${N}u; r0 += ${rowsAtOnce}u) {`);
    e.line(`  let pr = min(r0 + pj_row, ${N - 1}u);`);
    e.line(`  let pn${j} = pc${j} + pr;`);
    e.line(`  var pacc: f32 = 0.0;`);
    const n = e.bound(`pn${j}`, w.shape[0]! - 1);
    const kk = e.bound(`pq${j}`, Kd - 2);
    const body = e.nested(() => {
      if (storage === 'f16') {
        e.line(`let pw = unpack2x16float(${e.buffer(w)}[(pn${j} * ${Kd}u + pq${j}) >> 1u]);`);
        e.line(`pacc = pacc + proj_x[pq${j}] * pw.x + proj_x[pq${j} + 1u] * pw.y;`);
      } else {
        const a = e.load(w, [n, kk]);
        const b = e.load(w, [n, e.ix.add(kk, e.ix.lit(1))]);
        e.line(`pacc = pacc + proj_x[pq${j}] * ${a} + proj_x[pq${j} + 1u] * ${b};`);
      }
    });
    e.line(`  for (var pq${j}: u32 = pj_lane * 2u; pq${j} < ${Kd}u; pq${j} += ${2 * LANES}u) {`);
    body.forEach((l) => e.line('    ' + l));
    e.line(`  }`);
    const shuffles = [1, 2, 4].map((x) => `pacc = pacc + subgroupShuffleXor(pacc, ${x}u);`);
    const shared = [`proj_s[lid] = pacc;`, `workgroupBarrier();`, `pacc = ${[...Array(LANES).keys()].map((l) => `proj_s[pj_row * ${LANES}u + ${l}u]`).join(' + ')};`, `workgroupBarrier();`];
    if (sharedDots) shared.forEach((l) => e.line('  ' + l));
    else {
      // subgroup_size is uniform: the barriers of the other branch stay legal
      e.line(`  if (sg_size >= ${LANES}u) {`);
      shuffles.forEach((l) => e.line('    ' + l));
      e.line(`  } else {`);
      shared.forEach((l) => e.line('    ' + l));
      e.line(`  }`);
    }
    e.line(`  if (pj_lane == 0u && r0 + pj_row < ${N}u) { proj${j}[pr] = pacc; }`);
    e.line(`}`);
    // from here on the matmul's value is read from workgroup memory (its row is the workgroup's by the plan)
    e.mapValue(m.node, (idx) => K.wgsl(`proj${j}[${idx[idx.length - 1]} - pc${j}]`, 'f32'));
  });
  e.line(`workgroupBarrier();`);
  p.scatters.forEach((s, j) => {
    const [target, indices, values] = s.node.inputs as [Node, Node, Node];
    // generated names (k<n>), so that expressions of them stay inside the loop
    const elem = e.fresh('k');
    const rowName = e.fresh('k');
    const t = e.bound(elem, numel(values.shape) - 1);
    const body = e.nested(() => {
      const vIdx = delinearize(e.ix, t, values.shape).map((x) => e.indexVar(x));
      const rowIdx = e.value(indices, vIdx.slice(0, indices.shape.length));
      e.line(`let ${rowName} = u32(${rowIdx});`);
      const v = e.value(values, vIdx);
      const guarded = e.bound(rowName, target.shape[0]! - 1); // rows out of range are not written
      const offset = linearize(e.ix, [guarded, ...vIdx.slice(indices.shape.length)], target.shape);
      e.line(`if (${rowName} < ${target.shape[0]}u) { ${e.store(s.node, offset, v)} }`);
    });
    e.line(`for (var pi: u32 = lid; pi < ${s.elements}u; pi += WG) {`);
    e.line(`  let ${elem} = ps${j} + pi;`);
    body.forEach((l) => e.line('  ' + l));
    e.line(`}`);
  });
  e.line(`storageBarrier(); // the workgroup's cache rows are written`);
  return [
    `const proj_tab = array<u32, ${p.table.length}>(${p.table.map((x) => `${x}u`).join(', ')});`,
    `var<workgroup> proj_x: array<f32, ${Kd}>;`,
    ...p.matmuls.map((m, j) => `var<workgroup> proj${j}: array<f32, ${m.width}>;`),
    `var<workgroup> proj_s: array<f32, ${wg}>;`,
  ];
}
