// The fused attention kernel template (see dsl/nn/attention.ts for the op and its composition).
import type { Node } from '../ir.ts';
import { numel } from '../ir.ts';
import { delinearize } from '../indexAlgebra.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { Emitter, type LoweredKernel, assemble, finish } from './emitter.ts';
import { ZERO, expDiff, fv, inverseOf, scaled, softcapped, sumOf, weightOf } from './attentionValues.ts';

/** Key elements whose loads are written out together in the score loop. */
const UNROLL_D = 16;
/** Keys whose value loads are written out together in the p * v loop. */
const UNROLL_KEYS = 8;

/**
 * Fused attention, one workgroup per query row, keys in tiles of one key per thread below the row's limit (read
 * from the device, so the cost follows the real length, not the capacity). Per tile: each thread scores its key
 * against the query (computed once into shared memory), the workgroup reduces the tile's maximum and sum (online softmax across
 * tiles), the probabilities go to shared memory, and the threads, each owning one value dimension for a share of
 * the tile's keys, accumulate p * v with loads contiguous along the dimension. The shares are added at the end.
 *
 * The earlier kernel (each thread walking its keys with the whole value row in per-thread arrays, then a
 * serial merge) took ~52 us per decode call of llama-400m at 256 positions on an H200.
 */
export function lowerAttention(root: Node, isMat: (n: Node) => boolean, subgroups = false): LoweredKernel {
  const [q, kT, v, mask, limit] = root.inputs as [Node, Node, Node, Node, Node];
  const { scale, softcap, weights } = (root as Node<'attention'>).attrs;
  const e = new Emitter(root, isMat, 'attention', subgroups);
  const r = root.shape.length;
  const W = root.shape[r - 1]!; // a row of the result: Dv, or Dv + E with weights
  const Dv = v.shape[r - 1]!;
  const D = q.shape[r - 1]!;
  const E = kT.shape[r - 1]!;
  const rows = numel(root.shape) / W;
  const out = `@B${root.id}@`;
  const wg = Dv > 128 ? 256 : 128; // keys per tile
  const dvEff = Math.min(Dv, wg); // value dimensions covered by one pass of the threads
  const perThread = Math.ceil(Dv / wg); // value dimensions each thread owns (Dv > wg)
  const shares = Math.floor(wg / dvEff); // threads that split one tile's keys for the same dimension
  const [sc, runMax, runSum, newMax, corr, inv] = ['sc', 'run_max', 'run_sum', 'new_max', 'corr', 'inv'].map(fv) as KExpr[];
  const [kd, kc, kv] = [e.fresh('k'), e.fresh('k'), e.fresh('k')].map((k) => K.v(k)) as [KExpr, KExpr, KExpr];
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${rows}u) { return; }`);
  const gi = e.bound('gi', rows - 1);
  /** Element `at` of the workgroup's result row; the thread's value dimension of pass i. */
  const outAt = (at: KExpr) => V.arith('+', V.arith('*', gi, K.u32(W)), at);
  const dimOf = (i: number) => (i === 0 ? K.v('dim') : V.arith('+', K.v('dim'), K.u32(i * wg)));
  e.bound(kd, Math.max(D, Dv) - 1);
  e.bound(kc, E - 1);
  e.bound(kv, Dv - 1);
  const outer = delinearize(e.ix, gi, root.shape.slice(0, -1)).map((s, d) => e.declareTop(`o${d}`, s));
  const batch = outer.slice(0, -1);
  const m = outer[outer.length - 1]!;
  // the query row, computed once (its prologue, e.g. RoPE, runs once per element) into shared memory
  const qLoad = e.nested(() => e.line(`att_q[${kd}] = ${e.value(q, [...batch, m, kd])};`));
  e.line(`for (var ${kd}: u32 = lid; ${kd} < ${D}u; ${kd} += WG) {`);
  qLoad.forEach((l) => e.line('  ' + l));
  e.line('}');
  const lim = e.value(limit, [...batch, m]);
  // the loop below holds barriers: its bound must be uniform, which a value read through workgroup memory is
  e.line(`if (lid == 0u) { att_lim = min(${E}u, u32(max(${lim}, 0))); }`);
  e.line(`let lim = workgroupUniformLoad(&att_lim);`);
  e.line(`let split = lid / ${dvEff}u;`);
  e.line(`let dim = lid % ${dvEff}u;`);
  e.line(`var run_max: f32 = -3.0e38;`);
  e.line(`var run_sum: f32 = 0.0;`);
  e.line(`var acc: array<f32, ${perThread}>;`);
  // score of this thread's key
  const score = e.nested(() => {
    const ok = e.value(mask, [...batch, m, kc]);
    e.line(`if (t0 + lid < lim && ${ok}) {`);
    // the key's elements in chunks whose loads are written out one after another, so they are in flight together
    // (a plain loop issued one load per trip: ~80 us per decode call of llama-400m at 256 positions on an H200)
    const chunk = Math.min(UNROLL_D, D);
    const kd0 = e.bound(e.fresh('k'), D % chunk === 0 ? D - chunk : D - 1); // it steps by chunk
    e.line(`  var dot: f32 = 0.0;`);
    const dot = e.nested(() => {
      const ks = Array.from({ length: chunk }, (_, u) => e.ix.add(kd0, e.ix.lit(u)));
      const clamp = (k: KExpr) => e.ix.min(k, D - 1); // a no-op, dropped, when chunks divide D
      // a key element past the row (chunks not dividing D) weighs 0
      const term = (k: KExpr, x: KExpr) => {
        const qk = V.arith('*', K.load('att_q', clamp(k), D, 'f32'), x);
        return D % chunk === 0 ? qk : V.arith('*', qk, V.select(ZERO, V.lit(1, 'f32'), V.compare('<', k, K.u32(D))));
      };
      const keys = ks.map((k) => e.value(kT, [...batch, clamp(k), kc]));
      e.line(`dot = ${sumOf([fv('dot'), ...keys.map((x, u) => term(ks[u]!, x))])};`);
    });
    e.line(`  for (var ${kd0}: u32 = 0u; ${kd0} < ${D}u; ${kd0} += ${chunk}u) {`);
    dot.forEach((l) => e.line('    ' + l));
    e.line(`  }`);
    e.line(`  sc = ${scaled(fv('dot'), scale)};`);
    if (softcap) e.line(`  sc = ${softcapped(sc!, softcap)};`);
    e.line(`}`);
  });
  // every block is built before the loop's lines are written: values hoisted while building them land above it
  const pv = Array.from({ length: perThread }, (_, i) =>
    e.nested(() => {
      e.line(`let ${kv} = ${V.fn('min', [dimOf(i), K.u32(Dv - 1)])};`);
      e.line(`var part: f32 = ${V.arith('*', K.wgsl(`acc[${i}]`, 'f32'), corr!)};`);
      // UNROLL_KEYS keys a trip, their value loads in flight together; keys past the tile weigh 0
      const j0 = e.fresh('k');
      const inner = e.nested(() => {
        const terms = Array.from({ length: UNROLL_KEYS }, (_, u) => {
          const j = e.fresh('k');
          e.line(`let ${j} = ${V.arith('+', K.v(j0), K.u32(u * shares))};`);
          const key = e.ix.min(e.ix.add(K.v('t0'), K.v(j)), E - 1);
          const p = V.select(ZERO, K.wgsl(`att_p[min(${j}, WG - 1u)]`, 'f32'), V.compare('<', K.v(j), K.v('tile_len')));
          return V.arith('*', p, e.value(v, [...batch, key, kv]));
        });
        e.line(`part = ${sumOf([fv('part'), ...terms])};`);
      });
      e.line(`for (var ${j0}: u32 = split; ${j0} < tile_len; ${j0} += ${shares * UNROLL_KEYS}u) {`);
      inner.forEach((l) => e.line('  ' + l));
      e.line(`}`);
      e.line(`acc[${i}] = part;`);
    }),
  );
  e.line(`for (var t0: u32 = 0u; t0 < lim; t0 += WG) {`);
  e.line(`  let ${kc} = min(t0 + lid, ${E - 1}u);`);
  e.line(`  var sc: f32 = -3.0e38;`);
  score.forEach((l) => e.line('  ' + l));
  // weights: the key's score, made a probability at the end by the same thread
  const key = V.arith('+', K.v('t0'), K.v('lid')); // the thread's key of the tile
  if (weights) e.line(`  if (${V.compare('<', key, K.v('lim'))}) { ${out}[${outAt(V.arith('+', K.u32(Dv), key))}] = sc; }`);
  e.line(`  let tile_max = ${reduce('max', 'sc', subgroups)};`);
  e.line(`  let new_max = ${V.fn('max', [runMax!, fv('tile_max')])};`);
  // a key scored -3.0e38 (masked, or past the limit) weighs 0
  e.line(`  let p = ${weightOf(sc!, newMax!)};`);
  e.line(`  att_p[lid] = p;`);
  e.line(`  let tile_sum = ${reduce('sum', 'p', subgroups)};`); // its barriers also publish att_p
  e.line(`  let corr = ${expDiff(runMax!, newMax!)};`);
  e.line(`  run_sum = ${V.arith('+', V.arith('*', runSum!, corr!), fv('tile_sum'))};`);
  e.line(`  run_max = new_max;`);
  e.line(`  let tile_len = min(WG, lim - t0);`);
  pv.forEach((body) => {
    e.line(`  if (split < ${shares}u) {`);
    body.forEach((l) => e.line('    ' + l));
    e.line(`  }`);
  });
  e.line(`  workgroupBarrier();`);
  e.line(`}`);
  // add the shares of each dimension
  e.line(`let inv = ${inverseOf(runSum!)};`);
  for (let i = 0; i < perThread; i++) {
    // share `of`'s partial of the thread's dimension
    const shareAt = (of: KExpr) => V.arith('+', V.arith('*', of, K.u32(dvEff)), K.v('dim'));
    e.line(`if (split < ${shares}u) { att_p[${shareAt(K.v('split'))}] = acc[${i}]; }`);
    e.line(`workgroupBarrier();`);
    e.line(`if (${V.logic('&&', V.compare('==', K.v('split'), K.u32(0)), V.compare('<', dimOf(i), K.u32(Dv)))}) {`);
    e.line(`  var total: f32 = 0.0;`);
    e.line(`  for (var s: u32 = 0u; s < ${shares}u; s++) { total = ${V.arith('+', fv('total'), K.load('att_p', shareAt(K.v('s')), shares * dvEff, 'f32'))}; }`);
    e.line(`  ${out}[${outAt(dimOf(i))}] = ${V.arith('*', fv('total'), inv!)};`);
    e.line(`}`);
    e.line(`workgroupBarrier();`);
  }
  if (weights) {
    e.line(`for (var k: u32 = lid; k < ${E}u; k += WG) {`);
    e.line(`  let at = ${outAt(V.arith('+', K.u32(Dv), K.v('k')))};`);
    e.line(`  var p: f32 = 0.0;`);
    e.line(`  if (k < lim) { p = ${V.arith('*', expDiff(K.wgsl(`${out}[at]`, 'f32'), runMax!), inv!)}; }`);
    e.line(`  ${out}[at] = p;`);
    e.line(`}`);
  }
  const shared = [`var<workgroup> att_lim: u32;`, `var<workgroup> att_q: array<f32, ${D}>;`, `var<workgroup> att_p: array<f32, ${wg}>;`, `var<workgroup> att_r: array<f32, ${wg}>;`];
  if (subgroups) e.redTypes.add('f32'); // declares the subgroup builtins
  return finish(e, 'attention', assemble(e, e.topLines(), wg, [...shared, ...reducers(subgroups)]), rows);
}

/** WGSL functions for a workgroup-wide max or sum of a per-thread value, every thread receiving it (they hold barriers). */
function reducers(subgroups: boolean): string[] {
  return (['max', 'sum'] as const).map((op) => {
    const combine = (a: string, b: string) => {
      const [x, y] = [a, b].map((t) => K.wgsl(t, 'f32')) as [KExpr, KExpr];
      return `${op === 'max' ? V.fn('max', [x, y]) : V.arith('+', x, y)}`;
    };
    const init = op === 'max' ? '-3.0e38' : '0.0';
    const body = subgroups
      ? [
          `let sg = ${op === 'max' ? 'subgroupMax' : 'subgroupAdd'}(x);`,
          `if (sg_lane == 0u) { att_r[lid / sg_size] = sg; }`,
          `workgroupBarrier();`,
          `var all: f32 = ${init};`,
          `for (var s: u32 = 0u; s < WG / sg_size; s++) { all = ${combine('all', 'att_r[s]')}; }`,
          `workgroupBarrier();`,
          `return all;`,
        ]
      : [
          `att_r[lid] = x;`,
          `workgroupBarrier();`,
          `for (var s: u32 = WG / 2u; s > 0u; s >>= 1u) { if (lid < s) { att_r[lid] = ${combine('att_r[lid]', 'att_r[lid + s]')}; } workgroupBarrier(); }`,
          `let all = att_r[0];`,
          `workgroupBarrier();`,
          `return all;`,
        ];
    return [`fn wg_${op}(x: f32, lid: u32${subgroups ? ', sg_lane: u32, sg_size: u32' : ''}) -> f32 {`, ...body.map((l) => '  ' + l), '}'].join('\n');
  });
}

/** A call of the reducer above. */
function reduce(op: 'max' | 'sum', x: string, subgroups: boolean): string {
  return `wg_${op}(${x}, lid${subgroups ? ', sg_lane, sg_size' : ''})`;
}
