// The tiled (flash) attention template for many query rows per sequence: prefill and chunked prompts.
import type { Node } from '../ir.ts';
import { numel } from '../ir.ts';
import { delinearize, linearize } from '../indexAlgebra.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { Emitter, type LoweredKernel, assemble, finish } from './emitter.ts';
import { expDiff, fv, inverseOf, scaled, softcapped, weightOf } from './attentionValues.ts';

/**
 * Query rows per sequence (the op's M: query heads of a KV group times tokens) from which the tiled template is
 * used. Decode (one token: M is the group size, 1-8 for the models here) keeps the one-row kernel.
 */
export const TILED_MIN_ROWS = 16;

/** Threads that share one query row: each scores every 8th key of a tile and owns every 8th value dimension. */
const TPR = 8;

/** Most trips of a tile's staging loop written out (a 64-key tile of head size 64 on 128 threads: 32). */
const STAGE_UNROLL = 32;

/** A tile shape: threads, query rows and keys per tile (threads = rows * TPR). */
export interface Tiles {
  threads: number;
  rows: number;
  keys: number;
}
/** Largest first; the first whose workgroup memory fits the device is taken. */
const CANDIDATES: Tiles[] = [
  { threads: 128, rows: 16, keys: 64 }, // head size 64 within 32 KiB (lavapipe's limit; Dawn's on NVIDIA)
  { threads: 128, rows: 16, keys: 32 },
  { threads: 128, rows: 16, keys: 16 },
  { threads: 64, rows: 8, keys: 16 },
  { threads: 64, rows: 8, keys: 8 },
  { threads: 32, rows: 4, keys: 8 },
];

/** Workgroup memory, in 4-byte words: the query tile, the key tile (or the value tile in its place), probabilities, reductions, row limits. */
function words(t: Tiles, D: number, Dv: number): number {
  return t.rows * (D + 1) + Math.max(D * (t.keys + 1), t.keys * Dv) + t.rows * (t.keys + 1) + t.threads + t.rows + 1;
}

/**
 * The tile shape for head sizes D (query/key) and Dv (value) within `storage` bytes of workgroup memory: `chosen`
 * where it fits (DeviceLimits.attentionTiles, a measurement knob), else the largest candidate that does.
 */
export function prefillTiles(D: number, Dv: number, storage: number, chosen?: Tiles | false): Tiles | undefined {
  return [...(chosen ? [chosen] : []), ...CANDIDATES].find((t) => 4 * words(t, D, Dv) <= storage);
}

/** Query rows a tile may take (STRATA_ATTN_TILES): threads are TPR a row. */
export const TILE_ROWS = [4, 8, 16, 32] as const;
/** Keys a tile may take (STRATA_ATTN_TILES). */
export const TILE_KEYS = [8, 16, 32, 64] as const;
/** A tile of `rows` query rows and `keys` keys, TPR threads a row. */
export const tilesOf = (rows: number, keys: number): Tiles => ({ threads: rows * TPR, rows, keys });

/**
 * Flash attention on tiles, one workgroup per (tile of query rows, batch index: the sequence and KV head), so a key
 * or value tile staged in workgroup memory serves every query row of the tile (with GQA folded into the rows, the
 * query heads of a group too). The one-row decode kernel, run once per query row, re-reads the whole K and V of its
 * sequence for every row (512 times per KV head at 128 tokens of llama-400m), reads keys with threads 1 KiB apart
 * (one cache line per thread and load) and walks each row's key tiles one after another through two workgroup
 * reductions apiece: 2048 workgroups of such chains took 1.87 ms per call in an H200 profile (whose runs had grown
 * the cache to thousands of keys, so many tiles a row).
 *
 * Per key tile: the tile's keys are loaded coalesced (threads along the head dimension) into workgroup memory,
 * transposed so that the 8 threads of a row read neighbouring keys; each thread scores keys/8 keys of its row
 * against the row's query (staged once, its prologue such as RoPE run once per element); the row's maximum is
 * combined through workgroup memory (online softmax, running maximum and sum per row, kept by each of the row's
 * threads); the value tile replaces the key tile, and each thread accumulates Dv/8 output elements of its row in
 * registers. Key tiles start at 0 and stop at the largest limit among the tile's rows; the mask and each row's own
 * limit decide every score, as in the one-row kernel (rows with no visible key return 0).
 */
