// The matvec rows path's staged variants (DeviceLimits.matvecRows): batched decode rows (2-8) over 16/32-bit weights
// with x evaluated once per workgroup into workgroup memory and the weights read as whole u32x4 vectors.
//
// The direct loop (matvecKernel.ts) has every thread evaluate each row's x, prologue and all, from global memory on
// every trip, for a few columns: at batch 8 on an H200 its kernels reach 6-19% of the copy roofline. Here the
// workgroup first stages its rows' x (the prologue evaluated once per element, adjacent threads at adjacent elements)
// into `mv_x`, padded as matvecQuant.ts's staged loop pads it; then each thread, one of G lanes of a column group,
// loads one u32x4 (8 halves; two vec4 of f32) of each of its columns per trip and reads the rows' x as vec4s. More
// columns per workgroup (fewer, longer-lived workgroups) amortise the staging; the lanes' accumulators are summed
// through workgroup memory in batches, then one thread per output evaluates the epilogue.
import { type Node, numel } from '../ir.ts';
import { delinearize, linearize } from '../indexAlgebra.ts';
import { K as Kx, type KExpr } from '../kexpr/expr.ts';
import { V as Vx } from '../kexpr/value.ts';
import { Emitter, type LoweredKernel, assemble, finish, nextPow2, reduceLength } from './emitter.ts';
import { stagedAt, stagedRow } from './matvecQuant.ts';
import type { MatvecPlan } from './matvecKernel.ts';

/**
 * The rows path's variants, by name (STRATA_MATVEC_ROWS=<name> on an adapter; the ops bench measures each at batch 8):
 *   direct       the loop of matvecKernel.ts: x read from global memory by every thread on every trip (the default).
 *   staged       x staged in workgroup memory as f32, u32x4 weight loads, column groups sized for ~256 workgroups.
 *   staged-wide  staged with twice the columns per workgroup (~128 workgroups): half the staging of x, fewer lanes.
 *   staged-h     staged with x rounded to f16 in workgroup memory (`mv_xh`, 8 halves a u32x4): half the workgroup
 *                memory (llama-400m's down projection, K = 2816, in one chunk within 48 KiB) and one vec4 read per
 *                row and trip, at f16's precision for x (relative error ~5e-4).
 */
export const MATVEC_ROWS_VARIANTS = {
  direct: { staged: false, groups: 0, half: false },
  staged: { staged: true, groups: 256, half: false },
  'staged-wide': { staged: true, groups: 128, half: false },
  'staged-h': { staged: true, groups: 256, half: true },
} as const;
export type MatvecRowsVariant = keyof typeof MATVEC_ROWS_VARIANTS;
export const DEFAULT_MATVEC_ROWS: MatvecRowsVariant = 'direct';

/** k values a thread takes per column and trip: one u32x4 of 16-bit weights, two vec4s of f32. */
const STEP = 8;
/** Threads of a workgroup; lanes of a column group at least. */
const WG = 256;
const MIN_LANES = 8;

export interface StagedRowsOptions {
  subgroups: boolean;
  unroll: boolean;
  workgroupStorage: number;
  /** Accumulators per thread at most (DeviceLimits.matvecAccumulators). */
  accumulators: number;
  variant: MatvecRowsVariant;
}

const storageOf = (w: Node) => (w as Node<'weight'>).attrs.storage;
const floorPow2 = (x: number) => 1 << Math.floor(Math.log2(Math.max(1, x)));

/**
 * The staged kernel for a rows-path plan, or undefined where the variant does not apply (the caller then emits the
 * direct loop): the matmuls read different x, K is no multiple of 8, a weight is also read by the prologue, or not
 * even 8 elements of each row fit in workgroup memory.
 */
