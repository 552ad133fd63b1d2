// The Mamba-2 decode step kernel (the `ssd_step` op, compiler/ssdStep.ts): conv, dt, SSM update and read-out of
// one head in one workgroup, and, when passes/absorbStateWrites.ts hands it the step's state scatters, the new
// SSM state and the new conv ring slot written in place.
import type { Node } from '../ir.ts';
import { K as Kx, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { wgslLiteral } from '../ops.ts';
import { ssdStepDims } from '../ssdStep.ts';
import { Emitter, type LoweredKernel, assemble, finish, nextPow2 } from './emitter.ts';
import { delinearize } from '../indexAlgebra.ts';
import type { SsdProjection } from '../passes/projectSsdInputs.ts';
import { LANES, type RowSet, concatRows, emitRowDots, stageRow } from './projectRows.ts';

/** Threads of a workgroup at most where SsdStepOptions.threads is unset. */
const WG_MAX = 256;
/** SSM state elements per thread: a head whose P x N is larger is split across workgroups by rows. */
export const ELEMENTS_PER_THREAD = 8;

/** State versions the kernel writes in place (scatters of this step's `ssm` and `conv` parts at the slot ids). */
export interface SsdStepWrites {
  ssm?: Node;
  conv?: Node;
}

export interface SsdStepOptions {
  /** The in_proj rows the workgroup computes itself (passes/projectSsdInputs.ts, DeviceLimits.ssdProjection). */
  projection?: SsdProjection;
  subgroups?: boolean;
  unroll?: boolean;
  /** SSM state elements a thread (ELEMENTS_PER_THREAD where unset): more, fewer workgroups a head. */
  elementsPerThread?: number;
  /** Threads of a workgroup at most (WG_MAX where unset). */
  threads?: number;
}

const prevPow2 = (n: number) => 1 << Math.floor(Math.log2(Math.max(1, n)));

/**
 * One workgroup per (sequence, head, chunk of RP rows). Phase 1: each thread computes conv channels of the
 * workgroup (its RP x channels, then the N B and N C channels of the head's group) into workgroup memory; the owner
 * of a channel writes the token's input into ring slot pos % K (x channels: their head's workgroup; B and C: the
 * group's first head, chunk 0), so no two workgroups write one element and none reads the slot being written.
 * Phase 2: L lanes per row walk N, each updating its state elements (read and written by the same thread, loaded
 * at the kernel's top where the workgroup's rows take one pass) and adding C . h; the lanes' sums meet in workgroup
 * memory and lane 0 writes y = C . h + D x. With a projection (emitSsdProjection) the in_proj rows come first.
 * Standalone (not merged with the scatters) the part named by the root is stored to its own buffer instead.
 */
export function lowerSsdStep(root: Node, isMat: (n: Node) => boolean, writes: SsdStepWrites = {}, options: SsdStepOptions = {}): LoweredKernel {
  const { projection } = options;
  const [xbc, dtRaw, ring, h0, W, convB, dtBias, A, D, pos, valid] = root.inputs as [Node, Node, Node, Node, Node, Node, Node, Node, Node, Node, Node];
  const { part, dtMin, dtMax } = (root as Node<'ssd_step'>).attrs;
  const { S, C, K, Hh, P, N, G, I } = ssdStepDims(root.inputs);
  const R = Hh / G;
  const e = new Emitter(root, isMat, 'ssdstep', projection ? (options.subgroups ?? false) : false);
  const f = (x: number) => wgslLiteral(x, 'f32');
  const threads = options.threads ?? WG_MAX;
  const split = Math.ceil(P / Math.max(1, Math.min(P, Math.floor((threads * (options.elementsPerThread ?? ELEMENTS_PER_THREAD)) / N))));
  const RP = Math.ceil(P / split); // rows of a workgroup
  const wg = Math.min(threads, Math.max(32, nextPow2(RP * N)));
  e.workgroupSize = wg;
  const L = Math.min(prevPow2(Math.floor(wg / RP)) || 1, nextPow2(N)); // lanes per row
  const RPP = wg / L; // rows per pass
  const CH = RP + 2 * N; // channels a workgroup computes
  const groups = S * Hh * split;
  const ssmOut = writes.ssm ?? (part === 'ssm' ? root : undefined);
  const convOut = writes.conv ?? (part === 'conv' ? root : undefined);
  const storeY = part === 'y';

  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const gi = e.bound('gi', groups - 1);
  const s = e.declareTop('o0', e.ix.div(gi, Hh * split));
  const h = e.declareTop('o1', e.ix.mod(e.ix.div(gi, split), Hh));
  const chunk = e.declareTop('o2', e.ix.mod(gi, split));
  const g = e.declareTop('o3', e.ix.div(h, R));
  const u = Kx.u32;
  /** The kernel's named f32 values and elements of its workgroup arrays. */
  const named = (name: string) => Kx.v(name, 'f32');
  const wgArray = (name: string, i: KExpr, length: number) => Kx.load(name, i, length, 'f32');
  const updates = ssmOut !== undefined || storeY;
  // Loads that wait on no phase first, so that their latency overlaps the projection's and phase 1's: the head's
  // dt bias, A and D, its dt where it is not projected, (one pass of rows) each thread's state elements, then the
  // sequence's valid count, position and state rows.
  if (updates) {
    e.line(`let dt_bias = ${e.value(dtBias, [h])};`);
    e.line(`let ssd_a = ${e.value(A, [h])};`);
    e.line(`let d_skip = ${e.value(D, [h])};`);
    if (!projection) e.line(`let dt_raw = ${e.value(dtRaw, [s, h])};`);
  }
  const trips = Math.ceil(N / L);
  const onePass = RP <= RPP;
  /** A pass's rows (local row pl, head row p, ok) from its first row p0, and its state loads into ssd_h. */
  const passRows = (p0: KExpr) => {
    const pl = e.bound(e.fresh('k'), RPP * Math.ceil(RP / RPP) - 1);
    e.line(`let ${pl} = ${V.arith('+', p0, V.arith('/', Kx.v('lid'), u(L)))};`);
    const p = e.bound(e.fresh('k'), P - 1);
    const headRowOf = V.arith('+', V.arith('*', chunk, u(RP)), pl); // the head's row of local row pl
    e.line(`let ${p} = ${V.fn('min', [headRowOf, u(P - 1)])};`);
    e.line(`let ok = ${V.logic('&&', V.compare('<', pl, u(RP)), V.compare('<', headRowOf, u(P)))};`);
    const n = e.bound(e.fresh('k'), N - 1);
    const trip = e.bound(e.fresh('k'), trips - 1);
    const element = V.arith('+', Kx.v('lane'), V.arith('*', trip, u(L))); // the thread's state element of the trip
    const index = N % L === 0 ? element : V.fn('min', [element, u(N - 1)]); // past N: a repeat, not written
    const loop = (body: string[], last: boolean) => [
      `  for (var ${trip}: u32 = 0u; ${trip} < ${trips}u; ${trip}++) {`,
      `    let ${n} = ${index};`,
      ...(last && N % L !== 0 ? [`    if (${V.compare('>=', element, u(N))}) { break; }`] : []),
      ...body.map((l) => '    ' + l),
      `  }`,
    ];
    // every state load of the thread first, then the updates: a store to the buffer the next load reads would
    // otherwise keep the compiler from issuing that load early (one memory round trip per element)
    const load = e.nested(() => e.line(`ssd_h[${trip}] = ${e.value(h0, [s, h, p, n])};`));
    e.line(`var ssd_h: array<f32, ${trips}>;`);
    e.line(`if (ok) {`);
    loop(load, false).forEach((l) => e.line(l));
    e.line(`}`);
    return { pl, p, n, trip, loop };
  };
  if (updates) e.line(`let lane = lid % ${L}u;`);
  const preloaded = updates && onePass ? passRows(u(0)) : undefined;
  /** Row p of this sequence's head in a [S, Hh, P, ...] result. */
  const headRow = (p: KExpr) => e.ix.add(e.ix.mul(e.ix.add(e.ix.mul(s, Hh), h), P), p);
  /** An input the workgroup's in_proj rows computed (emitSsdProjection): [x RP | B N | C N | dt]. */
  const inProj = (i: KExpr) => wgArray('ssd_in', i, RP + 2 * N + 1);
  const validS = e.value(valid, [s]);
  e.line(`let real = ${V.compare('>', validS, V.lit(0, validS.type))};`);
  const posS = e.value(pos, [s]);
  e.line(`let at = ${V.arith('%', V.cast('u32', V.fn('max', [posS, V.lit(0, posS.type)])), u(K))};`);
  const [real, at] = [Kx.v('real', 'bool'), Kx.v('at')];
  /** The state row a scatter writes for this sequence (past the target's rows: inactive, dropped). */
  const rowOf = (w: Node, name: string): KExpr => {
    e.line(`let ${name} = ${V.cast('u32', e.value(w.inputs[1]!, [s]))};`);
    return V.compare('<', Kx.v(name), u(w.shape[0]!));
  };
  const convRowOk = writes.conv ? rowOf(writes.conv, 'conv_row') : undefined;
  const ssmRowOk = writes.ssm ? rowOf(writes.ssm, 'ssm_row') : undefined;
  const projected = projection ? emitSsdProjection(e, projection, { s, h, chunk, g }, { RP, N, P, I, G, perSequence: Hh * split, split }, wg, options) : undefined;
  // phase 1: the workgroup's conv channels
  const q = e.bound(e.fresh('k'), CH - 1);
  const channels = e.nested(() => {
    const c = e.bound(e.fresh('k'), C - 1);
    // the channel's index written as the template states it (not simplified): B and C past the rows' x
    const xRow = V.arith('+', V.arith('*', chunk, u(RP)), q);
    const group = (start: number, skip: number) => V.arith('-', V.arith('+', V.arith('+', u(start), V.arith('*', g, u(N))), q), u(skip));
    const inB = V.compare('<', q, u(RP + N));
    const inX = V.compare('<', q, u(RP));
    e.line(`let ${c} = ${V.select(V.select(group(I + G * N, RP + N), group(I, RP), inB), V.arith('+', V.arith('*', h, u(P)), V.fn('min', [xRow, u(P - 1)])), inX)};`);
    const input = projected ? inProj(q) : e.value(xbc, [s, c]);
    let conv = V.arith('+', e.value(convB, [c]), V.arith('*', e.value(W, [c, e.ix.lit(K - 1)]), input));
    for (let k = 0; k < K - 1; k++) {
      const slot = e.bound(e.fresh('k'), K - 1);
      e.line(`let ${slot} = ${V.arith('%', V.arith('+', at, u(k + 1)), u(K))};`);
      conv = V.arith('+', conv, V.arith('*', e.value(W, [c, e.ix.lit(k)]), e.value(ring, [s, c, slot])));
    }
    e.line(`let conv = ${conv};`);
    e.line(`ssd_ch[${q}] = ${V.arith('*', named('conv'), V.fn('strata_sigmoid', [named('conv')]))};`);
    if (!convOut) return;
    // each channel has one owner: its head's workgroup (x), the group's first head at chunk 0 (B, C)
    const first = V.logic('&&', V.compare('==', V.arith('%', h, u(R)), u(0)), V.compare('==', chunk, u(0)));
    e.line(`let owner = ${V.select(first, V.compare('<', xRow, u(P)), inX)};`);
    if (writes.conv) e.line(`if (${V.logic('&&', V.logic('&&', Kx.v('owner', 'bool'), real), convRowOk!)}) { @B${writes.conv.id}@[${V.arith('+', V.arith('*', V.arith('+', V.arith('*', Kx.v('conv_row'), u(C)), c), u(K)), at)}] = ${input}; }`);
    else {
      e.line(`if (owner) {`);
      for (let k = 0; k < K; k++) e.line(`  ${e.store(root, e.ix.add(e.ix.mul(e.ix.add(e.ix.mul(s, C), c), K), e.ix.lit(k)), V.select(e.value(ring, [s, c, e.ix.lit(k)]), input, V.logic('&&', real, V.compare('==', at, u(k)))))}`);
      e.line(`}`);
    }
  });
  e.line(`for (var ${q}: u32 = lid; ${q} < ${CH}u; ${q} += WG) {`);
  channels.forEach((l) => e.line('  ' + l));
  e.line(`}`);

  if (updates) {
    e.line(`workgroupBarrier();`);
    const dt = named('dt');
    e.line(`var dt = ${V.fn('strata_softplus', [V.arith('+', projected ? inProj(u(CH)) : named('dt_raw'), named('dt_bias'))])};`);
    if (dtMin > 0) e.line(`dt = ${V.fn('max', [dt, f(dtMin)])};`);
    if (dtMax < Infinity) e.line(`dt = ${V.fn('min', [dt, f(dtMax)])};`);
    e.line(`dt = ${V.select(V.lit(0, 'f32'), dt, real)};`);
    e.line(`let decay = ${V.fn('exp', [V.arith('*', dt, named('ssd_a'))])};`);
    /** The pass's updates and read-out, after its rows and state loads (passRows). */
    const passUpdates = ({ pl, p, n, trip, loop }: ReturnType<typeof passRows>) => {
      e.line(`let xv = ${V.select(V.lit(0, 'f32'), wgArray('ssd_ch', V.fn('min', [pl, u(RP - 1)]), CH), real)};`);
      e.line(`var acc: f32 = 0.0;`);
      const update = e.nested(() => {
        const [hv, xv] = [named('hv'), named('xv')];
        e.line(`let hv = ${V.arith('+', V.arith('*', named('decay'), wgArray('ssd_h', trip, trips)), V.arith('*', V.arith('*', dt, xv), wgArray('ssd_ch', V.arith('+', u(RP), n), CH)))};`);
        if (writes.ssm) e.line(`if (${ssmRowOk}) { @B${writes.ssm.id}@[${V.arith('+', V.arith('*', V.arith('+', V.arith('*', V.arith('+', V.arith('*', Kx.v('ssm_row'), u(Hh)), h), u(P)), p), u(N)), n)}] = hv; }`);
        else if (ssmOut) e.line(e.store(root, e.ix.add(e.ix.mul(headRow(p), N), n), hv));
        e.line(`acc = ${V.arith('+', named('acc'), V.arith('*', wgArray('ssd_ch', V.arith('+', u(RP + N), n), CH), hv))};`);
      });
      e.line(`if (ok) {`);
      loop(update, true).forEach((l) => e.line(l));
      e.line(`}`);
      if (!storeY) return;
      e.line(`ssd_red[lid] = acc;`);
      e.line(`workgroupBarrier();`);
      e.line(`if (ok && lane == 0u) {`);
      e.line(`  var y = ${V.arith('*', named('d_skip'), named('xv'))};`);
      e.line(`  for (var j: u32 = 0u; j < ${L}u; j++) { y = ${V.arith('+', named('y'), wgArray('ssd_red', V.arith('+', Kx.v('lid'), Kx.v('j')), wg))}; }`);
      e.line(`  ${e.store(root, headRow(p), named('y'))}`);
      e.line(`}`);
    };
    if (preloaded) passUpdates(preloaded);
    else {
      const p0 = e.bound(e.fresh('k'), Math.max(0, RP - 1));
      const pass = e.nested(() => {
        passUpdates(passRows(p0));
        e.line(`workgroupBarrier();`);
      });
      e.line(`for (var ${p0}: u32 = 0u; ${p0} < ${RP}u; ${p0} += ${RPP}u) {`);
      pass.forEach((l) => e.line('  ' + l));
      e.line(`}`);
    }
  }
  const shared = [`var<workgroup> ssd_ch: array<f32, ${CH}>;`, ...(storeY ? [`var<workgroup> ssd_red: array<f32, ${wg}>;`] : []), ...(projected ?? [])];
  const k = finish(e, 'ssdstep', assemble(e, e.topLines(), wg, shared), groups);
  const also = [writes.ssm, writes.conv, projection?.z ? projection.matmul : undefined].filter((w) => w !== undefined);
  const merged = also.length ? { ...k, alsoWrites: also } : k;
  // printed as ssdstep/in_proj: the kernel computes the in_proj matvec's rows (and writes its z columns)
  return projection ? { ...merged, variant: 'in_proj', nodes: [...new Set([...k.nodes, ...projection.nodes])] } : merged;
}

/**
 * The in_proj rows of the workgroup, after its coordinates are declared: the normed input row staged (its norm as
 * phases), then its x rows, its group's B and C rows and its head's dt row into ssd_in ([x RP | B N | C N | dt],
 * phase 1's channel order), and its share of the z columns (read by the gated norm after the step) stored to the
 * matmul's buffer. Every workgroup of a group recomputes the group's B and C rows. Returns the workgroup arrays.
 */
function emitSsdProjection(e: Emitter, p: SsdProjection, at: Record<'s' | 'h' | 'chunk' | 'g', KExpr>, d: { RP: number; N: number; P: number; I: number; G: number; perSequence: number; split: number }, wg: number, options: SsdStepOptions): string[] {
  const { s, h, chunk, g } = at;
  const { RP, N, P, I, G, perSequence, split } = d;
  const Kd = p.left.shape[p.left.shape.length - 1]!;
  const cols = p.matmul.shape[p.matmul.shape.length - 1]!;
  const lead = delinearize(e.ix, s, p.left.shape.slice(0, -1)).map((x, i) => e.declareTop(`pl${i}`, x));
  stageRow(e, p.left, lead, Kd);
  const u = Kx.u32;
  const into = (base: number) => (r: KExpr, v: string) => `ssd_in[${base ? V.arith('+', u(base), r) : r}] = ${v};`;
  /** Rows `first` + block * size + r of in_proj's weight. */
  const rowsOf = (first: number, block: KExpr, size: number, r: KExpr) => V.arith('+', V.arith('+', u(first), V.arith('*', block, u(size))), r);
  const x: RowSet = { weight: p.weight, width: RP, row: (r) => rowsOf(p.xbc, h, P, V.fn('min', [V.arith('+', V.arith('*', chunk, u(RP)), r), u(P - 1)])), store: into(0) };
  const sets: RowSet[] = [
    { weight: p.weight, width: N, row: (r) => rowsOf(p.xbc + I, g, N, r), store: into(RP) },
    { weight: p.weight, width: N, row: (r) => rowsOf(p.xbc + I + G * N, g, N, r), store: into(RP + N) },
    { weight: p.weight, width: 1, row: () => V.arith('+', u(p.dt), h), store: into(RP + 2 * N) },
  ];
  if (p.z) {
    // a sequence's z columns dealt out evenly among its workgroups: the i-th computes columns i * width ..
    const [first, Z] = p.z;
    const width = Math.ceil(Z / perSequence);
    const local = (r: KExpr) => V.arith('+', V.arith('*', V.arith('+', V.arith('*', h, u(split)), chunk), u(width)), r);
    const z: RowSet = { weight: p.weight, width, row: (r) => V.arith('+', u(first), V.fn('min', [local(r), u(Z - 1)])), store: (r, v) => `if (${V.compare('<', local(r), u(Z))}) { @B${p.matmul.id}@[${V.arith('+', V.arith('+', V.arith('*', s, u(cols)), u(first)), local(r))}] = ${v}; }` };
    // x and z rows as one set where that takes fewer accumulators (granite4h: 16 + 16 rows, one of 32 row threads)
    const rowsAtOnce = wg / LANES;
    const apart = Math.ceil(RP / rowsAtOnce) + Math.ceil(width / rowsAtOnce);
    sets.unshift(...(Math.ceil((RP + width) / rowsAtOnce) < apart ? [concatRows(x, z)] : [x, z]));
  } else sets.unshift(x);
  // the workgroups of a group read the same B and C rows: each starts its K loop at a trip of its own (H200: granite4h's
  // 28 step kernels 0.85 -> 0.74 ms at 256 threads, 0.70 -> 0.66 at 1024)
  emitRowDots(e, Kd, sets, wg, options.subgroups ?? false, options.unroll ?? true, 'gi');
  e.line(`workgroupBarrier();`);
  return [`var<workgroup> proj_x: array<f32, ${Kd}>;`, `var<workgroup> ssd_in: array<f32, ${RP + 2 * N + 1}>;`];
}
