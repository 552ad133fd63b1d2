// Lowers one kernel (a materialised root and the inlined expression tree under it) to WGSL.
//
// Every inlined node is an expression of the output index. Reductions become loops: short ones (<= SEQ_MAX)
// sequential in place; long ones cooperative across the workgroup, hoisted into phases that run before the
// kernel's main body. A kernel is then one of:
//   map      one thread per output element (no long reductions)
//   row      one workgroup per output row: phases reduce along the row (norms, softmax), then threads write it
//   element  one workgroup per output element: phases are the reductions themselves (matvec, dot products)
//   scatter  one thread per value written into a state
//   scan     one thread per line of a running sum
//   attention / tiled / ssdstep / selstep / selscan  hand-written templates (compiler/lower/attentionKernel.ts,
//            attentionDecode.ts, tiledMatmul.ts, ssdStepKernel.ts, selectiveStepKernel.ts, selectiveScanKernel.ts)
// Buffers are written as placeholders `@B<nodeId>@`, bound once the memory plan is known.
import { lowerFusedMlp } from '../lower/mlpKernel.ts';
import type { DeviceLimits } from '../compile.ts';
import type { Node } from '../ir.ts';
import { numel } from '../ir.ts';
import { delinearize, linearize } from '../indexAlgebra.ts';
import { OPS, wgslLiteral, wgslType } from '../ops.ts';
import { Emitter, type KernelMode, type LoweredKernel, type Refusal, SEQ_MAX, assemble, finish, isReduction, nextPow2, reduceLength } from '../lower/emitter.ts';
import { lowerAttention } from '../lower/attentionKernel.ts';
import { DECODE_MAX_HEAD_DIM, DECODE_MAX_ROWS, lowerAttentionDecode } from '../lower/attentionDecode.ts';
import type { AttentionProjection } from './planProjections.ts';
import { TILED_MIN_ROWS, lowerAttentionPrefill, prefillTiles } from '../lower/attentionPrefillKernel.ts';
import { bigMatmulUnder, lowerTiledMatmul, tiledMatmulsOf } from '../lower/tiledMatmul.ts';
import { batchedRowsTiled } from '../lower/tiledRows.ts';
import { type MatvecPlan, lowerMatvec, matvecPlanOf } from '../lower/matvecKernel.ts';
import { lowerSsdStep } from '../lower/ssdStepKernel.ts';
import { lowerSelectiveStep } from '../lower/selectiveStepKernel.ts';
import { lowerSelectiveScan } from '../lower/selectiveScanKernel.ts';

export { SEQ_MAX, isReduction, reduceLength };
export type { KernelMode, LoweredKernel, Refusal };

const MAP_WG = 256;
/** Steps of a scan (cumsum) per trip of its loop. */
const SCAN_STEPS = 8;

/** Whether a long reduction is reachable from `n` without crossing a materialised node. */
export function hasLongReduction(n: Node, isMat: (n: Node) => boolean, seen = new Set<number>()): boolean {
  if (seen.has(n.id)) return false;
  seen.add(n.id);
  for (const i of n.inputs) {
    if (isMat(i)) continue;
    if (isReduction(i) && reduceLength(i) > SEQ_MAX) return true;
    if (hasLongReduction(i, isMat, seen)) return true;
  }
  return false;
}

/**
 * What the lowering takes from DeviceLimits (each field documented there): subgroups, unrolling and the kernel
 * variants, plus the workgroup memory a kernel may declare (DeviceLimits.maxComputeWorkgroupStorageSize).
 */
export type LowerOptions = Pick<
  DeviceLimits,
  'subgroups' | 'unroll' | 'matvecAccumulators' | 'matvecRows' | 'matvecPreload' | 'vectorLoads' | 'quantMatvec' | 'quantShape' | 'tiledMatmul' | 'subgroupMatrix' | 'matrixTile' | 'tiledRows' | 'tiledRowsQuantized' | 'attentionDecode' | 'attentionTiles' | 'mlpThreads'
> & { workgroupStorage?: number };

/** A kernel's template with what the template needs from the planner (the matmuls a tiled or matvec kernel computes). */
export type TemplateChoice =
  | { template: Exclude<KernelMode, 'tiled' | 'matvec' | 'attention'> }
  | { template: 'attention'; variant: AttentionVariant; projection?: AttentionProjection }
  | { template: 'tiled'; matmuls: Node[]; rows?: Node }
  | { template: 'matvec'; plan: MatvecPlan };

/**
 * The template of a kernel rooted at `root`, by rules over the graph: the op's own template (scatter, scan,
 * attention), a tiled matmul for many rows, a matvec for few, a map when no long reduction is inlined, else a
 * row kernel (the planner falls back to element when the row template refuses). Or the node that must get a
 * buffer first: a many-row matmul read through views gets its own tiled kernel.
 */