export function lowerStagedRows(root: Node, plan: MatvecPlan, isMat: (n: Node) => boolean, o: StagedRowsOptions): LoweredKernel | undefined {
  const { core, matmuls } = plan;
  const weights = plan.weights as Node[];
  const x = matmuls[0]!.inputs[0]!;
  const K = reduceLength(matmuls[0]!);
  if (!MATVEC_ROWS_VARIANTS[o.variant].staged || K % STEP !== 0 || matmuls.some((m) => m.inputs[0] !== x)) return undefined;
  if (weights.some((w) => !['f32', 'f16', 'bf16'].includes(storageOf(w)))) return undefined;
  const e = new Emitter(root, isMat, 'matvec', o.subgroups);
  for (const mm of matmuls) e.inlined.add(mm.id);
  const shape = core.shape;
  const N = shape[shape.length - 1]!;
  const rowShape = shape.slice(0, -1);
  const MB = numel(rowShape);
  const T = matmuls.length;
  const R = Math.max(1, Math.min(16, floorPow2(o.accumulators / (T * MB)))); // columns per thread
  const A = T * MB * R;
  const V = K / STEP; // trips along a whole row
  // column groups of G lanes: as many as keep the variant's workgroup count, never more lanes than a row has trips
  let groupsPerWg = Math.min(WG / MIN_LANES, floorPow2(N / (R * MATVEC_ROWS_VARIANTS[o.variant].groups)));
  groupsPerWg = Math.min(WG / MIN_LANES, Math.max(groupsPerWg, WG / nextPow2(V)));
  const G = WG / groupsPerWg;
  const NC = groupsPerWg * R; // columns per workgroup (of each matmul)
  const groups = Math.ceil(N / NC);
  // workgroup memory: x's chunk of C elements per row, then the partials (B accumulators of every thread at a time,
  // at least one output's T) and the rows' merged norm phases in `mv_part`, and the emitter's `red_f32`
  const reserve = 4 * Math.max(e.mergedFloats(MB, WG), (T + 1) * WG) + 4 * WG;
  const half = MATVEC_ROWS_VARIANTS[o.variant].half;
  // bytes of a row's chunk of C: f32 vec4s with a padding vec4 after every 8; or u32x4s of 8 halves, unpadded (lanes
  // read adjacent u32x4s)
  const rowBytes = (C: number) => (half ? 2 * C : 16 * stagedRow(C));
  let C = Math.min(K, Math.floor((o.workgroupStorage - reserve) / ((half ? 2 : 4.5) * MB) / STEP) * STEP);
  while (C >= STEP && MB * rowBytes(C) + reserve > o.workgroupStorage) C -= STEP;
  if (C < STEP) return undefined;
  const chunks = Math.ceil(K / C);
  const xBytes = MB * rowBytes(C);
  const B = T * Math.max(1, Math.floor(Math.min(A, Math.floor((o.workgroupStorage - xBytes - 4 * WG) / (4 * WG)) - 1) / T));

  if (o.unroll) e.workgroupSize = WG; // the phases (the rows' norm statistics) unroll their loops too
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const gi = e.bound('gi', groups - 1);
  const lid = e.bound('lid', WG - 1);
  const n0 = e.declareTop('o0', e.ix.mul(gi, NC));
  const lane = e.declareTop('o1', e.ix.mod(lid, G));
  const group = e.declareTop('o2', e.ix.div(lid, G));
  const colIdx = Array.from({ length: R }, (_, c) => e.declareTop(`o${3 + c}`, e.ix.min(e.ix.add(n0, e.ix.add(e.ix.mul(group, R), e.ix.lit(c))), N - 1)));
  // x is indexed in its matmuls' shape (a matmul may be a reshape of the core's: same linear positions)
  const rowIdx = (i: number) => delinearize(e.ix, e.ix.lit(i), matmuls[0]!.shape.slice(0, -1)).map((s) => e.indexVar(s));
  const acc = (t: number, i: number, c: number) => `acc${t}_${i}_${c}`;
  const vecs = weights.map((w) => `@V${w.id}@`);
  weights.forEach((w) => e.buffer(w));

  // one trip's weights of column c of matmul t at vector step p (8 k values) as two vec4<f32>, loaded now
  const load = (t: number, c: number, p: KExpr): [KExpr, KExpr] => {
    const w = weights[t]!;
    const v = e.fresh('v');
    // the weight read as vectors: length in vec4s (f32) or u32x4s (8 halves)
    const vecsOf = (i: KExpr, type: 'vec4<f32>' | 'vec4<u32>') => Kx.load(vecs[t]!, i, numel(w.shape) / (type === 'vec4<f32>' ? 4 : 8), type);
    if (storageOf(w) === 'f32') {
      e.line(`let ${v} = ${e.ix.add(e.ix.mul(colIdx[c]!, K / 4), e.ix.mul(p, 2))};`);
      return [Kx.v(v), Vx.arith('+', Kx.v(v), Kx.u32(1))].map((i) => e.named('v', vecsOf(i, 'vec4<f32>'))) as [KExpr, KExpr];
    }
    e.line(`let ${v} = ${vecsOf(e.ix.add(e.ix.mul(colIdx[c]!, V), p), 'vec4<u32>')};`);
    const word = Kx.v(v, 'vec4<u32>');
    return [halves(e, word, 'xy', storageOf(w)), halves(e, word, 'zw', storageOf(w))];
  };
  const loadTrip = (p: KExpr) => matmuls.map((_, t) => Array.from({ length: R }, (_, c) => load(t, c, p)));
  // row i's x at trip p of the staged chunk as two vec4<f32>
  const xAt = (i: number, p: KExpr): KExpr[] => {
    if (!half) {
      const at = stagedAt(C, i, e.ix.mul(p, 2));
      return [at, Vx.arith('+', at, Kx.u32(1))].map((index) => e.named('v', Kx.load('mv_x', index, MB * stagedRow(C), 'vec4<f32>')));
    }
    const h = e.named('v', Kx.load('mv_xh', e.ix.add(e.ix.lit((i * C) / STEP), p), (MB * C) / STEP, 'vec4<u32>'));
    return (['xy', 'zw'] as const).map((part) => e.named('v', unpackHalves(h, part)));
  };
  // the multiply-adds of one trip p of the staged chunk: each row's x serves every column
  const compute = (p: KExpr, loaded: [KExpr, KExpr][][]) => {
    for (let i = 0; i < MB; i++) {
      const xs = xAt(i, p);
      for (let t = 0; t < T; t++)
        for (let c = 0; c < R; c++) {
          const a = Kx.v(acc(t, i, c), 'f32');
          e.line(`${a} = ${Vx.arith('+', Vx.arith('+', a, Vx.dot(xs[0]!, loaded[t]![c]![0])), Vx.dot(xs[1]!, loaded[t]![c]![1]))};`);
        }
    }
  };
  // stages vectors [0, count) of every row's chunk `ch` (vec4s, or u32x4s of 8 halves): adjacent threads at adjacent
  // elements
  const width = half ? 8 : 4;
  const stage = (ch: KExpr, count: number | string): string[] =>
    Array.from({ length: MB }, (_, i) => {
      const body = (v: KExpr) => {
        const k = e.bound(e.fresh('k'), K - width);
        e.line(`let ${k} = ${e.ix.add(e.ix.mul(ch, C), e.ix.mul(v, width))};`);
        const xs = Array.from({ length: width }, (_, j) => e.value(x, [...rowIdx(i), e.ix.add(k, e.ix.lit(j))]));
        if (!half) e.line(`mv_x[${stagedAt(C, i, v)}] = ${Vx.vector(xs)};`);
        else e.line(`mv_xh[${e.ix.add(e.ix.lit((i * C) / STEP), v)}] = ${Vx.vector([0, 2, 4, 6].map((j) => Vx.pack2x16float(Vx.vector([xs[j]!, xs[j + 1]!]))))};`);
      };
      if (typeof count === 'number') return e.stridedLoop('lid', count, o.unroll ? WG : undefined, body);
      const v = e.bound(e.fresh('k'), C / width - 1);
      const lines = e.nested(() => body(v));
      return [`for (var ${v}: u32 = lid; ${v} < ${count}; ${v} += WG) {`, ...lines.map((l) => '  ' + l), '}'];
    }).flat();

  let preload: string[] = [];
  const main = e.nested(() => {
    for (let t = 0; t < T; t++) for (let i = 0; i < MB; i++) for (let c = 0; c < R; c++) e.line(`var ${acc(t, i, c)}: f32 = 0.0;`);
    const trips = Math.ceil(V / G);
    if (chunks === 1 && o.unroll) {
      // x whole, trips written out: every trip's weight vectors are loaded ahead of the norm phases and the staging,
      // in flight while they run; a partial last trip loads a clamped vector, unused
      const steps: { p: KExpr; loaded: [KExpr, KExpr][][] }[] = [];
      preload = e.nested(() => {
        for (let trip = 0; trip < trips; trip++) {
          const p = e.bound(e.fresh('k'), V - 1);
          const at = trip === 0 ? lane : Vx.arith('+', lane, Kx.u32(trip * G));
          e.line(`let ${p} = ${(trip + 1) * G > V ? Vx.fn('min', [at, Kx.u32(V - 1)]) : at};`);
          steps.push({ p, loaded: loadTrip(p) });
        }
      });
      stage(e.ix.lit(0), K / width).forEach((l) => e.line(l));
      e.line('workgroupBarrier();');
      steps.forEach(({ p, loaded }, trip) => {
        const lines = e.nested(() => compute(p, loaded));
        const partial = (trip + 1) * G > V;
        e.line(partial ? `if (${Vx.compare('<', Vx.arith('+', lane, Kx.u32(trip * G)), Kx.u32(V))}) {` : '{');
        lines.forEach((l) => e.line('  ' + l));
        e.line('}');
      });
    } else {
      // chunks of x in turn (a loop on software adapters): stage, then each lane's trips over the chunk
      const ch = chunks > 1 ? e.bound(e.fresh('k'), chunks - 1) : e.ix.lit(0);
      const body = e.nested(() => {
        if (chunks > 1) e.line('workgroupBarrier();'); // no thread overwrites x another still reads
        stage(ch, chunks > 1 ? `${Vx.fn('min', [Kx.u32(C / width), Vx.arith('-', Kx.u32(K / width), Vx.arith('*', ch, Kx.u32(C / width)))])}` : K / width).forEach((l) => e.line(l));
        e.line('workgroupBarrier();');
        const pc = e.bound(e.fresh('k'), C / STEP - 1);
        const p = e.bound(e.fresh('k'), V - 1);
        const trip = e.nested(() => {
          e.line(`let ${p} = ${e.ix.add(e.ix.mul(ch, C / STEP), pc)};`);
          compute(pc, loadTrip(p));
        });
        const end = chunks > 1 ? Vx.fn('min', [Kx.u32(C / STEP), Vx.arith('-', Kx.u32(V), Vx.arith('*', ch, Kx.u32(C / STEP)))]) : Kx.u32(V);
        e.line(`for (var ${pc}: u32 = ${lane}; ${pc} < ${end}; ${pc} += ${G}u) {`);
        trip.forEach((l) => e.line('  ' + l));
        e.line('}');
      });
      if (chunks > 1) e.line(`for (var ${ch}: u32 = 0u; ${ch} < ${chunks}u; ${ch}++) {`);
      body.forEach((l) => e.line(chunks > 1 ? '  ' + l : l));
      if (chunks > 1) e.line('}');
    }
    reduceAndStore(e, { root, core, matmuls, N, MB, R, T, G, B, groupsPerWg, n0, lane, group, acc, rowShape });
  });
  // lanes must not read another matmul's buffer through a scalar binding (the binding's type is the vector's)
  const scalarRead = (w: Node) => main.concat(preload).some((l) => l.includes(`@B${w.id}@`));
  if (weights.some(scalarRead)) return undefined;
  if (o.subgroups) e.redTypes.add('f32'); // declares the subgroup builtins
  const head = [...e.topLines()];
  const phases = e.mergedPhases('mv_part', WG);
  const partFloats = Math.max(1, (B + 1) * WG, e.mergedFloats(phases.phases, WG));
  const xDecl = half ? `var<workgroup> mv_xh: array<vec4<u32>, ${(MB * C) / STEP}>;` : `var<workgroup> mv_x: array<vec4<f32>, ${MB * stagedRow(C)}>;`;
  const shared = [`var<workgroup> mv_part: array<f32, ${partFloats}>;`, xDecl];
  const k = finish(e, 'matvec', assemble(e, [...head, ...preload, ...phases.lines, ...main], WG, shared), groups);
  return { ...k, variant: o.variant, vectorReads: [...new Set([...(k.vectorReads ?? []), ...weights.map((w) => w.id)])] };
}


