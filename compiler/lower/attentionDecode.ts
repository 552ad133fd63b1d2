// The fused attention kernel for few query rows per sequence (decode): keys split across the workgroup's thread
// groups, each with its own online softmax, combined once at the end (flash-decoding inside one workgroup).
import type { Node } from '../ir.ts';
import { numel } from '../ir.ts';
import { delinearize } from '../indexAlgebra.ts';
import { K, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { Emitter, type LoweredKernel, assemble, finish } from './emitter.ts';
import { type AttentionDecodeVariant, defaultAttentionDecode } from './attentionDecodeVariants.ts';
import type { AttentionProjection } from '../passes/planProjections.ts';
import { emitProjection, projectionFloats } from './attentionProjection.ts';
import { LOWEST, ZERO, expDiff, fv, inverseOf, scaled, softcapped, sumOf } from './attentionValues.ts';

/** Query rows per K/V batch index up to which attention takes this kernel (decode: the query heads of a KV head);
 * from 16 (attentionPrefillKernel.ts TILED_MIN_ROWS) prefill tiles take over. */
export const DECODE_MAX_ROWS = 15;
/**
 * Head dimensions up to which it is used: each lane holds a share of the value row and its trip's loads, so the
 * kernel grows with the head: at 128 (Bamba) 55 KB of WGSL and 14 s of lavapipe compile, at 256 (Gemma 3n,
 * Qwen3-Next) 190 KB and 100 s. Larger heads keep the one-row kernel until this one has a compact form.
 */
export const DECODE_MAX_HEAD_DIM = 64;
/** Most keys a group takes per trip (registers: each key's loads and score). */
const MAX_KEYS = 16;
/** Floats of the shared arrays through which the groups' value accumulators (and, without subgroups, the lanes'
 * partial dot products) are added: 8 KB each, within WebGPU's default 16 KiB of workgroup memory. */
const COMBINE_FLOATS = 2048;
/** Lanes of the smallest subgroup WebGPU allows: up to this many lanes a key add their partial dot products by
 * shuffles unconditionally; more lanes check the subgroup's size at run time. */
const MIN_SUBGROUP = 4;

export interface DecodeOptions {
  subgroups?: boolean;
  unroll?: boolean;
  variant?: AttentionDecodeVariant;
  /** Bytes of workgroup memory the kernel may declare (DeviceLimits.maxComputeWorkgroupStorageSize). */
  workgroupStorage?: number;
  /** The q/k/v projection the kernel computes itself (planProjections.ts, DeviceLimits.attentionProjection). */
  projection?: AttentionProjection;
}

/**
 * One workgroup per query row. Its threads form GROUPS groups of LANES (the variant's `wg` and `lanes`,
 * compiler/lower/attentionDecodeVariants.ts); per trip a group takes KEYS keys below the row's limit (read from
 * the device), and for each of them every lane loads its share of the key and value rows, all loads of the trip
 * written before their first use so that they are in flight together (the value loads do not wait for the
 * scores). The lanes' partial dot products are added by subgroup shuffles (through shared memory without
 * subgroups, or in subgroups smaller than a group), and each group keeps a running max, sum and value accumulators
 * over its keys (online softmax); no barrier runs per trip on the subgroup path. At the end the groups' partials
 * are rescaled to the row's maximum and added through shared memory.
 *
 * Why: the row kernel (attentionKernel.ts) walks 128-key tiles one after another, each a chain of dependent load
 * rounds and workgroup reductions: 26 us per llama-400m decode call at 200 positions on an H200. A decode call
 * reads ~100 KB per query head, so its cost is the number of dependent memory round trips, which this kernel
 * keeps to one or two.
 */
export function lowerAttentionDecode(root: Node, isMat: (n: Node) => boolean, options: DecodeOptions = {}): LoweredKernel {
  const { subgroups = false, unroll = true, variant = defaultAttentionDecode(!unroll), projection } = options;
  const { lanes: LANES, wg: WG, order } = variant;
  // the projection's arrays come out of what the attention's own arrays may use
  const workgroupStorage = (options.workgroupStorage ?? 16384) - (projection ? 4 * projectionFloats(projection) : 0);
  const [q, kT, v, mask, limit] = root.inputs as [Node, Node, Node, Node, Node];
  const { scale, softcap } = (root as Node<'attention' | 'attention_split'>).attrs;
  const weights = root.op === 'attention' && (root as Node<'attention'>).attrs.weights === true;
  // attention_split (compiler/attentionSplit.ts): a workgroup a row and slice of the keys, writing m, l and acc
  const splits = root.op === 'attention_split' ? (root as Node<'attention_split'>).attrs.splits : 0;
  const GROUPS = WG / LANES; // key groups of a workgroup: they walk disjoint keys at once
  const e = new Emitter(root, isMat, 'attention', subgroups);
  e.workgroupSize = WG;
  const r = q.shape.length; // the inputs' rank (a slice's result has one axis more)
  const W = root.shape[root.shape.length - 1]!; // a row of the result: Dv, Dv + E with weights, Dv + 2 for a slice
  const Dv = v.shape[r - 1]!;
  const D = q.shape[r - 1]!;
  const E = kT.shape[r - 1]!;
  const rows = numel(root.shape) / W;
  const out = `@B${root.id}@`;
  const JK = Math.ceil(D / LANES); // key elements per lane
  const JV = Math.ceil(Dv / LANES); // value elements per lane
  // the lanes' dot products go through shared memory without subgroups, and where a group may span subgroups
  const sharedDots = !subgroups || LANES > MIN_SUBGROUP;
  // loads in flight per thread and trip: enough to hide the memory latency, few enough for registers; without
  // unrolling (a software adapter: a load has no latency to hide, lavapipe's compile time grows with the body) a quarter
  const loads = unroll ? variant.loads : variant.loads / 4;
  const JC = Math.min(JV, COMBINE_FLOATS / WG); // value elements per lane added in one combine pass
  // shared floats left for the lanes' dot products: the adapter's workgroup storage less the combine's arrays and
  // a reduction array of WG (declared beside them)
  const left = Math.floor(workgroupStorage / 4) - WG * JC - 2 * GROUPS - WG - 64;
  const dotsCap = sharedDots ? Math.min(COMBINE_FLOATS, left) / WG : MAX_KEYS;
  const KEYS = Math.max(1, Math.floor(Math.min(MAX_KEYS, loads / (JK + JV), dotsCap))); // keys per group and trip
  const C = JC * LANES; // value slots per combine pass (at most 64 <= WG: heads up to 64, lanes a power of two)
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const U = K.u32;
  const lid = K.v('lid');
  /** Element `at` of the result row of this workgroup (gi). */
  const outAt = (at: KExpr) => V.arith('+', V.arith('*', gi, U(W)), at);

  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${rows}u) { return; }`);
  const gi = e.bound('gi', rows - 1);
  const projected = projection ? emitProjection(e, projection, gi, WG, subgroups, unroll) : [];
  const outer = delinearize(e.ix, gi, root.shape.slice(0, -1)).map((s, d) => e.declareTop(`o${d}`, s));
  // a slice's workgroup: its row's coordinates, then its slice (compiler/attentionSplit.ts sliceStart)
  const batch = outer.slice(0, splits ? -2 : -1);
  const m = outer[outer.length - (splits ? 2 : 1)]!;
  const lane = e.bound(e.declareTop('lane', e.ix.mod(K.v('lid'), LANES)), LANES - 1);
  e.bound(e.declareTop('grp', e.ix.div(K.v('lid'), LANES)), GROUPS - 1);
  // element j of a lane's share (J elements) of a row of n: strided lane + j * LANES, blocked lane * J + j
  const at = (j: number, J: number) => (order === 'strided' ? e.ix.add(lane, e.ix.lit(j * LANES)) : e.ix.add(e.ix.mul(lane, J), e.ix.lit(j)));
  const always = (j: number, J: number, n: number) => (order === 'strided' ? j * LANES + LANES - 1 : (LANES - 1) * J + j) < n;
  // clamped where some lane's element j lies past the row (those weigh 0 or are not written)
  const dim = (j: number, J: number, n: number) => (always(j, J, n) ? at(j, J) : e.ix.min(at(j, J), n - 1));
  // this lane's share of the query row, in registers (its prologue, e.g. RoPE, runs once per element)
  const qs = range(JK).map((j) => {
    const x = e.value(q, [...batch, m, dim(j, JK, D)]);
    if (always(j, JK, D)) return x;
    const w = e.fresh('v');
    e.line(`let ${w} = ${V.select(ZERO, x, V.compare('<', at(j, JK), K.u32(D)))};`);
    return fv(w);
  });
  const lim = e.value(limit, [...batch, m]);
  // the trip loop holds subgroup shuffles or barriers: its bound must be uniform, which a value read through
  // workgroup memory is
  e.line(`if (lid == 0u) { att_lim = min(${E}u, u32(max(${lim}, 0))); }`);
  e.line(`let lim = workgroupUniformLoad(&att_lim);`);
  // the keys this workgroup walks: [first, end), end at most the row's limit (uniform: the workgroup's and the
  // limit); a slice's are its share of the row's keys, ceil(s * lim / splits) up to the next slice's first
  const slice = outer[outer.length - 1]!;
  const sliceStart = (at: KExpr) => V.arith('/', V.arith('+', V.arith('*', at, K.v('lim')), K.u32(splits - 1)), K.u32(splits));
  e.line(`let first = ${splits ? sliceStart(slice) : K.u32(0)};`);
  e.line(`let end = ${splits ? sliceStart(V.arith('+', slice, K.u32(1))) : K.v('lim')};`);
  e.line(`var run_max: f32 = -3.0e38;`);
  e.line(`var run_sum: f32 = 0.0;`);
  range(JV).forEach((j) => e.line(`var acc${j}: f32 = 0.0;`));
  const trip = e.nested(() => {
    const keys = range(KEYS).map((u) => {
      const key = e.fresh('k');
      const groupKey = V.arith('+', K.v('t0'), K.v('grp')); // the group's first key of the trip
      e.line(`let ${key} = ${u ? V.arith('+', groupKey, U(u * GROUPS)) : groupKey};`);
      return key;
    });
    const kcs = keys.map((key) => {
      const kc = e.bound(e.fresh('k'), E - 1);
      // inside the loop 0 < lim <= E (the bound above holds either way)
      e.line(`let ${kc} = min(${key}, ${variant.clamp === 'limit' ? 'lim - 1u' : `${E - 1}u`});`);
      return kc;
    });
    // every load of the trip first
    const ks = kcs.map((kc) => range(JK).map((j) => e.value(kT, [...batch, dim(j, JK, D), kc])));
    const vs = kcs.map((kc) => range(JV).map((j) => e.value(v, [...batch, kc, dim(j, JV, Dv)])));
    const oks = kcs.map((kc, u) => V.logic('&&', V.compare('<', K.v(keys[u]!), K.v('end')), e.value(mask, [...batch, m, kc])));
    const dot = (u: number) => fv(`dot${u}`);
    range(KEYS).forEach((u) => e.line(`var dot${u}: f32 = ${sumOf(ks[u]!.map((k, j) => V.arith('*', qs[j]!, k)))};`));
    const shuffled: string[] = [];
    for (let x = 1; x < LANES; x <<= 1) range(KEYS).forEach((u) => shuffled.push(`dot${u} = ${V.arith('+', dot(u), V.shuffleXor(dot(u), K.u32(x)))};`));
    // lane l's partial of key u: where the lanes stored it below
    const partial = (l: number, u: number) => K.load('att_s', V.arith('+', V.arith('*', V.arith('+', V.arith('*', K.v('grp'), U(LANES)), U(l)), U(KEYS)), U(u)), WG * KEYS, 'f32');
    const shared = [
      ...range(KEYS).map((u) => `att_s[${V.arith('+', V.arith('*', lid, U(KEYS)), U(u))}] = dot${u};`),
      `workgroupBarrier();`,
      ...range(KEYS).map((u) => `dot${u} = ${sumOf(range(LANES).map((l) => partial(l, u)))};`),
      `workgroupBarrier();`,
    ];
    if (!sharedDots) shuffled.forEach((l) => e.line(l));
    else if (!subgroups) shared.forEach((l) => e.line(l));
    else e.groupSum(LANES, shuffled, shared); // a group wider than the smallest subgroup
    range(KEYS).forEach((u) => {
      const sc = fv(`sc${u}`);
      e.line(`let ok${u} = ${oks[u]};`);
      e.line(`var sc${u}: f32 = ${scaled(dot(u), scale)};`);
      if (softcap) e.line(`sc${u} = ${softcapped(sc, softcap)};`);
      e.line(`sc${u} = ${V.select(LOWEST, sc, K.v(`ok${u}`, 'bool'))};`);
      // weights: the key's score, made a probability once the row's maximum and sum are known (below)
      if (weights) e.line(`if (${V.logic('&&', V.compare('==', lane, U(0)), V.compare('<', K.v(keys[u]!), K.v('lim')))}) { ${out}[${outAt(V.arith('+', U(Dv), K.v(keys[u]!)))}] = sc${u}; }`);
    });
    const [runMax, runSum, newMax, corr] = ['run_max', 'run_sum', 'new_max', 'corr'].map(fv) as [KExpr, KExpr, KExpr, KExpr];
    const ok = (u: number) => K.v(`ok${u}`, 'bool');
    const p = (u: number) => fv(`p${u}`);
    e.line(`let new_max = ${range(KEYS).reduce((a, u) => V.fn('max', [a, fv(`sc${u}`)]), runMax)};`);
    e.line(`let corr = ${expDiff(runMax, newMax)};`);
    range(KEYS).forEach((u) => e.line(`let p${u} = ${V.select(ZERO, expDiff(fv(`sc${u}`), newMax), ok(u))};`));
    e.line(`run_sum = ${sumOf([V.arith('*', runSum, corr), ...range(KEYS).map(p)])};`);
    e.line(`run_max = new_max;`);
    // a key that is not attended weighs 0 whatever its value row holds (rows past the limit are never written)
    range(JV).forEach((j) => e.line(`acc${j} = ${sumOf([V.arith('*', fv(`acc${j}`), corr), ...range(KEYS).map((u) => V.select(ZERO, V.arith('*', p(u), vs[u]![j]!), ok(u)))])};`));
  });
  e.line(`for (var t0: u32 = first; t0 < end; t0 += ${GROUPS * KEYS}u) {`);
  trip.forEach((l) => e.line('  ' + l));
  e.line(`}`);
  // the groups' partials, rescaled to the row's maximum and added: first the groups of a subgroup by shuffles
  // (each lane pairs with the same lane of another group), then one partial a subgroup (a group without
  // subgroups, or where a group spans subgroups) through shared memory, C value slots a pass
  if (subgroups) {
    e.line(`for (var x: u32 = ${LANES}u; x < sg_size; x <<= 1u) {`);
    const [runMax, otherMax, bothMax, mine, theirs] = ['run_max', 'other_max', 'both_max', 'mine', 'theirs'].map(fv) as KExpr[];
    // a partial (a sum or an accumulator) rescaled to both maxima, plus the other group's
    const merged = (x: KExpr) => V.arith('+', V.arith('*', x, mine!), V.arith('*', V.shuffleXor(x, K.v('x')), theirs!));
    e.line(`  let other_max = ${V.shuffleXor(runMax!, K.v('x'))};`);
    e.line(`  let both_max = ${V.fn('max', [runMax!, otherMax!])};`);
    e.line(`  let mine = ${expDiff(runMax!, bothMax!)};`);
    e.line(`  let theirs = ${expDiff(otherMax!, bothMax!)};`);
    e.line(`  run_sum = ${merged(fv('run_sum'))};`);
    range(JV).forEach((j) => e.line(`  acc${j} = ${merged(fv(`acc${j}`))};`));
    e.line(`  run_max = both_max;`);
    e.line(`}`);
    e.line(`let part = lid / max(sg_size, ${LANES}u);`);
    e.line(`let parts = WG / max(sg_size, ${LANES}u);`);
    e.line(`let writer = sg_lane < ${LANES}u;`);
  } else {
    e.line(`let part = grp;`);
    e.line(`let parts = ${GROUPS}u;`);
    e.line(`let writer = true;`);
  }
  e.line(`if (writer && lane == 0u) { att_m[part] = run_max; }`);
  e.line(`workgroupBarrier();`);
  e.line(`var row_max: f32 = -3.0e38;`);
  const [rowMax, weight] = [fv('row_max'), fv('weight')];
  e.line(`for (var s: u32 = 0u; s < parts; s++) { row_max = ${V.fn('max', [rowMax, K.wgsl('att_m[s]', 'f32')])}; }`);
  e.line(`let weight = ${expDiff(fv('run_max'), rowMax)};`);
  e.line(`if (writer && lane == 0u) { att_l[part] = ${V.arith('*', fv('run_sum'), weight)}; }`);
  e.line(`var inv: f32 = 0.0;`);
  for (let j0 = 0; j0 < JV; j0 += JC) {
    const jn = Math.min(JC, JV - j0); // accumulators of this pass
    // a pass's slot of accumulator j, and the value dimension (and whether it exists) of slot lid
    const slot = (j: number) => (order === 'strided' ? V.arith('+', lane, U((j - j0) * LANES)) : V.arith('+', V.arith('*', lane, U(JC)), U(j - j0)));
    const dimOfLid = order === 'strided' ? V.arith('+', U(j0 * LANES), lid) : V.arith('+', V.arith('+', V.arith('*', V.arith('/', lid, U(JC)), U(JV)), U(j0)), V.arith('%', lid, U(JC)));
    const holds = order === 'strided'
      ? V.compare('<', lid, U(Math.min(C, Dv - j0 * LANES)))
      : V.logic('&&', V.logic('&&', V.compare('<', lid, U(C)), V.compare('<', V.arith('%', lid, U(JC)), U(jn))), V.compare('<', dimOfLid, U(Dv)));
    e.line(`if (writer) {`);
    for (let j = j0; j < j0 + jn; j++) e.line(`  att_acc[${V.arith('+', V.arith('*', K.v('part'), U(C)), slot(j))}] = ${V.arith('*', fv(`acc${j}`), weight)};`);
    e.line(`}`);
    e.line(`workgroupBarrier();`);
    if (j0 === 0) {
      e.line(`var total: f32 = 0.0;`);
      e.line(`for (var s: u32 = 0u; s < parts; s++) { total = ${V.arith('+', fv('total'), K.wgsl('att_l[s]', 'f32'))}; }`);
      e.line(`inv = ${inverseOf(fv('total'))};`);
      if (splits) e.line(`if (lid == 0u) { ${out}[${outAt(U(0))}] = row_max; ${out}[${outAt(U(1))}] = total; }`);
    }
    e.line(`if (${holds}) {`);
    e.line(`  var sum: f32 = 0.0;`);
    e.line(`  for (var s: u32 = 0u; s < parts; s++) { sum = ${V.arith('+', fv('sum'), K.load('att_acc', V.arith('+', V.arith('*', K.v('s'), U(C)), lid), GROUPS * C, 'f32'))}; }`);
    // a slice keeps its sum unnormalised, after its maximum and total
    e.line(`  ${out}[${outAt(splits ? V.arith('+', U(2), dimOfLid) : dimOfLid)}] = ${splits ? 'sum' : V.arith('*', fv('sum'), fv('inv'))};`);
    e.line(`}`);
    if (j0 + JC < JV) e.line(`workgroupBarrier();`);
  }
  // weights: each group's first lane turns the scores it stored into probabilities (keys past the limit: 0); it
  // reads only what it wrote itself, so no barrier is needed, and each row's workgroup owns its row
  if (weights) {
    e.line(`if (lane == 0u) {`);
    e.line(`  for (var k: u32 = grp; k < ${E}u; k += ${GROUPS}u) {`);
    e.line(`    let at = ${outAt(V.arith('+', U(Dv), K.v('k')))};`);
    e.line(`    var p: f32 = 0.0;`);
    e.line(`    if (k < lim) { p = ${V.arith('*', expDiff(K.wgsl(`${out}[at]`, 'f32'), rowMax), fv('inv'))}; }`);
    e.line(`    ${out}[at] = p;`);
    e.line(`  }`);
    e.line(`}`);
  }
  const shared = [
    `var<workgroup> att_lim: u32;`,
    `var<workgroup> att_m: array<f32, ${GROUPS}>;`,
    `var<workgroup> att_l: array<f32, ${GROUPS}>;`,
    `var<workgroup> att_acc: array<f32, ${GROUPS * C}>;`,
    ...(sharedDots ? [`var<workgroup> att_s: array<f32, ${WG * KEYS}>;`] : []),
    ...projected,
  ];
  if (subgroups) e.redTypes.add('f32'); // declares the subgroup builtins
  const lowered = finish(e, 'attention', assemble(e, e.topLines(), WG, shared), rows);
  if (projection) {
    // the kernel writes the cache rows itself and computes the matmuls (no other kernel absorbs into it)
    const nodes = [...projection.nodes, ...projection.matmuls.map((m) => m.node.id), ...projection.scatters.map((s) => s.node.id)];
    return { ...lowered, alsoWrites: projection.scatters.map((s) => s.node), nodes: [...new Set([...lowered.nodes, ...nodes])] };
  }
  // every workgroup may write the rows this step scatters into the caches it reads first (passes/absorbScatters.ts)
  return { ...lowered, absorbsScatters: true };
}
