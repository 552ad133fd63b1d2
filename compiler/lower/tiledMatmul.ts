// The tiled matmul kernel template for matmuls with many rows (prefill), with fused prologues and epilogues.
import type { Node } from '../ir.ts';
import { numel } from '../ir.ts';
import { delinearize, linearize } from '../indexAlgebra.ts';
import { K as Kx, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { OPS } from '../ops.ts';
import { isQuantized } from '../quantized.ts';
import { Emitter, type LoweredKernel, SEQ_MAX, assemble, finish, reduceLength } from './emitter.ts';
import { loadWeightRun, transposedWeight } from './matvecKernel.ts';
import { rowLoads, rowsReserve } from './tiledRows.ts';
import { type MatrixShape, type MatrixTile, type SubgroupMatrixConfig, matrixPieces, matrixPlan, rowsMatrixTile } from './tiledMatrix.ts';

/** Workgroups below which a 64x64 tiling leaves most of a large GPU idle, and 32x32 tiles are used instead. */
const TILE_MIN_GROUPS = 256;
const TILE_MIN_ROWS = 32;

/**
 * The matmuls a tiled kernel would compute for `root`: the root itself, or the long matmuls under an elementwise
 * epilogue at the root's own index that share their left operand (residual add; SwiGLU's gate and up). Only for
 * enough rows to share weight tiles (prefill).
 */
export function tiledMatmulsOf(root: Node, isMat: (n: Node) => boolean): Node[] | undefined {
  const r = root.shape.length;
  if (r < 2 || root.shape[r - 2]! < TILE_MIN_ROWS || root.shape[r - 1]! < 16) return undefined;
  if (root.op === 'matmul') return reduceLength(root) > SEQ_MAX ? [root] : undefined;
  const found = new Map<number, Node>();
  let other = false;
  // A matmul may sit under a reshape that only adds or drops leading 1s ([T, H] -> [1, T, H]: an MLP on flattened
  // rows), which keeps every element's linear position: read through it, the matmul is read at the output's own
  // position (lowerTiledMatmul seeds it for every index). `walked` are the nodes whose reads are at that position.
  const alike = (n: Node) => leadingOnesDropped(n.shape) === leadingOnesDropped(root.shape);
  const walked = new Set<number>();
  const walk = (n: Node): void => {
    walked.add(n.id);
    if (n.op === 'matmul' && reduceLength(n) > SEQ_MAX && alike(n)) {
      found.set(n.id, n);
      return;
    }
    if (n.op === 'reshape' && alike(n) && alike(n.inputs[0]!) && !isMat(n.inputs[0]!)) return walk(n.inputs[0]!);
    if (OPS[n.op].kind === 'reduce' && reduceLength(n) > SEQ_MAX) other = true;
    if (OPS[n.op].kind !== 'elementwise' || n.op === 'iota') return;
    for (const i of n.inputs) if (!isMat(i) && i.op !== 'const' && i.shape.join() === root.shape.join()) walk(i);
  };
  walk(root);
  const mms = [...found.values()];
  if (other || mms.length === 0 || mms.length > 3 || mms.some((m) => m.inputs[0] !== mms[0]!.inputs[0])) return undefined;
  // through a reshape, only the walked nodes may read the matmul (another read, at another index, would be given the
  // output's value)
  if (mms.some((m) => m.shape.join() !== root.shape.join()) && readElsewhere(root, isMat, found, walked)) return undefined;
  return mms;
}

/** Whether a node of root's inlined expression outside `walked` reads one of `mms` (through nothing but inlined nodes). */
function readElsewhere(root: Node, isMat: (n: Node) => boolean, mms: ReadonlyMap<number, Node>, walked: ReadonlySet<number>): boolean {
  const seen = new Set<number>();
  const stack = [root];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n.id) || mms.has(n.id)) continue;
    seen.add(n.id);
    for (const i of n.inputs) {
      if (isMat(i)) continue;
      if (mms.has(i.id) && !walked.has(n.id)) return true;
      stack.push(i);
    }
  }
  return false;
}

