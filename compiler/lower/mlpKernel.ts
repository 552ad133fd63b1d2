// The fused MLP kernel (`fused_mlp`, passes/fuseMlp.ts): a gated MLP's gate/up matvecs, its activation and its down
// projection in one dispatch at batch 1. Workgroup g takes act's columns gJ .. gJ+J-1: where loops are written out,
// every weight word it reads (its down-projection columns, and with 16-bit weights the gate/up rows: preloadRows) is
// loaded first, since none waits on anything; then the left row x is staged (its norm as phases), the matvec rows
// those columns read are dotted with it into workgroup memory (else through lower/projectRows.ts's loop), act is
// evaluated there, and each output row's partial sum over the J columns is added to the accumulator as fixed point
// (compiler/fixedPoint.ts). H200: 0.93 against 0.87 ms for granite4h's batch-1 step with its 32 MLPs so (the loads
// after the norm: 1.03), for 32 dispatches fewer (bench/results/2026-12-04-h200-mlp-fusion/).
import type { Node } from '../ir.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { fixedAdd } from '../fixedPoint.ts';
import { halfPair } from '../halfStorage.ts';
import { type MlpSite, mlpPlanOf } from '../passes/fuseMlp.ts';
import { Emitter, type LoweredKernel, assemble, finish, nextPow2 } from './emitter.ts';
import { type RowSet, concatRows, emitRowDots, stageRow } from './projectRows.ts';

/** Sets of one weight as one (fewer accumulators a thread, every row thread busy). */
function mergeSets(sets: RowSet[]): RowSet[] {
  const out: RowSet[] = [];
  for (const s of sets) {
    const i = out.findIndex((o) => o.weight === s.weight);
    if (i < 0) out.push(s);
    else out[i] = concatRows(out[i]!, s);
  }
  return out;
}

/**
 * Sums the f32 `acc` over each group of `lanes` consecutive threads (group index `group`): subgroup shuffles where
 * the subgroup is that wide, else through workgroup memory (red_f32). Every thread of a group ends with the sum.
 */
function laneSum(e: Emitter, acc: string, lanes: number, group: string, wg: number, subgroups: boolean): void {
  const a = K.v(acc, 'f32');
  const shuffles = [1, 2, 4, 8, 16].filter((m) => m < lanes).map((m) => `${acc} = ${V.arith('+', a, V.shuffleXor(a, K.u32(m)))};`);
  const parts = [...Array(lanes).keys()].map((l) => K.load('red_f32', V.arith('+', V.arith('*', K.v(group), K.u32(lanes)), K.u32(l)), wg, 'f32'));
  const shared = [`red_f32[lid] = ${acc};`, `workgroupBarrier();`, `${acc} = ${V.sum(parts)};`, `workgroupBarrier();`];
  e.redTypes.add('f32');
  if (subgroups) e.groupSum(lanes, shuffles, shared);
  else shared.forEach((l) => e.line(l));
}

/** Lanes of a row where the rows' words are loaded first: 32 (a subgroup reads 512 contiguous bytes a step), fewer where K is not whole steps of them. */
const rowLanes = (Kd: number) => [32, 16, 8].find((l) => Kd % (8 * l) === 0);
/** u32x4 words a thread loads first at most (registers). */
const PRELOAD_WORDS = 24;

/**
 * Loads every word of the sites' rows at once (ROW_LANES lanes a row; a thread's rows slot, slot + WG / ROW_LANES,
 * ...), and returns the second half, to be called once x is staged: the dots with proj_x into mlp_mm.
 */
