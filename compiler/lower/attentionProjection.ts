// The decode attention kernel's projection prologue (DeviceLimits.attentionProjection, passes/planProjections.ts):
// the workgroup computes its q row and its KV head's k and v rows of the step's token into workgroup memory, writes
// the k and v cache rows it will read, and from then on value(matmul, idx) reads workgroup memory.
import { type Node, numel } from '../ir.ts';
import { delinearize, linearize } from '../indexAlgebra.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import type { AttentionProjection } from '../passes/planProjections.ts';
import type { Emitter } from './emitter.ts';
import { emitRowDots, stageRow } from './projectRows.ts';

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
  const entry = (i: number, max: number, name: string) => e.declareTop(name, e.ix.min(K.load('proj_tab', V.arith('+', V.arith('*', gi, K.u32(stride)), K.u32(i)), p.table.length, 'u32'), max));
  const rowMax = numel(p.left.shape) / Kd - 1;
  const row = entry(0, rowMax, 'prow');
  p.matmuls.forEach((m, j) => entry(1 + j, m.node.shape[m.node.shape.length - 1]! - m.width, `pc${j}`));
  p.scatters.forEach((s, j) => entry(1 + p.matmuls.length + j, numel(s.node.inputs[2]!.shape) - s.elements, `ps${j}`));
  const lead = delinearize(e.ix, row, p.left.shape.slice(0, -1)).map((s, d) => e.declareTop(`pl${d}`, s));
  stageRow(e, p.left, lead, Kd);
  emitRowDots(e, Kd, p.matmuls.map((m, j) => ({ weight: m.weight, width: m.width, row: (r) => V.arith('+', K.v(`pc${j}`), r), store: (r, v) => `proj${j}[${r}] = ${v};` })), wg, subgroups, unroll);
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
