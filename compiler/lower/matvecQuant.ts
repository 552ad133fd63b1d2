// The matvec's K loop when every weight is block-quantized and read directly (variants 'lanes', 'wide' and 'staged'
// of DeviceLimits.quantMatvec; 'word' keeps the generic loop of matvecKernel.ts). All decode without int-to-float
// conversions (MantissaWord) and share each trip's x, scaled and summed, by the workgroup's columns.
//
// 'lanes' (like llama.cpp's Vulkan mat-vec): adjacent threads read adjacent packed words (whole 128-byte lines
// per warp load) and x where they need it, scalar loads 16 (q8) or 32 (q4) bytes apart across a warp.
// 'wide': as lanes, but a thread reads one u32x4 of every column per trip (a whole q4 block, half a q8 one): a
// fourth of lanes' weight loads and block constants per element, x read where needed (no staging copy).
// 'staged': the workgroup's rows of x are first copied to workgroup memory (the prologue evaluated once per
// element, adjacent threads at adjacent elements; in chunks of K when all of it does not fit), then each thread
// reads one u32x4 of every column per trip (16 q8 or 32 q4 elements: one block's constants, few index operations
// per element) and its x as vec4s, padded so that a quarter-warp's vec4s fall in distinct banks.
import { type Node, numel } from '../ir.ts';
import { QUANT_BLOCK, QUANT_FORMATS, type QuantStorage, quantWord } from '../quantized.ts';
import { K as Kx, type KExpr, isLit } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import type { Emitter } from './emitter.ts';
import type { MatvecPlan } from './matvecKernel.ts';

export interface QuantLoop {
  plan: MatvecPlan;
  K: number;
  /** Rows of the workgroup, and its columns (weight rows). */
  MB: number;
  R: number;
  wg: number;
  /** Elements a thread takes per trip (quantStep). */
  U: number;
  unroll: boolean;
  rowIdx: (mm: Node, i: number) => KExpr[];
  colIdx: KExpr[];
  acc: (t: number, i: number, c: number) => string;
}

/** The u32 components of a named u32x4, written as they were (`qv3[0]`, not `qv3[0u]`). */
export const components = (v: KExpr | string): KExpr[] => [0, 1, 2, 3].map((j) => Kx.wgsl(`${v}[${j}]`, 'u32'));


const storageOf = (w: Node) => (w as Node<'weight'>).attrs.storage as QuantStorage;

/**
 * Elements a thread takes per trip: lanes, one packed word (of the q4 weight when there is one: 8, else 4); staged,
 * one u32x4 (32 q4 elements, a whole block; 16 q8, half of one; 32 when q4 and q8 meet).
 */
export function quantStep(plan: MatvecPlan, staged: boolean): number {
  return Math.max(...plan.weights.map((w) => QUANT_FORMATS[storageOf(w!)].perWord * (staged ? 4 : 1)));
}

/**
 * vec4s of one row's staged chunk of C elements: a vec4 of padding after every 8, so that the vec4s a quarter-warp
 * reads (lanes 16 or 32 elements apart) fall in distinct banks.
 */
export function stagedRow(C: number): number {
  return C / 4 + Math.ceil(C / 32);
}
/** Where element vec4 `v` of row `i`'s chunk lies in mv_x: past a padding vec4 every 8 (stagedRow). */
export const stagedAt = (C: number, i: number, v: KExpr): KExpr => padded(i * stagedRow(C), v);

/** Vec4 `v` of a staged row that starts at vec4 `start`, a padding vec4 after every 8: start + v + v / 8. */
export const padded = (start: number, v: KExpr): KExpr => V.arith('+', V.arith('+', Kx.u32(start), v), V.shift('>>', v, Kx.u32(3)));

/**
 * One 32-element block of x as 8 vec4<f32> words (`words`: each word's 4 elements), bound, with the block's max |x|
 * and sum x: the statistics the dot4 and half loops quantize a block with.
 */
export function blockStatistics(e: Emitter, words: readonly (readonly KExpr[])[]): { vs: KExpr[]; amax: KExpr; sum: KExpr } {
  const vs = words.map((four) => e.named('xv', V.vector(four)));
  const tree = (xs: readonly KExpr[], f: (a: KExpr, b: KExpr) => KExpr): KExpr => (xs.length === 1 ? xs[0]! : f(tree(xs.slice(0, xs.length / 2), f), tree(xs.slice(xs.length / 2), f)));
  const max = (a: KExpr, b: KExpr) => V.fn('max', [a, b]);
  const amax4 = e.named('xa', tree(vs.map((v) => V.fn('abs', [v])), max));
  const amax = e.named('xa', max(max(V.field(amax4, 'x'), V.field(amax4, 'y')), max(V.field(amax4, 'z'), V.field(amax4, 'w'))));
  const sum = e.named('xs', V.dot(tree(vs, (a, b) => V.arith('+', a, b)), V.splat(4, V.lit(1, 'f32'))));
  return { vs, amax, sum };
}

