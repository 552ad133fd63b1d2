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

/** Workgroup floats the prologue declares beside the attention's own arrays (its lanes' sums reuse red_f32). */
export const projectionFloats = (p: AttentionProjection): number => reduceOf(p) + p.matmuls.reduce((a, m) => a + m.width, 0);
const reduceOf = (p: AttentionProjection) => p.left.shape[p.left.shape.length - 1]!;

/**
 * Emits the prologue at the kernel's top level after `gi` (the workgroup's row) is declared; returns its
 * workgroup declarations. Order: the left operand's row staged in workgroup memory (its norm as the emitter's
 * phases), a barrier, the matmuls' rows (LANES lanes a row, every row of a thread at once), a barrier, the cache
 * writes, and a storage barrier so the workgroup's reads of the caches see its own writes. Every workgroup of a
 * KV head computes the same k and v values (the same code on the same data) and writes them to the same places.
 */
export function emitProjection(e: Emitter, p: AttentionProjection, gi: KExpr, wg: number, subgroups: boolean, unroll: boolean): string[] {
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
  // thread (row, lane) takes rows row, row + WG / LANES, ... of every matmul at once: all its accumulators' weight
  // loads of a K step are in flight together, and one reduction round serves them all
  const rowsAtOnce = wg / LANES;
  e.redTypes.add('f32'); // red_f32 (WG floats) carries the lanes' sums without subgroups; the phases are done with it
  e.line(`let pj_lane = lid % ${LANES}u;`);
  e.line(`let pj_row = lid / ${LANES}u;`);
  const accs = p.matmuls.flatMap((m, j) => Array.from({ length: Math.ceil(m.width / rowsAtOnce) }, (_, i) => ({ m, j, i, acc: `pa${j}_${i}`, row: `pn${j}_${i}` })));
  for (const a of accs) {
    e.line(`let ${a.row} = pc${a.j} + min(pj_row + ${a.i * rowsAtOnce}u, ${a.m.width - 1}u);`);
    e.line(`var ${a.acc}: f32 = 0.0;`);
  }
  // K steps of 2 LANES elements (a packed 16-bit word a lane); several steps a trip where loops are written out
  const steps = Kd / (2 * LANES);
  const trip = unroll && Number.isInteger(steps) && steps % 4 === 0 ? 4 : 1;
  const body = e.nested(() => {
    for (let u = 0; u < trip; u++) {
      const pq = e.bound(`pq${u}`, Kd - 2);
      e.line(`let pq${u} = pq + ${u * 2 * LANES}u;`);
      e.line(`let px${u} = proj_x[pq${u}];`);
      e.line(`let py${u} = proj_x[pq${u} + 1u];`);
      for (const a of accs) {
        const w = a.m.weight;
        const storage = w.op === 'weight' ? (w as Node<'weight'>).attrs.storage : 'f32';
        const n = e.bound(a.row, w.shape[0]! - 1);
        let pair: [KExpr | string, KExpr | string];
        if (storage === 'f16') {
          const word = e.fresh('pw');
          e.line(`let ${word} = unpack2x16float(${e.buffer(w)}[(${a.row} * ${Kd}u + pq${u}) >> 1u]);`);
          pair = [`${word}.x`, `${word}.y`];
        } else pair = [e.load(w, [n, pq]), e.load(w, [n, e.ix.add(pq, e.ix.lit(1))])];
        e.line(`${a.acc} = ${a.acc} + px${u} * ${pair[0]} + py${u} * ${pair[1]};`);
      }
    }
  });
  e.line(`for (var pq: u32 = pj_lane * 2u; pq < ${Kd}u; pq += ${2 * LANES * trip}u) {`);
  body.forEach((l) => e.line('  ' + l));
  e.line(`}`);
  const shuffles = accs.flatMap((a) => [1, 2, 4].map((x) => `${a.acc} = ${a.acc} + subgroupShuffleXor(${a.acc}, ${x}u);`));
  const sum = () => [...Array(LANES).keys()].map((l) => `red_f32[pj_row * ${LANES}u + ${l}u]`).join(' + ');
  const shared = accs.flatMap((a) => [`red_f32[lid] = ${a.acc};`, `workgroupBarrier();`, `${a.acc} = ${sum()};`, `workgroupBarrier();`]);
  if (!subgroups) shared.forEach((l) => e.line(l));
  else {
    // subgroup_size is uniform: the barriers of the other branch stay legal
    e.line(`if (sg_size >= ${LANES}u) {`);
    shuffles.forEach((l) => e.line('  ' + l));
    e.line(`} else {`);
    shared.forEach((l) => e.line('  ' + l));
    e.line(`}`);
  }
  e.line(`if (pj_lane == 0u) {`);
  for (const a of accs) {
    const r = `pj_row + ${a.i * rowsAtOnce}u`;
    e.line(`  if (${r} < ${a.m.width}u) { proj${a.j}[${r}] = ${a.acc}; }`);
  }
  e.line(`}`);
  // from here on the matmuls' values are read from workgroup memory (their row is the workgroup's by the plan)
  p.matmuls.forEach((m, j) => e.mapValue(m.node, (idx) => K.wgsl(`proj${j}[${idx[idx.length - 1]} - pc${j}]`, 'f32')));
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
  ];
}