export function chooseTemplate(root: Node, isMat: (n: Node) => boolean, options: LowerOptions = {}): TemplateChoice | { materialize: Node; reason: string } {
  const own = OPS[root.op].template;
  if (own === 'attention') return { template: 'attention', variant: attentionVariant(root, options) };
  if (own) return { template: own as Exclude<KernelMode, 'tiled' | 'matvec' | 'attention'> };
  const mms = tiledMatmulsOf(root, isMat);
  if (mms) return { template: 'tiled', matmuls: mms };
  const big = bigMatmulUnder(root, isMat);
  if (big) return { materialize: big, reason: 'a many-row matmul is read through views: it gets its own tiled kernel' };
  const mv = matvecPlanOf(root, isMat);
  if (mv && batchedRowsTiled(mv, options.tiledRows, options.tiledRowsQuantized)) return { template: 'tiled', matmuls: mv.matmuls, rows: mv.core };
  if (mv) return { template: 'matvec', plan: mv };
  const rootIsLong = isReduction(root) && reduceLength(root) > SEQ_MAX;
  if (!rootIsLong && !hasLongReduction(root, isMat)) return { template: 'map' };
  const last = root.shape[root.shape.length - 1] ?? 1;
  return { template: root.shape.length >= 1 && last > 1 ? 'row' : 'element' };
}

type Lowering = (root: Node, choice: TemplateChoice, isMat: (n: Node) => boolean, options: LowerOptions) => LoweredKernel;

/** The kernel templates by name: lowering a planned kernel is a lookup here. */
const TEMPLATES: Record<KernelMode, Lowering> = {
  map: (root, _c, isMat) => lowerMap(root, isMat),
  row: (root, _c, isMat, o) => lowerCooperative(root, isMat, 'row', o),
  element: (root, _c, isMat, o) => lowerCooperative(root, isMat, 'element', o),
  matvec: (root, c, isMat, o) => lowerMatvec(root, (c as { plan: MatvecPlan }).plan, isMat, o),
  tiled: (root, c, isMat, o) => {
    const { matmuls, rows } = c as { matmuls: Node[]; rows?: Node };
    return lowerTiledMatmul(root, matmuls, isMat, { unroll: o.unroll ?? true, workgroupBytes: o.workgroupStorage, variant: o.tiledMatmul, subgroupMatrix: o.subgroupMatrix || undefined, matrixTile: o.matrixTile || undefined, ...(rows ? { rows } : {}) });
  },
  attention: (root, c, isMat, o) => lowerAttentionKernel(root, c as { variant: AttentionVariant; projection?: AttentionProjection }, isMat, o),
  scatter: (root, _c, isMat) => lowerScatter(root, isMat),
  scan: (root, _c, isMat) => lowerScan(root, isMat),
  ssdstep: (root, _c, isMat) => lowerSsdStep(root, isMat),
  selstep: (root, _c, isMat) => lowerSelectiveStep(root, isMat),
  selscan: (root, _c, isMat) => lowerSelectiveScan(root, isMat),
  mlp: (root, _c, isMat, o) => lowerFusedMlp(root, isMat, { subgroups: o.subgroups ?? false, unroll: o.unroll ?? true, ...(o.mlpThreads ? { maxThreads: o.mlpThreads } : {}) }),
};

/** Lowers one planned kernel with its template; a `refusal` on the result says what the template could not hold. */
export function lowerKernel(root: Node, choice: TemplateChoice, isMat: (n: Node) => boolean, options: LowerOptions = {}): LoweredKernel {
  return TEMPLATES[choice.template](root, choice, isMat, options);
}

/**
 * The attention kernel for a root, by its shape: `decode` for few query rows per K/V batch index with heads up to 64
 * (keys split across thread groups), `tiles` for many rows (prefill: tiles of rows sharing key and value tiles in
 * workgroup memory) when the tiles fit the adapter's workgroup storage, else `row` (one query row a workgroup).
 */
export type AttentionVariant = 'decode' | 'tiles' | 'row';

function attentionVariant(root: Node, o: LowerOptions): AttentionVariant {
  if (root.op === 'attention_split') return 'decode'; // a slice of the keys a workgroup (attentionSplit.ts)
  const [q, , v] = root.inputs as [Node, Node, Node];
  const r = root.shape.length;
  const rows = root.shape[r - 2]!;
  if (rows <= DECODE_MAX_ROWS && Math.max(q.shape[r - 1]!, v.shape[r - 1]!) <= DECODE_MAX_HEAD_DIM) return 'decode';
  return rows >= TILED_MIN_ROWS && prefillTiles(q.shape[r - 1]!, v.shape[r - 1]!, o.workgroupStorage ?? 16384, o.attentionTiles) ? 'tiles' : 'row';
}