function preloadRows(e: Emitter, sites: MlpSite[], J: number, Kd: number, WG: number, g: KExpr, ROW_LANES: number, subgroups: boolean): () => void {
  const u = K.u32;
  const slots = WG / ROW_LANES;
  const chunks = Math.ceil(J / slots);
  const steps = Kd / (8 * ROW_LANES);
  e.line(`let mlp_lane = ${V.arith('%', K.v('lid'), u(ROW_LANES))};`);
  e.line(`let mlp_slot = ${V.arith('/', K.v('lid'), u(ROW_LANES))};`);
  const local = (c: number) => V.arith('+', K.v('mlp_slot'), u(c * slots));
  const word = (si: number, c: number, t: number) => `mlp_w${si}_${c}_${t}`;
  sites.forEach((site, si) => {
    e.buffer(site.weight);
    e.vectorIds.add(site.weight.id);
    for (let c = 0; c < chunks; c++) {
      const row = V.arith('+', V.arith('+', u(site.offset), V.arith('*', g, u(J))), V.fn('min', [local(c), u(J - 1)]));
      for (let t = 0; t < steps; t++)
        e.line(`let ${word(si, c, t)} = ${K.load(`@V${site.weight.id}@`, V.arith('+', V.arith('+', V.arith('*', row, u(Kd / 8)), K.v('mlp_lane')), u(t * ROW_LANES)), (site.weight.shape[0]! * Kd) / 8, 'vec4<u32>')};`);
    }
  });
  return () => {
    sites.forEach((site, si) => {
      const storage = (site.weight as Node<'weight'>).attrs.storage as 'f16' | 'bf16';
      for (let c = 0; c < chunks; c++) {
        const terms: KExpr[] = [];
        for (let t = 0; t < steps; t++) {
          const k0 = V.arith('*', V.arith('+', K.v('mlp_lane'), u(t * ROW_LANES)), u(8));
          for (let q = 0; q < 4; q++) {
            const h = halfPair(storage, V.field(K.v(word(si, c, t), 'vec4<u32>'), 'xyzw'[q] as 'x'), (p) => e.fresh(p));
            h.lines.forEach((l) => e.line(l));
            h.values.forEach((v, k) => terms.push(V.arith('*', v, K.load('proj_x', V.arith('+', k0, u(2 * q + k)), Kd, 'f32'))));
          }
        }
        const acc = e.fresh('mlp_r');
        e.line(`var ${acc} = ${V.sum(terms)};`);
        laneSum(e, acc, ROW_LANES, 'mlp_slot', WG, subgroups);
        e.line(`if (${V.logic('&&', V.compare('==', K.v('mlp_lane'), u(0)), V.compare('<', local(c), u(J)))}) { mlp_mm[${V.arith('+', u(si * J), local(c))}] = ${acc}; }`);
      }
    });
  };
}

export interface MlpKernelOptions {
  subgroups?: boolean;
  unroll?: boolean;
  /** The adapter's threads a workgroup at most (256 where unset). */
  maxThreads?: number;
}