/** Four f16s of a u32x4's components `xy` or `zw` as a vec4<f32>. */
const unpackHalves = (word: KExpr, [a, b]: 'xy' | 'zw') => Vx.vector([Vx.unpack2x16float(Vx.field(word, a as 'x')), Vx.unpack2x16float(Vx.field(word, b as 'y'))]);

/** Four 16-bit weights of u32x4 `word`'s components `xy` or `zw` as a vec4<f32>. */
function halves(e: Emitter, word: KExpr, part: 'xy' | 'zw', storage: string): KExpr {
  const [a, b] = [...part];
  if (storage === 'f16') return e.named('v', unpackHalves(word, part));
  // bf16: the low half shifted up, the high half masked
  const spread = Vx.swizzle(word, `${a}${a}${b}${b}`);
  const shifts = Vx.vector([16, 0, 16, 0].map((n) => Kx.u32(n)));
  return e.named('v', Vx.bitcast('vec4<f32>', Vx.bits('&', Vx.shift('<<', spread, shifts), Vx.splat(4, Kx.bits(0xffff0000)))));
}

interface Reduction {
  root: Node;
  core: Node;
  matmuls: Node[];
  N: number;
  MB: number;
  R: number;
  T: number;
  G: number;
  B: number;
  groupsPerWg: number;
  n0: KExpr;
  /** The thread's lane and column group. */
  lane: KExpr;
  group: KExpr;
  acc: (t: number, i: number, c: number) => string;
  rowShape: number[];
}