function lowerAttentionKernel(root: Node, { variant, projection }: { variant: AttentionVariant; projection?: AttentionProjection }, isMat: (n: Node) => boolean, o: LowerOptions): LoweredKernel {
  const [q, , v] = root.inputs as [Node, Node, Node];
  const r = root.shape.length;
  const lowered = variant === 'decode' ? lowerAttentionDecode(root, isMat, { subgroups: o.subgroups ?? false, unroll: o.unroll ?? true, workgroupStorage: o.workgroupStorage ?? 16384, ...(o.attentionDecode ? { variant: o.attentionDecode } : {}), ...(projection ? { projection } : {}) })
    : variant === 'tiles' ? lowerAttentionPrefill(root, isMat, prefillTiles(q.shape[r - 1]!, v.shape[r - 1]!, o.workgroupStorage ?? 16384, o.attentionTiles)!, o.unroll ?? true)
    : lowerAttention(root, isMat, o.subgroups ?? false);
  // printed as attention/decode+qkv where the kernel projects its q, k and v, attention/split for slices of the keys
  return { ...lowered, variant: root.op === 'attention_split' ? 'split' : projection ? `${variant}+qkv` : variant };
}

function lowerMap(root: Node, isMat: (n: Node) => boolean): LoweredKernel {
  const e = new Emitter(root, isMat, 'map');
  const n = numel(root.shape);
  const wg = Math.min(MAP_WG, Math.max(32, nextPow2(n)));
  e.line(`let t = (wid.x + wid.y * NX) * WG + lid;`);
  e.line(`if (t >= ${n}u) { return; }`);
  const t = e.bound('t', n - 1);
  const idx = delinearize(e.ix, t, root.shape).map((s, d) => e.declareTop(`o${d}`, s));
  const v = e.value(root, idx);
  e.line(e.store(root, t, v));
  const groups = Math.ceil(n / wg);
  // one workgroup: t is lid, guarded by n, so the kernel is correct in any larger workgroup
  return { ...finish(e, 'map', assemble(e, e.topLines(), wg), groups), ...(groups === 1 ? { anyLargerWorkgroup: true } : {}) };
}

function lowerCooperative(root: Node, isMat: (n: Node) => boolean, mode: 'row' | 'element', options: LowerOptions): LoweredKernel {
  const e = new Emitter(root, isMat, mode, options.subgroups ?? false);
  const rowLen = mode === 'row' ? root.shape[root.shape.length - 1]! : 1;
  const groups = numel(root.shape) / rowLen;
  const groupShape = mode === 'row' ? root.shape.slice(0, -1) : root.shape;
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const gi = e.bound('gi', groups - 1);
  const outer = delinearize(e.ix, gi, groupShape).map((s, d) => e.declareTop(`o${d}`, s));
  let main: string[];
  if (mode === 'row') {
    main = e.nested(() => {
      const j = e.bound('j', rowLen - 1); // the loop below runs j over the row
      const v = e.value(root, [...outer, j]);
      e.line(e.store(root, e.ix.add(e.ix.mul(gi, rowLen), j), v));
    });
    main = [`for (var j: u32 = lid; j < ${rowLen}u; j += WG) {`, ...main.map((l) => '  ' + l), '}'];
  } else {
    main = e.nested(() => {
      const v = e.value(root, outer);
      e.line(`if (lid == 0u) { ${e.store(root, gi, v)} }`);
    });
  }
  // read after the body is built: index names hoisted to the top block (indexVar) belong before the phases
  const head = [...e.topLines()];
  const wg = Math.min(256, Math.max(32, nextPow2(Math.max(e.maxCoop, rowLen))));
  return finish(e, mode, assemble(e, [...head, ...e.phases, ...main], wg), groups);
}

/**
 * Whether a scatter may read the state version it overwrites (values or indices inlined over it): its elements
 * fit one workgroup, so every thread reads before a barrier and writes after it (lowerScatter).
 */
export function scatterReadsInPlace(root: Node): boolean {
  return numel(root.inputs[2]!.shape) <= MAP_WG;
}