export function lowerFusedMlp(root: Node, isMat: (n: Node) => boolean, options: MlpKernelOptions = {}): LoweredKernel {
  const u = K.u32;
  const plan = mlpPlanOf(root);
  if (!plan) throw new Error(`fused_mlp %${root.id}: not a gated MLP's down projection of one row`);
  const { x, act, sites, down, K: Kd, I, N, J } = plan;
  const subgroups = options.subgroups ?? false;
  const unroll = options.unroll ?? true;
  // a thread takes one row of each weight's sites where the adapter allows (8 lanes a row)
  const perWeight = new Map<Node, number>();
  for (const site of sites) perWeight.set(site.weight, (perWeight.get(site.weight) ?? 0) + J);
  const WG = Math.max(64, Math.min(options.maxThreads ?? 256, nextPow2(8 * Math.max(...perWeight.values())) * (unroll ? 2 : 1)));
  const e = new Emitter(root, isMat, 'mlp', subgroups);
  e.workgroupSize = WG;
  const groups = I / J;
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const g = e.bound('gi', groups - 1);
  const first = V.arith('*', g, u(J)); // the workgroup's first act column

  // the down projection's words: lane `part` of LPR lanes takes 8 of a row's J columns; rows r0, r0 + rows a pass, ...
  const LPR = J / 8;
  const rowsPerPass = WG / LPR;
  const passes = Math.ceil(N / rowsPerPass);
  e.line(`let mlp_part = ${V.arith('%', K.v('lid'), u(LPR))};`);
  e.line(`let mlp_r0 = ${V.arith('/', K.v('lid'), u(LPR))};`);
  e.buffer(down);
  e.vectorIds.add(down.id);
  const storage = (down as Node<'weight'>).attrs.storage as 'f16' | 'bf16' | 'f32';
  const rowOf = (p: KExpr) => V.arith('+', K.v('mlp_r0'), V.arith('*', p, u(rowsPerPass)));
  /** The lane's vectors of pass p's row: one u32x4 of 8 16-bit weights, or two vec4s of f32. */
  const words = (p: KExpr): KExpr[] => {
    const row = V.fn('min', [rowOf(p), u(N - 1)]);
    const per = storage === 'f32' ? 4 : 8;
    const at = (h: number) => V.arith('+', V.arith('+', V.arith('*', row, u(I / per)), V.arith('*', g, u(J / per))), V.arith('+', V.arith('*', K.v('mlp_part'), u(8 / per)), u(h)));
    const type = storage === 'f32' ? 'vec4<f32>' : 'vec4<u32>';
    return [...Array(8 / per).keys()].map((h) => K.load(`@V${down.id}@`, at(h), (N * I) / per, type));
  };
  if (unroll) for (let p = 0; p < passes; p++) words(u(p)).forEach((w, h) => e.line(`let mlp_d${p}_${h} = ${w};`));

  // x staged, the sites' rows dotted with it: site i's rows offset + gJ .. + J into mlp_mm[iJ ..]; where loops are
  // written out and the weights are 16-bit, every word of those rows is loaded first too (a subgroup a row)
  const lead = x.shape.slice(0, -1).map(() => e.ix.lit(0));
  const half = (w: Node) => ['f16', 'bf16'].includes((w as Node<'weight'>).attrs.storage);
  const lanes = rowLanes(Kd);
  const preloaded = unroll && lanes !== undefined && sites.every((site) => half(site.weight)) && (Kd / (8 * lanes)) * sites.length * Math.ceil(J / (WG / lanes)) <= PRELOAD_WORDS;
  const dots = preloaded ? preloadRows(e, sites, J, Kd, WG, g, lanes, subgroups) : undefined;
  stageRow(e, x, lead, Kd);
  if (dots) dots();
  else {
    // the sites' rows through the projection prologue's K loop, those of one weight as one set
    const sets = mergeSets(sites.map((site, i) => ({
      weight: site.weight,
      width: J,
      row: (r: KExpr) => V.arith('+', V.arith('+', u(site.offset), first), r),
      store: (r: KExpr, v: string) => `mlp_mm[${V.arith('+', u(i * J), r)}] = ${v};`,
    })));
    emitRowDots(e, Kd, sets, WG, subgroups, unroll);
  }
  e.line(`workgroupBarrier();`);
  // act reads its matvecs' columns from mlp_mm: column c of a matvec is site i's where c - offset_i falls in [gJ, gJ + J)
  for (const m of new Set(sites.map((s) => s.matmul))) {
    const own = sites.flatMap((s, i) => (s.matmul === m ? [i] : [])).sort((a, b) => sites[a]!.offset - sites[b]!.offset);
    e.mapValue(m, (idx) => {
      const col = idx[idx.length - 1]!;
      const slot = (i: number) => V.arith('+', u(i * J), V.arith('-', V.arith('-', col, u(sites[i]!.offset)), first));
      let at = slot(own[own.length - 1]!);
      for (let k = own.length - 2; k >= 0; k--) at = V.select(at, slot(own[k]!), V.compare('<', col, V.arith('+', u(sites[own[k + 1]!]!.offset), first)));
      return K.load('mlp_mm', at, sites.length * J, 'f32');
    });
  }
  const actLines = e.nested(() => e.line(`mlp_act[lid] = ${e.value(act, [...act.shape.slice(0, -1).map(() => e.ix.lit(0)), V.arith('+', first, K.v('lid'))])};`));
  e.line(`if (lid < ${J}u) {`);
  actLines.forEach((l) => e.line('  ' + l));
  e.line(`}`);
  e.line(`workgroupBarrier();`);

  // the partial sums: a row's LPR lanes dot their 8 columns, meet (shuffles, or workgroup memory), lane 0 adds
  const pass = (p: KExpr, w: KExpr[]) => {
    // the 8 weights of the lane, in column order
    const values: KExpr[] = [];
    if (storage === 'f32') w.forEach((vec) => (['x', 'y', 'z', 'w'] as const).forEach((c) => values.push(V.field(vec, c))));
    else
      for (let c = 0; c < 4; c++) {
        const h = halfPair(storage, V.field(w[0]!, 'xyzw'[c] as 'x'), (q) => e.fresh(q));
        h.lines.forEach((l) => e.line(l));
        values.push(...h.values);
      }
    const terms = values.map((v, k) => V.arith('*', v, K.load('mlp_act', V.arith('+', V.arith('*', K.v('mlp_part'), u(8)), u(k)), J, 'f32')));
    e.line(`var mlp_s = ${V.sum(terms)};`);
    const s = K.v('mlp_s', 'f32');
    if (LPR > 1) laneSum(e, 'mlp_s', LPR, 'mlp_r0', WG, subgroups);
    e.line(`if (${V.logic('&&', V.compare('==', K.v('mlp_part'), u(0)), V.compare('<', rowOf(p), u(N)))}) {`);
    fixedAdd(`@B${root.id}@`, rowOf(p), s, (q) => e.fresh(q)).forEach((l) => e.line('  ' + l));
    e.line(`}`);
  };
  if (unroll)
    for (let p = 0; p < passes; p++) {
      const body = e.nested(() => pass(u(p), words(u(p)).map((w, h) => K.v(`mlp_d${p}_${h}`, w.type))));
      e.line(`{`);
      body.forEach((l) => e.line('  ' + l));
      e.line(`}`);
    }
  else {
    const body = e.nested(() => pass(K.v('mlp_p'), words(K.v('mlp_p')).map((w) => e.named('mlp_w', w))));
    e.line(`for (var mlp_p: u32 = 0u; mlp_p < ${passes}u; mlp_p++) {`);
    body.forEach((l) => e.line('  ' + l));
    e.line(`}`);
  }
  const shared = [`var<workgroup> proj_x: array<f32, ${Kd}>;`, `var<workgroup> mlp_mm: array<f32, ${sites.length * J}>;`, `var<workgroup> mlp_act: array<f32, ${J}>;`];
  const k = finish(e, 'mlp', assemble(e, e.topLines(), WG, shared), groups);
  return { ...k, nodes: [...new Set([...k.nodes, ...plan.inner])] };
}