export function lowerAttentionPrefill(root: Node, isMat: (n: Node) => boolean, t: Tiles, unroll = true): LoweredKernel {
  const [q, kT, v, mask, limit] = root.inputs as [Node, Node, Node, Node, Node];
  const { scale, softcap, weights } = (root as Node<'attention'>).attrs;
  const e = new Emitter(root, isMat, 'attention');
  const r = root.shape.length;
  const Dv = v.shape[r - 1]!; // the result's rows hold Dv, or Dv + E with weights
  const M = root.shape[r - 2]!;
  const D = q.shape[r - 1]!;
  const E = kT.shape[r - 1]!;
  const batchShape = root.shape.slice(0, -2);
  const { threads: WG, rows: BM, keys: BN } = t;
  const KPT = BN / TPR; // keys each thread scores
  const DPT = Math.ceil(Dv / TPR); // output elements each thread accumulates
  const NT = Math.ceil(M / BM);
  const groups = numel(batchShape) * NT;
  const [runMax, newMax, corr] = ['run_max', 'new_max', 'corr'].map(fv) as [KExpr, KExpr, KExpr];
  const acc = (i: number) => fv(`acc_${i}`);
  const [QS, KS, PS] = [D + 1, BN + 1, BN + 1]; // padded strides: threads of a warp hit different banks
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const gi = e.bound('gi', groups - 1);
  const batch = delinearize(e.ix, e.ix.div(gi, NT), batchShape).map((s, d) => e.declareTop(`o${d}`, s));
  const m0 = e.declareTop('m0', e.ix.mul(e.ix.mod(gi, NT), BM));
  const row = e.bound(e.declareTop('row', e.ix.div(K.v('lid'), TPR)), BM - 1);
  e.declareTop('lane', e.ix.mod(K.v('lid'), TPR));
  const m = e.declareTop('m', e.ix.min(e.ix.add(m0, row), M - 1));
  e.line(`let row_ok = ${e.ix.add(m0, row)} < ${M}u;`);
  const out = `@B${root.id}@`;
  // the result row's first element (its stride is Dv + E with weights)
  const base = linearize(e.ix, [...batch, m, e.ix.lit(0)], root.shape);
  if (weights) e.line(`let row_base = ${base};`);
  const rowBase = weights ? K.v('row_base') : base;
  const U = K.u32;
  const [lane, rowV, lid] = [K.v('lane'), K.v('row'), K.v('lid')];
  /** Element i of a workgroup array of f32 (the length is the array's, for the expression's record). */
  const wgArray = (name: string, i: KExpr, length: number) => K.load(name, i, length, 'f32');
  /** The thread's key j of a tile (lane, lane + TPR, ...), and its slot of the row's scores. */
  const keyOf = (j: KExpr) => V.arith('+', lane, V.arith('*', j, U(TPR)));
  const scoreAt = (c: KExpr) => V.arith('+', V.arith('*', rowV, U(PS)), c);

  // every block is built before the lines around it are written: values hoisted while building land above
  const el = e.bound(e.fresh('k'), WG * Math.ceil(Math.max(BM * D, BN * D, BN * Dv) / WG) - 1);
  // a tile of `rows` x `cols` elements copied into workgroup memory, threads along the columns (contiguous in
  // memory for the query, key and value layouts the models use); `at` names the row's index in the source, `write`
  // gives the element's place in workgroup memory and its value
  type Write = (row: KExpr, col: KExpr, at: KExpr, el: KExpr) => [string, KExpr];
  const element = (el: KExpr, rows: number, rowBase: KExpr, rowMax: number, cols: number, write: Write): { lines: string[]; store: [string, KExpr] } => {
    let store: [string, KExpr] | undefined;
    const lines = e.nested(() => {
      const [tr, tc, at] = [e.fresh('k'), e.fresh('k'), e.fresh('k')].map((k) => K.v(k)) as [KExpr, KExpr, KExpr];
      // el stays below rows * cols
      e.line(`let ${e.bound(tr, rows - 1)} = ${e.ix.div(el, cols)};`);
      e.line(`let ${e.bound(tc, cols - 1)} = ${e.ix.mod(el, cols)};`);
      e.line(`let ${e.bound(at, rowMax)} = ${e.ix.min(e.ix.add(rowBase, tr), rowMax)};`);
      store = write(tr, tc, at, el);
    });
    return { lines, store: store! };
  };
  // { loads, stores }: written out, the loads are issued before the stores (the value tile's with the key tile's, held
  // in registers through the scores); as a loop, all of it is in `stores`
  const stage = (rows: number, rowBase: KExpr, rowMax: number, cols: number, write: Write): { loads: string[]; stores: string[] } => {
    const trips = (rows * cols) / WG;
    if (unroll && Number.isInteger(trips) && trips <= STAGE_UNROLL) {
      // written out trip by trip, every trip's load before the first store: a thread's loads are in flight together
      // (as a loop, each trip's load waited for the one before it: one memory latency per trip, 32 a key tile)
      const loads: string[] = [];
      const stores: string[] = [];
      for (let i = 0; i < trips; i++) {
        const el = e.bound(e.fresh('k'), (i + 1) * WG - 1);
        loads.push(`let ${el} = ${V.arith('+', lid, U(i * WG))};`);
        const { lines, store } = element(el, rows, rowBase, rowMax, cols, write);
        const held = e.fresh('st');
        loads.push(...lines, `let ${held}: f32 = ${store[1]};`);
        stores.push(`${store[0]} = ${held};`);
      }
      return { loads, stores };
    }
    const { lines, store } = element(el, rows, rowBase, rowMax, cols, write);
    return { loads: [], stores: [`for (var ${el}: u32 = lid; ${el} < ${rows * cols}u; ${el} += ${WG}u) {`, ...[...lines, `${store[0]} = ${store[1]};`].map((l) => '  ' + l), `}`] };
  };
  const qLoad = stage(BM, m0, M - 1, D, (qr, qd, qm) => [`att_q[${V.arith('+', V.arith('*', qr, U(QS)), qd)}]`, e.value(q, [...batch, qm, qd])]);
  const kLoad = stage(BN, K.v('t0'), E - 1, D, (kc, kd, key) => [`att_kv[${V.arith('+', V.arith('*', kd, U(KS)), kc)}]`, e.value(kT, [...batch, kd, key])]);
  const vLoad = stage(BN, K.v('t0'), E - 1, Dv, (_vc, vd, key, el) => [`att_kv[${el}]`, e.value(v, [...batch, key, vd])]);
  const jj = e.bound(e.fresh('k'), KPT - 1);
  const kk = e.bound(e.fresh('k'), E - 1);
  const scoreBody = e.nested(() => {
    const ok = e.value(mask, [...batch, m, kk]);
    e.line(`if (t0 + c < lim && ${ok}) {`);
    e.line(`  sc = ${scaled(K.wgsl('att_p[pc]', 'f32'), scale)};`);
    if (softcap) e.line(`  sc = ${softcapped(fv('sc'), softcap)};`);
    e.line(`}`);
  });
  const limBody = e.nested(() => e.line(`let lim = select(0u, min(${E}u, u32(max(${e.value(limit, [...batch, m])}, 0))), row_ok);`));

  [...qLoad.loads, ...qLoad.stores].forEach((l) => e.line(l));
  limBody.forEach((l) => e.line(l));
  e.line(`if (lane == 0u) { att_rl[row] = lim; }`);
  e.line(`workgroupBarrier();`);
  e.line(`if (lid == 0u) {`);
  e.line(`  var most: u32 = 0u;`);
  e.line(`  for (var s: u32 = 0u; s < ${BM}u; s++) { most = max(most, att_rl[s]); }`);
  e.line(`  att_tl = most;`);
  e.line(`}`);
  // the key loop holds barriers: its bound must be uniform, which a value read through workgroupUniformLoad is
  e.line(`let tile_lim = workgroupUniformLoad(&att_tl);`);
  e.line(`var run_max: f32 = -3.0e38;`);
  e.line(`var run_sum: f32 = 0.0;`);
  for (let i = 0; i < DPT; i++) e.line(`var acc_${i}: f32 = 0.0;`);
  e.line(`for (var t0: u32 = 0u; t0 < tile_lim; t0 += ${BN}u) {`);
  [...kLoad.loads, ...vLoad.loads, ...kLoad.stores].forEach((l) => e.line('  ' + l));
  e.line(`  workgroupBarrier();`);
  // scores of this thread's keys lane, lane + 8, ... against its row's query
  // registers as named scalars, not arrays indexed in loops (which a driver may leave in memory)
  for (let j = 0; j < KPT; j++) e.line(`  var dot_${j}: f32 = 0.0;`);
  e.line(`  for (var d: u32 = 0u; d < ${D}u; d++) {`);
  const d = K.v('d');
  e.line(`    let qv = ${wgArray('att_q', V.arith('+', V.arith('*', rowV, U(QS)), d), BM * QS)};`);
  for (let j = 0; j < KPT; j++) e.line(`    dot_${j} = ${V.arith('+', fv(`dot_${j}`), V.arith('*', fv('qv'), wgArray('att_kv', V.arith('+', V.arith('*', d, U(KS)), V.arith('+', lane, U(j * TPR))), D * KS)))};`);
  e.line(`  }`);
  for (let j = 0; j < KPT; j++) e.line(`  att_p[${scoreAt(V.arith('+', lane, U(j * TPR)))}] = dot_${j};`);
  e.line(`  var part_max: f32 = -3.0e38;`);
  e.line(`  for (var ${jj}: u32 = 0u; ${jj} < ${KPT}u; ${jj}++) {`);
  const [c, t0] = [K.v('c'), K.v('t0')];
  e.line(`    let c = ${keyOf(jj)};`);
  e.line(`    let pc = ${scoreAt(c)};`);
  e.line(`    let ${kk} = ${V.fn('min', [V.arith('+', t0, c), U(E - 1)])};`);
  e.line(`    var sc: f32 = -3.0e38;`);
  scoreBody.forEach((l) => e.line('    ' + l));
  e.line(`    att_p[pc] = sc;`);
  // weights: the key's score, made a probability at the end by the same thread
  /** The result row's place for key k's probability (after the row's Dv outputs). */
  const weightAt = (k: KExpr) => V.arith('+', V.arith('+', rowBase, U(Dv)), k);
  if (weights) e.line(`    if (${V.logic('&&', K.v('row_ok', 'bool'), V.compare('<', V.arith('+', t0, c), K.v('lim')))}) { ${out}[${weightAt(V.arith('+', t0, c))}] = sc; }`);
  e.line(`    part_max = ${V.fn('max', [fv('part_max'), fv('sc')])};`);
  e.line(`  }`);
  e.line(`  att_r[lid] = part_max;`);
  e.line(`  workgroupBarrier();`); // publishes the partial maxima; every key read is done
  vLoad.stores.forEach((l) => e.line('  ' + l));
  e.line(`  var new_max = run_max;`);
  e.line(`  for (var s: u32 = 0u; s < ${TPR}u; s++) { new_max = ${V.fn('max', [newMax, wgArray('att_r', V.arith('+', V.arith('*', rowV, U(TPR)), K.v('s')), WG)])}; }`);
  e.line(`  for (var j: u32 = 0u; j < ${KPT}u; j++) {`);
  e.line(`    let c = ${scoreAt(keyOf(K.v('j')))};`);
  e.line(`    let sc = att_p[c];`);
  e.line(`    att_p[c] = ${weightOf(fv('sc'), newMax)};`);
  e.line(`  }`);
  e.line(`  let corr = ${expDiff(runMax, newMax)};`);
  e.line(`  run_max = new_max;`);
  e.line(`  workgroupBarrier();`); // publishes the value tile and the probabilities
  for (let i = 0; i < DPT; i++) e.line(`  acc_${i} = ${V.arith('*', acc(i), corr)};`);
  e.line(`  var p_sum: f32 = 0.0;`);
  // keys past the tile limit weigh 0: they are left out, so no value read at an unwritten position can reach the sum
  e.line(`  let n_keys = min(${BN}u, tile_lim - t0);`);
  e.line(`  for (var c: u32 = 0u; c < n_keys; c++) {`);
  e.line(`    let p = ${wgArray('att_p', scoreAt(c), BM * PS)};`);
  e.line(`    p_sum = ${V.arith('+', fv('p_sum'), fv('p'))};`);
  for (let i = 0; i < DPT; i++) {
    const dim = V.arith('+', lane, U(i * TPR)); // the thread's value dimension i
    const value = wgArray('att_kv', V.arith('+', V.arith('*', c, U(Dv)), (i + 1) * TPR <= Dv ? dim : V.fn('min', [dim, U(Dv - 1)])), BN * Dv);
    e.line(`    acc_${i} = ${V.arith('+', acc(i), V.arith('*', fv('p'), value))};`);
  }
  e.line(`  }`);
  e.line(`  run_sum = ${V.arith('+', V.arith('*', fv('run_sum'), corr), fv('p_sum'))};`);
  e.line(`  workgroupBarrier();`); // the next tile overwrites keys and probabilities
  e.line(`}`);
  e.line(`if (row_ok) {`);
  e.line(`  let inv = ${inverseOf(fv('run_sum'))};`);
  for (let i = 0; i < DPT; i++) {
    const dim = V.arith('+', lane, U(i * TPR));
    const store = `${out}[${V.arith('+', rowBase, dim)}] = ${V.arith('*', acc(i), fv('inv'))};`;
    e.line((i + 1) * TPR <= Dv ? `  ${store}` : `  if (${V.compare('<', dim, U(Dv))}) { ${store} }`);
  }
  if (weights) {
    // the keys lane, lane + 8, ... are the ones this thread scored in every tile
    e.line(`  for (var k: u32 = lane; k < ${E}u; k += ${TPR}u) {`);
    e.line(`    var p: f32 = 0.0;`);
    e.line(`    if (k < lim) { p = ${V.arith('*', expDiff(K.wgsl(`${out}[${weightAt(K.v('k'))}]`, 'f32'), runMax), fv('inv'))}; }`);
    e.line(`    ${out}[${weightAt(K.v('k'))}] = p;`);
    e.line(`  }`);
  }
  e.line(`}`);
  const shared = [
    `var<workgroup> att_q: array<f32, ${BM * QS}>;`,
    `var<workgroup> att_kv: array<f32, ${Math.max(D * KS, BN * Dv)}>;`,
    `var<workgroup> att_p: array<f32, ${BM * PS}>;`,
    `var<workgroup> att_r: array<f32, ${WG}>;`,
    `var<workgroup> att_rl: array<u32, ${BM}>;`,
    `var<workgroup> att_tl: u32;`,
  ];
  return finish(e, 'attention', assemble(e, e.topLines(), WG, shared), groups);
}