/**
 * Sums each accumulator over its column group's G lanes through `mv_part`, B accumulators of every thread at a time
 * (thread-major with a stride of B + 1: conflict-free writes and reads); outputs (row, column) take their T matmuls'
 * accumulators in one batch, and one thread per output evaluates the epilogue and stores.
 */
function reduceAndStore(e: Emitter, r: Reduction): void {
  const { MB, R, T, G, B } = r;
  const outputs = MB * R; // per column group, each with T sums
  const perBatch = Math.min(B / T, G); // one thread per output of every column group
  const stride = B + 1;
  const parts = e.subgroups ? `select(${G}u, ${G}u / sg_size, sg_size <= ${G}u)` : `${G}u`; // partials of each sum
  for (let first = 0; first < outputs; first += perBatch) {
    const count = Math.min(perBatch, outputs - first);
    e.line('workgroupBarrier();');
    const sums: [number, string][] = [];
    for (let s = 0; s < count; s++) for (let t = 0; t < T; t++) sums.push([s * T + t, r.acc(t, Math.floor((first + s) / R), (first + s) % R)]);
    if (e.subgroups) {
      // subgroups within a column group (a uniform branch): each posts its sums, G / sg_size partials a group
      e.line(`if (sg_size <= ${G}u) {`);
      sums.forEach(([, a]) => e.line(`  let ${a}_sg = subgroupAdd(${a});`));
      e.line(`  if (sg_lane == 0u) {`);
      // the subgroup's partial of its column group's sum j
      const partial = Vx.arith('+', Vx.arith('*', r.group, Kx.u32(G)), Vx.arith('/', r.lane, Kx.v('sg_size')));
      sums.forEach(([j, a]) => e.line(`    mv_part[${Vx.arith('+', Vx.arith('*', partial, Kx.u32(stride)), Kx.u32(j))}] = ${a}_sg;`));
      e.line(`  }`);
      e.line(`} else {`);
    }
    sums.forEach(([j, a]) => e.line(`${e.subgroups ? '  ' : ''}mv_part[${Vx.arith('+', Vx.arith('*', Kx.v('lid'), Kx.u32(stride)), Kx.u32(j))}] = ${a};`));
    if (e.subgroups) e.line('}');
    e.line('workgroupBarrier();');
    e.line(`if (lid < ${count * r.groupsPerWg}u) {`);
    const inner = e.nested(() => {
      const slot = e.bound(e.fresh('k'), count - 1);
      const group = e.bound(e.fresh('k'), r.groupsPerWg - 1);
      const row = e.bound(e.fresh('k'), MB - 1);
      const col = e.bound(e.fresh('k'), r.N - 1);
      const output = Vx.arith('+', Kx.u32(first), slot); // of the column group's MB x R
      e.line(`let ${slot} = ${Vx.arith('%', Kx.v('lid'), Kx.u32(count))};`);
      e.line(`let ${group} = ${Vx.arith('/', Kx.v('lid'), Kx.u32(count))};`);
      e.line(`let ${row} = ${Vx.arith('/', output, Kx.u32(R))};`);
      e.line(`let ${col} = ${Vx.arith('+', Vx.arith('+', r.n0, Vx.arith('*', group, Kx.u32(R))), Vx.arith('%', output, Kx.u32(R)))};`);
      e.line(`if (${col} < ${r.N}u) {`);
      const body = e.nested(() => {
        r.matmuls.forEach((mm, t) => {
          const tot = `tot${t}`;
          e.line(`var ${tot}: f32 = 0.0;`);
          const at = Vx.arith('+', Vx.arith('+', Vx.arith('*', Vx.arith('+', Vx.arith('*', group, Kx.u32(G)), Kx.v('s')), Kx.u32(stride)), Vx.arith('*', slot, Kx.u32(T))), Kx.u32(t));
          e.line(`for (var s: u32 = 0u; s < ${parts}; s++) { ${tot} = ${Vx.arith('+', Kx.v(tot, 'f32'), Kx.load('mv_part', at, G * stride, 'f32'))}; }`);
          e.seedAll(mm, Kx.v(tot, 'f32'));
        });
        const idx = [...delinearize(e.ix, row, r.rowShape).map((s) => e.indexVar(s)), col];
        e.line(e.store(r.root, linearize(e.ix, idx, r.core.shape), e.value(r.core, idx)));
      });
      body.forEach((l) => e.line('  ' + l));
      e.line('}');
    });
    inner.forEach((l) => e.line('  ' + l));
    e.line('}');
  }
}