/** A shape's text without its leading 1s (the last two dimensions kept). */
function leadingOnesDropped(shape: readonly number[]): string {
  let i = 0;
  while (i < shape.length - 2 && shape[i] === 1) i++;
  return shape.slice(i).join();
}

export function bigMatmulUnder(root: Node, isMat: (n: Node) => boolean): Node | undefined {
  const seen = new Set<number>();
  const stack = [...root.inputs];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n.id) || isMat(n)) continue;
    seen.add(n.id);
    const r = n.shape.length;
    if (n.op === 'matmul' && reduceLength(n) > SEQ_MAX && n.shape[r - 2]! >= TILE_MIN_ROWS && n.shape[r - 1]! >= 16) return n;
    stack.push(...n.inputs);
  }
  return undefined;
}

/**
 * How a tiled kernel splits its work. Why the first kernel ran at 3% of its byte roofline on an H200 (128-token
 * prefill of llama-400m: 97 us per projection): a 128-row output gives 128 workgroups of 32x32 (one per SM, 8 warps),
 * each walking all of K in steps of 16, one round trip to memory plus two barriers per step (~0.8 us: 176 steps for
 * the 2816-long down projection, 139 us), and a step's arithmetic (2x2 outputs per thread, 4 shared loads per 4
 * multiply-adds) too short to cover that latency. Now each thread keeps 4x4 outputs per matmul (two 16-byte shared
 * loads per 16 multiply-adds), and where the grid is small the workgroup's 256 threads form S slices of the same
 * output tile that walk interleaved parts of K and add their partial sums at the end (split-K inside the
 * workgroup, no second dispatch): S times fewer serial steps, S times the loads in flight per step.
 */
export interface TilePlan {
  /** Outputs per workgroup along M and along N (each thread 4x4 of them). */
  tm: number;
  tn: number;
  /** Threads per output tile ((tm / 4) (tn / 4)) and slices of K per workgroup (256 / threads). */
  threads: number;
  slices: number;
  /** K per step of one slice. */
  tk: number;
  /** K values a thread loads together from one row: 2 (a packed 16-bit word, two f32 at once) or 1. */
  width: 1 | 2;
  /** Floats of workgroup memory: the operand tiles of every slice, or the slices' partial sums. */
  floats: number;
  /** Threads per workgroup. */
  wg: number;
  /** The subgroup matrix form (lower/tiledMatrix.ts) where set. */
  matrix?: MatrixShape;
}

/**
 * The tiled kernel's variants, by name (DeviceLimits.tiledMatmul; STRATA_TILED=<name> sets it on an adapter; the ops
 * bench measures each at the prefill shapes of the bench models); the default is the one measured fastest on a
 * large GPU.
 *   base  the kernel of 2b8020f: 16 KiB of tiles (K steps of 8 for SwiGLU's two matmuls), one element per load
 *         (a 4-byte load per 16-bit weight), 32x32 or 64x64 tiles.
 *   fill  K steps up to 32 through up to 32 KiB of workgroup memory (half to a quarter of base's serial steps and
 *         barriers); K in pairs (one packed word per two 16-bit weights, two activations per load); and narrower
 *         tiles (32x16, then 16x16: 8 and 16 slices of K) while fewer than FILL_GROUPS workgroups would run: a
 *         128-row output with N = 768 gives 96 workgroups of 32x32, idling a third of an H200's 132 SMs and leaving
 *         one workgroup per SM to hide every step's latency.
 *   lean  fill with K steps short enough that a thread stages at most 16 values per step (as base does at 32x32):
 *         fewer registers, more workgroups resident per SM, twice fill's steps.
 */