function lowerScatter(root: Node, isMat: (n: Node) => boolean): LoweredKernel {
  const [target, indices, values] = root.inputs as [Node, Node, Node];
  const e = new Emitter(root, (n) => n === target || isMat(n), 'scatter');
  const n = numel(values.shape);
  const wg = Math.min(MAP_WG, Math.max(32, nextPow2(n)));
  const t = e.bound('t', n - 1);
  const vIdx = delinearize(e.ix, t, values.shape).map((s, d) => e.declareTop(`o${d}`, s));
  const k = indices.shape.length;
  const row = e.value(indices, vIdx.slice(0, k));
  e.line(`let row = u32(${row});`);
  const v = e.value(values, vIdx);
  const guarded = e.bound('row', target.shape[0]! - 1); // within the guard below: rows out of range are not written
  const offset = linearize(e.ix, [guarded, ...vIdx.slice(k)], target.shape);
  if (e.reads.has(target.id)) {
    e.line(`let val = ${v};`);
    const store = e.store(root, offset, 'val');
    // The values read the rows being written (positions: pos[slot] + valid). One workgroup: every thread reads its
    // value, a barrier, then the writes, so duplicated rows see the old state as two kernels would. No early
    // return before the barrier (uniform control flow): spare threads evaluate the last element and write nothing.
    e.line(`storageBarrier(); // every thread has read the old rows`);
    e.line(`if (lid < ${n}u && row < ${target.shape[0]}u) { ${store} }`);
    // the target stays among the reads (ordering, binding: the written buffer, read_write); not absorbable (its
    // body needs the barrier); correct in any larger workgroup
    return { ...finish(e, 'scatter', assemble(e, [`let t = min(lid, ${n - 1}u);`, ...e.topLines()], wg), 1), anyLargerWorkgroup: true };
  }
  e.line(`if (row < ${target.shape[0]}u) { ${e.store(root, offset, v)} }`);
  // the body is one element t's write: a kernel of its own guards t, a kernel that absorbs it loops over t
  const body = [...e.topLines()];
  const main = [`let t = (wid.x + wid.y * NX) * WG + lid;`, `if (t >= ${n}u) { return; }`, ...body];
  const groups = Math.ceil(n / wg);
  const lowered = { ...finish(e, 'scatter', assemble(e, main, wg), groups), scatter: { elements: n, body }, ...(groups === 1 ? { anyLargerWorkgroup: true } : {}) };
  // the target is bound as the written buffer; the planner has given any reader of that version a buffer of its own
  lowered.reads = lowered.reads.filter((r) => r !== target);
  return lowered;
}

function lowerScan(root: Node, isMat: (n: Node) => boolean): LoweredKernel {
  const e = new Emitter(root, isMat, 'scan');
  const len = root.shape[root.shape.length - 1]!;
  const lines = numel(root.shape) / len;
  const wg = Math.min(MAP_WG, Math.max(32, nextPow2(lines)));
  e.line(`let t = (wid.x + wid.y * NX) * WG + lid;`);
  e.line(`if (t >= ${lines}u) { return; }`);
  const t = e.bound('t', lines - 1);
  const outer = delinearize(e.ix, t, root.shape.slice(0, -1)).map((s, d) => e.declareTop(`o${d}`, s));
  e.line(`var acc: ${wgslType(root.dtype)} = ${wgslLiteral(0, root.dtype)};`);
  // SCAN_STEPS steps a trip, their values computed (loads issued) before the running sum takes them: as one step a
  // trip, each step's load waited for the one before it (granite4h's 64-step dt cumsum took 22 us on an H200)
  const steps = len % SCAN_STEPS === 0 ? SCAN_STEPS : 1;
  const kb = e.bound('kb', len - steps);
  const body = e.nested(() => {
    const ks = Array.from({ length: steps }, (_, j) => {
      const name = e.fresh('ks');
      e.line(`let ${name} = ${e.ix.add(kb, e.ix.lit(j))};`);
      return e.bound(name, len - steps + j);
    });
    const held = ks.map(() => e.fresh('sv'));
    const values = ks.map((k, j) => e.nested(() => e.line(`let ${held[j]} = ${e.value(root.inputs[0]!, [...outer, k])};`)));
    values.forEach((lines) => lines.forEach((l) => e.line(l)));
    ks.forEach((k, j) => {
      e.line(`acc = acc + ${held[j]};`);
      e.line(e.store(root, e.ix.add(e.ix.mul(t, len), k), 'acc'));
    });
  });
  e.line(`for (var kb: u32 = 0u; kb < ${len}u; kb += ${steps}u) {`);
  for (const l of body) e.line('  ' + l);
  e.line('}');
  const groups = Math.ceil(lines / wg);
  // one workgroup: its lines are t = lid, no barrier, so a larger workgroup's spare threads return at the guard (it
  // can share a dispatch with wider kernels: Mamba-2's dt cumsum beside the conv's maps)
  return { ...finish(e, 'scan', assemble(e, e.topLines(), wg), groups), ...(groups === 1 ? { anyLargerWorkgroup: true } : {}) };
}