/**
 * Workgroup memory of the staged x: `chunk` elements of K for each of the MB rows (K in `chunks` chunks of whole
 * blocks), or undefined when not even one block per row fits in `bytes`.
 */
export function stagedChunk(K: number, MB: number, bytes: number): { chunk: number; chunks: number } | undefined {
  return chunkFitting(K, (C) => stagedRow(C) * MB * 16 <= bytes);
}

/** The fewest equal chunks of whole blocks that K splits into with `fits(chunk)`, or undefined when not even one block fits. */
export function chunkFitting(K: number, fits: (chunk: number) => boolean): { chunk: number; chunks: number } | undefined {
  const blocks = K / QUANT_BLOCK;
  for (let chunks = 1; chunks <= blocks; chunks++) if (blocks % chunks === 0 && fits(K / chunks)) return { chunk: K / chunks, chunks };
  return undefined;
}

/** The stride of a strided loop of `len` steps written out trip by trip (a workgroup's width), or undefined for a
 * loop: on GPUs while trips x rows stay at 16 or fewer (every trip repeats each row's code). */
export function unrolledStride(q: QuantLoop, len: number): number | undefined {
  return q.unroll && Math.ceil(len / q.wg) * q.MB <= 16 ? q.wg : undefined;
}

/** A staged K loop's lines: `body` of chunk 0 when K is one chunk, else a loop over the chunks. */
export function overChunks(e: Emitter, chunks: number, body: (ch: KExpr) => string[]): string[] {
  if (chunks === 1) return body(e.ix.lit(0));
  const ch = e.bound(e.fresh('k'), chunks - 1);
  // the barrier at the top: no thread overwrites a chunk another still reads
  const lines = e.nested(() => body(ch).forEach((l) => e.line(l)));
  return [`for (var ${ch}: u32 = 0u; ${ch} < ${chunks}u; ${ch}++) {`, '  workgroupBarrier();', ...lines.map((l) => '  ' + l), '}'];
}

/**
 * The K loop's lines. Lanes: each trip reads x where it needs it. Staged: each chunk of the rows' x is copied to
 * workgroup memory `mv_x` (adjacent threads at adjacent elements, the prologue evaluated once per element), then
 * each thread reads its u32x4 of every column and its x as vec4s. Without room for even one block of x (never
 * with WebGPU's 16 KiB) the staged step reads x where it needs it.
 */
export function quantLoop(e: Emitter, q: QuantLoop, staged: { chunk: number; chunks: number } | undefined): string[] {
  const { K, MB } = q;
  const U = q.U;
  const unrolled = (len: number) => unrolledStride(q, len);
  if (!staged) return e.stridedLoop('lid', K / U, unrolled(K / U), (p) => quantTrip(e, q, p));
  const C = staged.chunk;
  const x = q.plan.matmuls[0]!.inputs[0]!;
  // every thread copies vec4s lid, lid + WG, ... of each row's chunk (adjacent threads read adjacent x), one store each
  const stage = (ch: KExpr) => {
    const out: string[] = [];
    for (let i = 0; i < MB; i++)
      out.push(
        ...e.stridedLoop('lid', C / 4, unrolled(C / 4), (v) => {
          const k = e.bound(e.fresh('k'), K - 4);
          e.line(`let ${k} = ${e.ix.add(e.ix.mul(ch, C), e.ix.mul(v, 4))};`);
          const xs = [0, 1, 2, 3].map((j) => e.value(x, [...q.rowIdx(q.plan.matmuls[0]!, i), e.ix.add(k, e.ix.lit(j))]));
          e.line(`mv_x[${stagedAt(C, i, v)}] = ${V.vector(xs)};`);
        }),
      );
    return [...out, 'workgroupBarrier();'];
  };
  // the trip's vec4s are contiguous in mv_x: U / 4 (4 or 8) of them never straddle a padding vec4
  const xAt = (pp: KExpr) => (i: number, g: number) => {
    const at = stagedAt(C, i, V.arith('*', pp, Kx.u32(U / 4)));
    return Kx.load('mv_x', g ? V.arith('+', at, Kx.u32(g)) : at, MB * stagedRow(C), 'vec4<f32>');
  };
  return stagedTrips(e, q, staged, unrolled(C / U), stage, (p, pp, loaded) => quantTrip(e, q, p, xAt(pp), loaded));
}