export const TILED_VARIANTS = {
  base: { workgroupBytes: 16384, pairs: false, fill: false, maxStaged: Infinity },
  fill: { workgroupBytes: 32768, pairs: true, fill: true, maxStaged: Infinity },
  lean: { workgroupBytes: 32768, pairs: true, fill: true, maxStaged: 16 },
} as const;
export type TiledVariant = keyof typeof TILED_VARIANTS;
// Measured on the H200 (bench tiled, 2026-12-02, 593de0c): lean is fastest at all four granite4h prefill shapes
// (gate/up 50.9 us vs base 65.1 / fill 64.7; down 40.7 vs 76.0 / 60.4; in_proj 50.4 vs 66.3 / 63.2; out_proj 31.0 vs
// 58.0 / 46.7) and llama-400m's q/k/v, slower at llama's gate/up (139 vs fill 122) and down (105 vs base 81);
// granite4h's 128-token prefill 10.7k tok/s with lean, 7.9k base, 8.5k fill.
export const DEFAULT_TILED_VARIANT: TiledVariant = 'lean';
/** Workgroups the fill variant narrows tiles to reach: about two per SM of a large GPU. */
const FILL_GROUPS = 256;
const WG_TILED = 256;

function tilePlan(variant: TiledVariant, batch: number, M: number, N: number, K: number, matmuls: number, workgroupBytes: number): TilePlan {
  const v = TILED_VARIANTS[variant];
  const groupsOf = (tm: number, tn: number) => batch * Math.ceil(M / tm) * Math.ceil(N / tn);
  let [tm, tn] = groupsOf(64, 64) >= TILE_MIN_GROUPS ? [64, 64] : [32, 32];
  if (v.fill) while (groupsOf(tm, tn) < FILL_GROUPS && tm > 16) [tm, tn] = tn >= tm ? [tm, tn / 2] : [tm / 2, tn];
  const threads = (tm / 4) * (tn / 4);
  const slices = WG_TILED / threads;
  const width = v.pairs && K % 2 === 0 ? 2 : 1;
  const budget = Math.min(v.workgroupBytes, workgroupBytes) / 4;
  // at least one load of `width` per thread and operand per step
  const minTk = (width * threads) / Math.min(tm, tn);
  let tk = 32;
  while ((slices * tk * (tm + tn * matmuls) > budget || (tk * (tm + tn * matmuls)) / threads > v.maxStaged) && tk > minTk) tk /= 2;
  return { tm, tn, threads, slices, tk, width, floats: Math.max(slices * tk * (tm + tn * matmuls), WG_TILED * 16), wg: WG_TILED };
}

/** What lowerTiledMatmul takes from the lowering's options (LowerOptions). */
export interface TiledOptions {
  unroll?: boolean;
  workgroupBytes?: number;
  variant?: TiledVariant;
  subgroupMatrix?: SubgroupMatrixConfig;
  matrixTile?: MatrixTile;
  /**
   * Batched decode rows (DeviceLimits.tiledRows): the node under the root's reshapes whose leading coordinates are
   * all rows (as the matvec's core), up to TILED_ROWS_MAX of them.
   */
  rows?: Node;
}

/**
 * An output tile of tm x tn per workgroup (plan above), operands staged through shared memory in steps of K with
 * the next step's loads in flight while a step is multiplied. Operands are read through the emitter, so prologues
 * (casts, unpacking, gathers, a norm's scale) stay fused; a weight read directly (`x @ W.T`) is loaded a packed
 * word at a time. The epilogue evaluates the root at each output with each matmul's value seeded from its summed
 * accumulator. `unroll` writes the per-thread loads and outputs out one by one (loads in flight together on a GPU);
 * off, they are loops (compact shaders for a software adapter).
 */