/**
 * A staged K loop ('staged' here, 'half' in matvecHalf.ts): K as one chunk written out trip by trip (`stride`
 * apart) loads every trip's weights before `stage` copies x (preloadedTrips); otherwise each chunk is staged, then
 * its trips run. `trip` gets block `p` of K, `pp` within the chunk, and the preloaded columns where there are any.
 */
export function stagedTrips(
  e: Emitter,
  q: QuantLoop,
  { chunk: C, chunks }: { chunk: number; chunks: number },
  stride: number | undefined,
  stage: (ch: KExpr) => string[],
  trip: (p: KExpr, pp: KExpr, loaded?: Column[][]) => void,
): string[] {
  const { K, U } = q;
  if (chunks === 1 && stride !== undefined) {
    const { loads, compute } = preloadedTrips(e, q, C, stride, (pp, loaded) => trip(pp, pp, loaded));
    return [...loads, ...stage(e.ix.lit(0)), ...compute];
  }
  const body = (ch: KExpr) => [
    ...stage(ch),
    ...e.stridedLoop('lid', C / U, stride, (pp) => {
      const p = isLit(ch, 0) ? pp : e.bound(e.fresh('k'), K / U - 1);
      if (p !== pp) e.line(`let ${p} = ${e.ix.add(e.ix.mul(ch, C / U), pp)};`);
      trip(p, pp);
    }),
  ];
  return overChunks(e, chunks, body);
}

/**
 * The trips of K as one chunk of C elements written out (`stride` apart), every trip's weight loads first: they go
 * before the staging of x, in flight while it is copied and the barrier waits; then each trip's `compute`.
 */
export function preloadedTrips(e: Emitter, q: QuantLoop, C: number, stride: number, trip: (pp: KExpr, loaded: Column[][]) => void): { loads: string[]; compute: string[] } {
  const { K, U } = q;
  const trips = Math.ceil(C / U / stride);
  const steps: { pp: KExpr; loaded: Column[][] }[] = [];
  const loads = e.nested(() => {
    for (let t = 0; t < trips; t++) {
      const pp = e.bound(e.fresh('k'), K / U - 1); // a partial last trip loads past the row (clamped reads), unused
      e.line(`let ${pp} = lid${t ? ` + ${t * stride}u` : ''};`);
      steps.push({ pp, loaded: q.plan.matmuls.map((_, m) => Array.from({ length: q.R }, (_, c) => loadColumn(e, q, m, c, pp))) });
    }
  });
  const compute = steps.flatMap(({ pp, loaded }, t) => {
    const lines = e.nested(() => trip(pp, loaded));
    return (t + 1) * stride > C / U ? [`if (${pp} < ${C / U}u) {`, ...lines.map((l) => '  ' + l), '}'] : ['{', ...lines.map((l) => '  ' + l), '}'];
  });
  return { loads, compute };
}

/**
 * One trip: word step `p` of K (elements p*U .. p*U+U-1) for every (matmul, row, column). Per row the trip's x is
 * read (from `mv_x`, vec4 g of row i `xAt(i, g)`, when staged) and scaled by each element's k_u, with sum o_u x_u and sum x_u;
 * per column its words and block constants are loaded and decoded once; per (row, column) the dot is
 * d * (sum (k x) v - sum o x) + m * sum x (MantissaWord). `loaded`: the columns' loads, made earlier (loadTrip).
 */