export function lowerTiledMatmul(root: Node, mms: Node[], isMat: (n: Node) => boolean, o: TiledOptions = {}): LoweredKernel {
  const { unroll = true, workgroupBytes = 16384, variant = DEFAULT_TILED_VARIANT, subgroupMatrix, matrixTile, rows: core } = o;
  const e = new Emitter(root, isMat, 'tiled');
  for (const mm of mms) e.inlined.add(mm.id);
  const a = mms[0]!.inputs[0]!;
  // Batched decode rows (`core`): every leading coordinate is a row, one tile of rows a workgroup, and the left
  // operand is loaded a literal row at a time, so that its rows' norm statistics are cooperative phases before the K
  // loop (hoistable, as in the matvec) and the norm stays fused.
  const flat = core !== undefined;
  if (flat) e.cooperative = true;
  const outShape = core?.shape ?? root.shape;
  const r = outShape.length;
  const rowShape = flat ? outShape.slice(0, -1) : [outShape[r - 2]!];
  const [M, N] = [numel(rowShape), outShape[r - 1]!];
  const K = reduceLength(mms[0]!);
  const batchShape = flat ? [] : outShape.slice(0, -2);
  // f16 operands only where every weight is 16-bit or quantized already: an f32 weight (or an activation times an
  // activation) keeps f32 products
  const weights = mms.map((mm) => transposedWeight(mm.inputs[1]!, isMat) as Node<'weight'> | undefined);
  const sixteenBit = weights.every((w) => w !== undefined && w.attrs.storage !== 'f32');
  const budget = workgroupBytes - (flat ? rowsReserve(M, WG_TILED) : 0);
  const matrixTiling = matrixTile ?? (flat ? rowsMatrixTile(M, N) : undefined);
  const plan = (subgroupMatrix && unroll && sixteenBit ? matrixPlan(subgroupMatrix, numel(batchShape) * M, N, K, mms.length, budget, matrixTiling) : undefined) ?? tilePlan(flat ? 'lean' : variant, numel(batchShape), M, N, K, mms.length, budget);
  const { tm: TM, tn: TN, threads: PT, slices: S, tk: TK, width: W, floats, wg: WG, matrix: mx } = plan;
  // batched decode rows: one tile of rows, weights read a packed pair at a time (batchedRowsTiled: K even)
  if (flat && (TM < M || W !== 2)) throw new Error(`tiled rows: ${M} rows need one tile of pairs, planned ${TM} rows, ${W} k per load`);
  const mp = mx && matrixPieces(mx, { tm: TM, tn: TN, tk: TK, slices: S, matmuls: mms.length });
  const [MB, NB] = [Math.ceil(M / TM), Math.ceil(N / TN)];
  const groups = numel(batchShape) * MB * NB;
  const outs = (TM * TN) / WG; // outputs each thread writes in the epilogue
  // per operand (the left one, then each matmul's right one): rows of its tile, and where its slices' tiles start
  const ops = [a, ...mms.map((mm) => mm.inputs[1]!)].map((node, o) => {
    const rows = o === 0 ? TM : TN;
    return { node, rows, r4: rows / 4, region: (TK * rows) / 4, base: o === 0 ? 0 : (S * TK * (TM + (o - 1) * TN)) / 4, loads: (TK * rows) / (PT * W) };
  });
  // f16, bf16 and f32 weights read as `x @ W.T`: a pair of k is one packed word (loadWeightRun)
  const direct = weights.map((w) => (W === 2 && w && !isQuantized(w.attrs.storage) ? w : undefined));
  // the plan, for readers of the schedule's WGSL
  if (mp) e.line(`// tiled matrix: ${mp.describe}, ${W} k per load`);
  else e.line(`// tiled ${variant}: ${TM}x${TN} outputs, ${S} slices of K in steps of ${TK}, ${W} k per load`);
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const gi = e.bound('gi', groups - 1);
  const batch = delinearize(e.ix, e.ix.div(gi, MB * NB), batchShape).map((s, d) => e.declareTop(`o${d}`, s));
  // an operand's batch coordinates: the root's, less or more leading ones where a matmul sits under a reshape of
  // leading 1s (tiledMatmulsOf; those coordinates are 0)
  const operandBatch = (node: Node): KExpr[] => {
    const want = node.shape.length - 2;
    return want <= batch.length ? batch.slice(batch.length - want) : [...Array.from({ length: want - batch.length }, () => e.ix.lit(0)), ...batch];
  };
  const U = Kx.u32;
  const [lid, giV] = [Kx.v('lid'), Kx.v('gi')];
  e.line(`let m0 = ${V.arith('*', V.arith('%', V.arith('/', giV, U(NB)), U(MB)), U(TM))};`);
  e.line(`let n0 = ${V.arith('*', V.arith('%', giV, U(NB)), U(TN))};`);
  e.line(`let sl = ${V.arith('/', lid, U(PT))};`); // this thread's slice of K
  e.line(`let t = ${V.arith('%', lid, U(PT))};`);
  if (flat && unroll) e.workgroupSize = WG; // the rows' statistics (phases) unroll their loops too
  // Shared memory as vec4s on a GPU (one 16-byte load per 4 rows); as scalars for a software adapter, whose
  // compiler turns a vec4 component stored at a run-time index into per-lane code (3x the compile time).
  const vec = unroll;
  const smem = vec ? 'tile_v4' : 'tile_f32';
  // vec4 i4's component c: as vec4s on a GPU, the scalars i4 * 4 + c on a software adapter
  const scalar = (i4: KExpr, c: KExpr) => V.arith('+', V.arith('*', i4, U(4)), c);
  const at4 = (i4: KExpr, c: KExpr) => (vec ? `${smem}[${i4}][${c}]` : `${smem}[${scalar(i4, c)}]`);
  const read4 = (i4: KExpr) => (vec ? `${smem}[${i4}]` : `vec4<f32>(${[0, 1, 2, 3].map((c) => `${smem}[${scalar(i4, U(c))}]`).join(', ')})`);
  const write4 = (i4: KExpr, v: string) => (vec ? [`${smem}[${i4}] = ${v};`] : [`let w4 = ${v};`, ...[0, 1, 2, 3].map((c) => `${smem}[${scalar(i4, U(c))}] = w4[${c}];`)]);
  // everything after the head is built as one block, so that the phases (flat rows) go between the two
  const main = e.nested(() => {
    if (mp) mp.setup().forEach((l) => e.line(l));
    else {
      // this thread's 4 x 4 outputs of the tile
      e.line(`let tx = ${V.arith('%', Kx.v('t'), U(TN / 4))};`);
      e.line(`let ty = ${V.arith('/', Kx.v('t'), U(TN / 4))};`);
      mms.forEach((_, t) => {
        for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) e.line(`var acc${t}_${i}_${j}: f32 = 0.0;`);
      });
    }
    // Written out (q a literal) or as one loop over q, for the per-thread loads and outputs.
    // Every body is built before any line is written: a value hoisted while building one (a slot id) lands above
    // all of them, not inside the first.
    const repeat = (count: number, body: (q: KExpr) => string[], pad = ''): void => {
      if (unroll) {
        const bodies = Array.from({ length: count }, (_, q) => body(U(q)));
        for (const lines of bodies) {
          e.line(`${pad}{`);
          lines.forEach((l) => e.line(`${pad}  ${l}`));
          e.line(`${pad}}`);
        }
        return;
      }
      const q = e.bound(e.fresh('k'), count - 1);
      const lines = body(q);
      e.line(`${pad}for (var ${q}: u32 = 0u; ${q} < ${count}u; ${q}++) {`);
      lines.forEach((l) => e.line(`${pad}  ${l}`));
      e.line(`${pad}}`);
    };
    // Load q of a thread's share of a tile: row (m or n) and the first of W k within the step, k fastest (row-major
    // activations and [out, in] weights are then contiguous across threads).
    const place = (q: KExpr) => {
      const el = V.arith('+', Kx.v('t'), V.arith('*', q, U(PT))); // the thread's element q of the step
      const kk = V.arith('%', el, U(TK / W));
      return { row: V.arith('/', el, U(TK / W)), kk: W === 2 ? V.arith('*', kk, U(2)) : kk };
    };
    // A tile is stored k-major, 4 rows to a vec4, the vec4 column XOR-swizzled by k so that threads storing
    // neighbouring k do not share a bank; a thread then reads its 4 rows at one k as one vec4.
    const slot = (o: number, r: KExpr, k: KExpr) => {
      if (mp) return mp.slot(o, r, k);
      const { base, region, r4 } = ops[o]!;
      return at4(V.arith('+', V.arith('+', V.arith('+', U(base), V.arith('*', Kx.v('sl'), U(region))), V.arith('*', k, U(r4))), V.bits('^', V.arith('/', r, U(4)), V.bits('&', k, U(r4 - 1)))), V.arith('%', r, U(4)));
    };
    // On a GPU the next step's elements wait in registers (`stage`) while this step is multiplied, so the loads'
    // latency overlaps the arithmetic; a software adapter stores them straight into shared memory.
    const dest = (o: number, q: KExpr, w: number, row: KExpr, kk: KExpr) => (vec ? `stage${o}[${W === 2 ? V.arith('+', V.arith('*', q, U(2)), U(w)) : q}]` : slot(o, row, w ? V.arith('+', kk, U(w)) : kk));
    const kEnd = Math.ceil(K / (S * TK)) * S * TK;
    const kb = e.bound(e.fresh('k'), kEnd);
    const k0E = V.arith('+', kb, V.arith('*', Kx.v('sl'), U(TK))); // the slice's first k of the step
    // batched decode rows: the left operand a literal row at a time (lower/tiledRows.ts)
    const rows = flat ? rowLoads({ e, a, M, K, W, PT, TK, k0: k0E, staged: vec, half: mp !== undefined, slot }) : undefined;
    if (vec) ops.forEach(({ loads }, o) => e.line(`var stage${o}: array<f32, ${rows && o === 0 ? rows.values * W : loads * W}>;`));
    const loads = (pad: string) =>
      ops.forEach(({ node, loads }, o) =>
        rows && o === 0 ? rows.load() : repeat(
          loads,
          (q) =>
            e.nested(() => {
              const { row, kk } = place(q);
              const [x, k] = [e.fresh('k'), e.fresh('k')].map((name) => Kx.v(name)) as [KExpr, KExpr];
              const [extent, start] = o === 0 ? [M, 'm0'] : [N, 'n0'];
              // clamped, so that the index arithmetic may fold with the bounds
              const [at, atK] = [V.arith('+', Kx.v(start), row), V.arith('+', k0E, kk)];
              e.line(`let ${e.bound(x, extent - 1)} = ${V.fn('min', [at, U(extent - 1)])};`);
              e.line(`let ${e.bound(k, K - W)} = ${V.fn('min', [atK, U(K - W)])};`);
              const ks = W === 2 ? [k, e.ix.add(k, e.ix.lit(1))] : [k];
              const w = o === 0 ? undefined : direct[o - 1];
              // a weight read as its transpose (quantized, or one k a load) is read at [x, k] of the weight itself:
              // its transpose may be broadcast over batch dims or batched rows
              const wt = o === 0 ? undefined : weights[o - 1];
              const nb = operandBatch(node);
              const values = w ? loadWeightRun(e, w, e.ix.add(e.ix.mul(x, K), k), 2) : ks.map((kv) => (wt ? e.value(wt, [x, kv]) : e.value(node, o === 0 ? [...nb, x, kv] : [...nb, kv, x])));
              const inside = V.logic('&&', V.compare('<', at, U(extent)), V.compare('<', atK, U(K)));
              values.forEach((v, i) => e.line(`${dest(o, q, i, row, kk)} = ${V.select(V.lit(0, 'f32'), v, inside)};`));
            }),
          pad,
        ),
      );
    const multiply = (pad: string) => {
      if (mp) return mp.multiply().forEach((l) => e.line(pad + l));
      const comp = ['x', 'y', 'z', 'w'] as const;
      const av = Kx.v('av', 'vec4<f32>');
      const [A, ...B] = ops;
      e.line(`${pad}for (var kk: u32 = 0u; kk < ${TK}u; kk++) {`);
      // an operand's 4 rows at step kk: its vec4 column, XOR-swizzled as the loads stored it
      const rowsAt = (op: (typeof ops)[number], by: string) => V.arith('+', V.arith('+', V.arith('+', U(op.base), V.arith('*', Kx.v('sl'), U(op.region))), V.arith('*', Kx.v('kk'), U(op.r4))), V.bits('^', V.bits('&', Kx.v('kk'), U(op.r4 - 1)), Kx.v(by)));
      e.line(`${pad}  let av = ${read4(rowsAt(A!, 'ty'))};`);
      B.forEach((b, t) => {
        e.line(`${pad}  let bv${t} = ${read4(rowsAt(b, 'tx'))};`);
        const bv = Kx.v(`bv${t}`, 'vec4<f32>');
        for (let i = 0; i < 4; i++)
          for (let j = 0; j < 4; j++) {
            const acc = Kx.v(`acc${t}_${i}_${j}`, 'f32');
            e.line(`${pad}  ${acc} = ${V.arith('+', acc, V.arith('*', V.field(av, comp[i]!), V.field(bv, comp[j]!)))};`);
          }
      });
      e.line(`${pad}}`);
      e.line(`${pad}workgroupBarrier();`);
    };
    // the loads are built before the loop's lines are written, so that values they hoist land above the loop
    const loadLines = e.nested(() => loads(''));
    if (vec) {
      // one loop trip per step plus one: trip s stores and multiplies step s - 1 while step s's loads are in flight
      e.line(`for (var ${kb}: u32 = 0u; ${kb} <= ${kEnd}u; ${kb} += ${S * TK}u) {`);
      e.line(`  if (${kb} > 0u) {`);
      ops.forEach(({ loads }, o) =>
        rows && o === 0 ? rows.store('    ') : repeat(loads, (q) => {
          const { row, kk } = place(q);
          return Array.from({ length: W }, (_, w) => `${slot(o, row, w ? V.arith('+', kk, U(w)) : kk)} = ${mp ? `f16(${dest(o, q, w, row, kk)})` : dest(o, q, w, row, kk)};`);
        }, '    '),
      );
      e.line(`    workgroupBarrier();`);
      e.line(`  }`);
      e.line(`  if (${kb} < ${K}u) {`);
      loadLines.forEach((l) => e.line(`    ${l}`));
      e.line(`  }`);
      e.line(`  if (${kb} > 0u) {`);
      multiply('    ');
      e.line(`  }`);
      e.line(`}`);
    } else {
      e.line(`for (var ${kb}: u32 = 0u; ${kb} < ${kEnd}u; ${kb} += ${S * TK}u) {`);
      loadLines.forEach((l) => e.line(`  ${l}`));
      e.line(`  workgroupBarrier();`);
      multiply('  ');
      e.line(`}`);
    }
    // The slices' partial sums meet in shared memory (one matmul at a time); every thread then sums `outs` outputs,
    // consecutive threads along n, and evaluates the epilogue there.
    const sliceSums = (TM * TN) / 4; // vec4s of one slice's partial sums
    // output q of the thread: consecutive threads along n
    const outEl = (q: KExpr) => V.arith('+', lid, V.arith('*', q, U(WG)));
    const outRow = (q: KExpr) => V.arith('+', Kx.v('m0'), V.arith('/', outEl(q), U(TN)));
    const outCol = (q: KExpr) => V.arith('+', Kx.v('n0'), V.arith('%', outEl(q), U(TN)));
    if (mp && flat)
      mms.forEach((_, t) => {
        // every slice stores its sums at once (tile_c holds them all), one round of barriers a matmul
        e.line(`var s${t}: array<f32, ${outs}>;`);
        mp.storeSlices(t).forEach((l) => e.line(l));
        e.line(`workgroupBarrier();`);
        repeat(outs, (q) => [`s${t}[${q}] = ${Array.from({ length: S }, (_, sl) => `tile_c[${V.arith('+', U(sl * TM * TN), outEl(q))}]`).join(' + ')};`]);
        e.line(`workgroupBarrier();`);
      });
    else if (mp)
      mms.forEach((_, t) => {
        // the slices' sums meet in tile_c one slice at a time
        e.line(`var s${t}: array<f32, ${outs}>;`);
        for (let sl = 0; sl < S; sl++) {
          mp.store(t, sl).forEach((l) => e.line(l));
          e.line(`workgroupBarrier();`);
          repeat(outs, (q) => [`s${t}[${q}] ${sl ? '+' : ''}= tile_c[${outEl(q)}];`]);
          e.line(`workgroupBarrier();`);
        }
      });
    else mms.forEach((_, t) => {
      e.line(`var s${t}: array<f32, ${outs}>;`);
      e.line(`workgroupBarrier();`);
      for (let i = 0; i < 4; i++) {
        const at = V.arith('+', V.arith('+', V.arith('*', Kx.v('sl'), U(sliceSums)), V.arith('*', V.arith('+', V.arith('*', Kx.v('ty'), U(4)), U(i)), U(TN / 4))), Kx.v('tx'));
        const w = write4(at, `vec4<f32>(${[0, 1, 2, 3].map((j) => `acc${t}_${i}_${j}`).join(', ')})`);
        if (w.length === 1) e.line(w[0]!);
        else e.line(`{ ${w.join(' ')} }`);
      }
      e.line(`workgroupBarrier();`);
      repeat(outs, (q) => {
        const terms = Array.from({ length: S }, (_, s) => at4(V.arith('+', V.arith('+', U(s * sliceSums), V.arith('/', lid, U(4))), V.arith('*', q, U(WG_TILED / 4))), V.arith('%', lid, U(4))));
        return [`s${t}[${q}] = ${terms.join(' + ')};`];
      });
    });
    repeat(outs, (q) => {
      const body = e.nested(() => {
        const [m, n] = [e.fresh('k'), e.fresh('k')].map((name) => Kx.v(name)) as [KExpr, KExpr];
        e.line(`let ${m} = ${outRow(q)};`);
        e.line(`let ${n} = ${outCol(q)};`);
        e.bound(m, M - 1); // within the guard below
        e.bound(n, N - 1);
        if (flat) {
          // every read of a matmul is at this output's position (as in the matvec's epilogue)
          const idx = [...delinearize(e.ix, m, rowShape).map((c) => e.indexVar(c)), n];
          mms.forEach((mm, t) => e.seedAll(mm, Kx.wgsl(`s${t}[${q}]`, 'f32')));
          e.line(e.store(root, linearize(e.ix, idx, outShape), e.value(core, idx)));
          return;
        }
        const idx = [...batch, m, n];
        // a matmul under a reshape of leading 1s (tiledMatmulsOf) is read only at this output's position, through index
        // arithmetic that need not simplify to its coordinates: seeded for every index (as the rows path's)
        mms.forEach((mm, t) => (mm.shape.join() === root.shape.join() ? e.seed(mm, idx, Kx.wgsl(`s${t}[${q}]`, 'f32')) : e.seedAll(mm, Kx.wgsl(`s${t}[${q}]`, 'f32'))));
        const v = e.value(root, idx);
        e.line(e.store(root, linearize(e.ix, idx, root.shape), v));
      });
      return [`if (${V.logic('&&', V.compare('<', outRow(q), U(M)), V.compare('<', outCol(q), U(N)))}) {`, ...body.map((l) => '  ' + l), `}`];
    });
  });
  // the rows' statistics (flat rows only: other tiled kernels hold no long reduction) merged into one round
  const phases = e.mergedPhases(mp && flat ? 'tile_c' : 'tile_red', WG);
  const redFloats = e.mergedFloats(phases.phases, WG);
  const red = phases.phases && !(mp && flat) ? [`var<workgroup> tile_red: array<f32, ${redFloats}>;`] : [];
  const lines = [...e.topLines(), ...phases.lines, ...main];
  if (mp) {
    const decls = flat ? [mp.decls[0]!, `var<workgroup> tile_c: array<f32, ${Math.max(S * TM * TN, redFloats)}>;`] : mp.decls;
    const text = { ...assemble(e, lines, WG, decls), f16: true, subgroupMatrix: true };
    return { ...finish(e, 'tiled', text, groups), shape: mp.shape };
  }
  const decl = vec ? `var<workgroup> ${smem}: array<vec4<f32>, ${floats / 4}>;` : `var<workgroup> ${smem}: array<f32, ${floats}>;`;
  return { ...finish(e, 'tiled', assemble(e, lines, WG, [decl, ...red]), groups), ...(flat ? { shape: `rows ${M}` } : {}) };
}