function quantTrip(e: Emitter, q: QuantLoop, p: KExpr, xAt?: (i: number, g: number) => KExpr, loaded?: Column[][]): void {
  const { plan, K, MB, R, U } = q;
  const k0 = e.bound(e.ix.mul(p, U), K - U);
  const ks = Array.from({ length: U }, (_, u) => e.ix.add(k0, e.ix.lit(u)));
  // x of row i at the trip's elements: the emitter's values (memoized), or vec4s of the staged chunk
  const staged = new Map<number, KExpr[]>();
  const xOf = (mm: Node, i: number): KExpr[] => {
    if (!xAt) return ks.map((k) => e.value(mm.inputs[0]!, [...q.rowIdx(mm, i), k]));
    let xs = staged.get(i);
    if (!xs) {
      const vs = Array.from({ length: U / 4 }, (_, g) => e.named('xv', xAt(i, g)));
      xs = ks.map((_, u) => V.field(vs[u >> 2]!, 'xyzw'[u & 3] as 'x'));
      staged.set(i, xs);
    }
    return xs;
  };
  // per (left operand, row, format): k_u x_u, sum o_u x_u, sum x_u
  const prepared = new Map<string, { kx: KExpr[]; ox: KExpr; x: KExpr }>();
  const prepare = (mm: Node, i: number, storage: QuantStorage) => {
    const key = `${mm.inputs[0]!.id}|${i}|${storage}`;
    const hit = prepared.get(key);
    if (hit) return hit;
    const f = QUANT_FORMATS[storage];
    const xs = xOf(mm, i);
    const kx = xs.map((x, u) => e.named('kx', V.arith('*', V.lit(f.mantissa.k(u % f.perWord), 'f32'), x)));
    // elements grouped by o_u: sum o x = sum over groups of o * (the group's x summed)
    const groups = new Map<number, KExpr[]>();
    xs.forEach((x, u) => groups.set(f.mantissa.o(u % f.perWord), [...(groups.get(f.mantissa.o(u % f.perWord)) ?? []), x]));
    const sums = [...groups].map(([o, g]) => [o, e.named('sx', V.sum(g))] as const);
    const ox = e.named('sx', V.sum(sums.map(([o, s]) => V.arith('*', V.lit(o, 'f32'), s))));
    const x = sums.length > 1 ? e.named('sx', V.sum(sums.map(([, s]) => s))) : sums[0]![1];
    const r = { kx, ox, x };
    prepared.set(key, r);
    return r;
  };
  plan.matmuls.forEach((mm, t) => {
    const storage = storageOf(plan.weights[t]!);
    const f = QUANT_FORMATS[storage];
    for (let i = 0; i < MB; i++) prepare(mm, i, storage);
    for (let c = 0; c < R; c++) {
      const fresh = (x: string) => e.fresh(x);
      const { d, m, words: wordExprs } = loaded?.[t]![c] ?? loadColumn(e, q, t, c, p);
      const vs: KExpr[] = [];
      for (const expr of wordExprs) {
        const word = e.fresh('qw');
        e.line(`let ${word} = ${expr};`);
        const dec = f.mantissa.decode(Kx.v(word), fresh);
        dec.lines.forEach((l) => e.line(l));
        for (const v of dec.values) {
          const name = e.fresh('qf');
          e.line(`let ${name} = ${v};`);
          vs.push(Kx.v(name, 'f32'));
        }
      }
      for (let i = 0; i < MB; i++) {
        const { kx, ox, x } = prepare(mm, i, storage);
        const a = Kx.v(q.acc(t, i, c), 'f32');
        const dot = V.arith('+', a, V.arith('*', d, V.arith('-', V.sum(kx.map((k, u) => V.arith('*', k, vs[u]!))), ox)));
        e.line(`${a} = ${m ? V.arith('+', dot, V.arith('*', m, x)) : dot};`);
      }
    }
  });
}

/** A column's block constants and packed words (WGSL expressions) for one trip. */
export interface Column {
  d: KExpr;
  m?: KExpr;
  words: KExpr[];
}

/** Loads column `c` of matmul `t`'s weight for trip `p`: its block's constants and its packed words. */
export function loadColumn(e: Emitter, q: QuantLoop, t: number, c: number, p: KExpr): Column {
  const { K, U } = q;
  const w = q.plan.weights[t]!;
  const f = QUANT_FORMATS[storageOf(w)];
  const buf = e.buffer(w);
  const col = q.colIdx[c]!;
  const words = U / f.perWord;
  // U divides a block (at most 32): one block's constants per trip
  const cst = f.mantissa.constants(buf, e.ix.add(e.ix.mul(col, K / QUANT_BLOCK), e.ix.div(p, QUANT_BLOCK / U)), numel(w.shape), (x) => e.fresh(x));
  cst.lines.forEach((l) => e.line(l));
  // one u32 load a word, or whole u32x4 (staged: U a multiple of 4 words)
  const exprs: KExpr[] = [];
  if (words % 4 === 0)
    for (let h = 0; h < words / 4; h++) {
      const v = e.fresh('qv');
      e.line(`let ${v} = ${buf}[${e.ix.add(e.ix.mul(col, K / f.perWord / 4), words > 4 ? e.ix.add(e.ix.mul(p, words / 4), e.ix.lit(h)) : p)}];`);
      exprs.push(...components(v));
    }
  else for (let j = 0; j < words; j++) exprs.push(quantWord(buf, e.ix.add(e.ix.mul(col, K / f.perWord), e.ix.add(e.ix.mul(p, words), e.ix.lit(j))), numel(w.shape), f));
  return { d: cst.d, ...(cst.m ? { m: cst.m } : {}), words: exprs };
}
