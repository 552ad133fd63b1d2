// The matvec kernel template for matmuls with few rows (decode: one token per sequence), with fused prologues
// (norms, gathers, unpacking) and elementwise epilogues (residual add, SwiGLU gating).
import { type Node, numel } from '../ir.ts';
import { delinearize, linearize } from '../indexAlgebra.ts';
import { type HalfStorage, halfElement, halfPair, halfWord } from '../halfStorage.ts';
import { K as Kx, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { OPS } from '../ops.ts';
import { QUANT_BLOCK, QUANT_FORMATS, autoQuantMatvec, type QuantMatvec, type QuantShape, isQuantized } from '../quantized.ts';
import { Emitter, type LoweredKernel, SEQ_MAX, assemble, finish, nextPow2, reduceLength } from './emitter.ts';
import { quantLoop, quantStep, stagedChunk, stagedRow } from './matvecQuant.ts';
import { dot4Chunk, dot4Loop, dot4Shared } from './matvecDot4.ts';
import { type MatvecRowsVariant, lowerStagedRows } from './matvecRows.ts';
import { halfChunk, halfLoop, halfShared } from './matvecHalf.ts';

/** Rows (all leading output coordinates together) one workgroup computes; more rows get more workgroups. */
const ROW_BLOCK = 8;
/** Weight elements a workgroup reads per row at least: short rows (small K) get more columns per workgroup. */
const MIN_WORK = 4096;
/** Accumulators per thread at most (matmuls x rows x columns): registers, the shared partials, and one subgroup
 * reduction each, which lavapipe compiles slowly (64 of them: ~3 s a kernel). */
const MAX_ACCUMULATORS = 16;
/** The same on a software adapter (no unrolling), where each accumulator's reduction and epilogue is code its LLVM
 * compiles: tiny-granite-code's fused q/k/v decode kernel 20 -> 13 KiB, same decode speed; at 4 it decoded at half
 * the speed (4x the workgroups, each repeating the norm prologue; lavapipe A/B in one process). */
const CPU_ACCUMULATORS = 8;
/** Rows of a workgroup up to which its norm phases are written out trip by trip. */
const UNROLL_ROWS = 2;
/** Trips x rows up to which the K loop is written out trip by trip. */
const UNROLL_ROW_TRIPS = 16;
/** Accumulators per thread at most on the rows path (batched rows over 16/32-bit weights) on GPUs. */
export const ROWS_ACCUMULATORS = 32;
/** Trips of the rows path's K loop up to which all their weight words are loaded ahead of the phases (registers). */
const PRELOAD_TRIPS = 8;
/** Matmuls of one kernel at most: q/k/v (3), gate/up of two experts (4), or the down projections of four experts summed
 * by their router weights (Jamba's MoE with 4 experts, else a one-thread-per-output element kernel: 33 us at batch 1). */
const MAX_MATMULS = 4;
/** The quantized matvec over a K this short takes at most QUANT_SHORT_COLS columns a workgroup (lowerMatvec). */
const QUANT_SHORT_K = 2048;
const QUANT_SHORT_COLS = 4;
/** Matmuls with at least this many rows use the tiled kernel (compiler/lower/tiledMatmul.ts). */
export const MATVEC_MAX_ROWS = 32;

export interface MatvecOptions {
  subgroups?: boolean;
  unroll?: boolean;
  /** Bytes of workgroup memory the kernel may declare. */
  workgroupStorage?: number;
  /** The K loop for block-quantized weights (DeviceLimits.quantMatvec). */
  quantMatvec?: QuantMatvec;
  /** The quantized K loop's columns a workgroup and threads where set (DeviceLimits.quantShape; 0: chosen here). */
  quantShape?: QuantShape;
  /** Accumulators per thread at most on the rows path (DeviceLimits.matvecAccumulators; 0: no rows path). */
  matvecAccumulators?: number;
  /** The rows path's variant (DeviceLimits.matvecRows; matvecRows.ts). */
  matvecRows?: MatvecRowsVariant;
  /** One row over 16/32-bit weights loads its trips' weight words ahead of the norm phases (DeviceLimits.matvecPreload). */
  matvecPreload?: boolean;
  /** The K loop reads x's f32 and 16-bit buffers as vec4s (DeviceLimits.vectorLoads; Emitter.vectorLoads). */
  vectorLoads?: boolean;
}

export interface MatvecPlan {
  /** The node the kernel computes: the root, or what a chain of reshapes at the root is a view of. */
  core: Node;
  matmuls: Node[];
  /** Per matmul: the [N, K] weight read as its transpose (`x @ W.T`), loaded directly and packed words whole. */
  weights: (Node | undefined)[];
}

/** The [N, K] weight whose transpose `b` is, through views that only add or broadcast leading unit dims. */
export function transposedWeight(b: Node, isMat: (n: Node) => boolean): Node | undefined {
  let n = b;
  const lastTwo = (s: readonly number[]) => s.slice(-2).join();
  while (n.op === 'reshape' || n.op === 'broadcast') {
    const x = n.inputs[0]!;
    if (x.shape.length < 2 || lastTwo(x.shape) !== lastTwo(n.shape) || x.shape.slice(0, -2).some((d) => d !== 1)) return undefined;
    n = x;
  }
  if (n.op !== 'permute' || n.shape.length !== 2) return undefined;
  const w = n.inputs[0]!;
  return w.op === 'weight' && isMat(w) ? w : undefined;
}

/**
 * The matvec plan for `root`, or undefined when it is no few-row matmul kernel: the root (seen through reshapes)
 * is a long matmul, or an elementwise epilogue at its own index over long matmuls of one reduction length.
 */
export function matvecPlanOf(root: Node, isMat: (n: Node) => boolean): MatvecPlan | undefined {
  let core = root;
  while (core.op === 'reshape' && !isMat(core.inputs[0]!)) core = core.inputs[0]!;
  const r = core.shape.length;
  if (r < 2 || core.shape[r - 2]! >= MATVEC_MAX_ROWS) return undefined;
  const found = new Map<number, Node>();
  let other = false;
  const N = core.shape[r - 1]!;
  const size = numel(core.shape);
  // elementwise ops at the core's index, and reshapes that keep the last axis (same linear position, same column)
  const sameElement = (n: Node) => numel(n.shape) === size && n.shape[n.shape.length - 1] === N;
  const walk = (n: Node): void => {
    if (n.op === 'matmul' && reduceLength(n) > SEQ_MAX && sameElement(n)) {
      found.set(n.id, n);
      return;
    }
    if (OPS[n.op].kind === 'reduce' && reduceLength(n) > SEQ_MAX) other = true;
    if (n.op !== 'reshape' && (OPS[n.op].kind !== 'elementwise' || n.op === 'iota')) return;
    for (const i of n.inputs) if (!isMat(i) && i.op !== 'const' && sameElement(i)) walk(i);
  };
  if (core.op === 'matmul') {
    if (reduceLength(core) <= SEQ_MAX) return undefined;
    found.set(core.id, core);
  } else walk(core);
  const matmuls = [...found.values()];
  if (other || matmuls.length === 0 || matmuls.length > MAX_MATMULS) return undefined;
  const K = reduceLength(matmuls[0]!);
  if (matmuls.some((m) => reduceLength(m) !== K)) return undefined;
  const weights = matmuls.map((m) => transposedWeight(m.inputs[1]!, isMat));
  // with batch dims (weights not shared by every row) the kernel indexes matmuls and core alike
  if (weights.some((w) => !w) && matmuls.some((m) => m.shape.join() !== core.shape.join())) return undefined;
  return { core, matmuls, weights };
}

/**
 * A matvec kernel's shape, decided before any text is emitted: the K loop (the quantized `variant` where `quant`,
 * else the rows path or the generic loop), k values a thread takes a trip (U), rows a workgroup (MB) and columns
 * (R), threads (wg), the workgroups, and the staged chunk of K where x goes to workgroup memory.
 * describeMatvecShape prints it (`strata inspect --kernels`).
 */
export interface MatvecShape {
  N: number;
  K: number;
  M: number;
  MB: number;
  T: number;
  direct: boolean;
  batchShape: number[];
  rowShape: number[];
  variant: Exclude<QuantMatvec, 'auto'>;
  quant: boolean;
  rowsPath: boolean;
  rowsBudget: number;
  stagedVariant: boolean;
  R: number;
  U: number;
  wg: number;
  outputsPerGroup: number;
  accumulators: number;
  mChunks: number;
  nGroups: number;
  groups: number;
  staged: { chunk: number; chunks: number } | undefined;
}

/** `lanes U8 cols 4`, `rows-path U2 8 rows cols 16`, `staged U32 cols 16 chunk 4096`: a shape's choices beside its grid and threads. */
export function describeMatvecShape(m: MatvecShape): string {
  const loop = m.quant ? m.variant : m.rowsPath ? 'rows-path' : 'generic';
  return `${loop} U${m.U}${m.MB > 1 ? ` ${m.MB} rows` : ''} cols ${m.R}${m.staged ? ` chunk ${m.staged.chunk}` : ''}`;
}

/** Partial sums a workgroup of `size` threads keeps per accumulator: one per subgroup (at least 4 lanes) or thread. */
const partsOf = (subgroups: boolean) => (size: number) => (subgroups ? size / 4 : size);

/** The shape lowerMatvec emits for `plan` under these options (MatvecShape). */
export function matvecShape(plan: MatvecPlan, o: MatvecOptions = {}): MatvecShape {
  const { subgroups = false, unroll = true, quantMatvec: requested = 'word', workgroupStorage = 16384 } = o;
  const { core, matmuls, weights } = plan;
  const shape = core.shape;
  const N = shape[shape.length - 1]!;
  const K = reduceLength(matmuls[0]!);
  const direct = weights.every((w) => w !== undefined);
  const batchShape = direct ? [] : shape.slice(0, -2);
  const rowShape = direct ? shape.slice(0, -1) : shape.slice(-2, -1);
  const M = numel(rowShape);
  // more rows than one block (short prefill chunks) take one row per workgroup: a block of 8 rows' prologues and
  // norm phases is slow for lavapipe to compile (~2 s a kernel), and those buckets run once per prompt
  const MB = M <= ROW_BLOCK ? M : 1;
  const T = matmuls.length;
  const floorPow2 = (x: number) => 1 << Math.floor(Math.log2(Math.max(1, x)));
  // block-quantized weights read directly: the K loop of matvecQuant.ts (variants 'lanes', 'wide', 'staged'; 'auto'
  // resolves to one of them here); 'word' (and any other weight) takes the generic loop below, one packed word a step
  // with int-to-float conversions
  const variant = autoQuantMatvec(requested, K, M);
  const quant = variant !== 'word' && direct && weights.every((w) => isQuantized(storageOf(w!)));
  // The rows path: batched rows (2-8) over 16/32-bit weights. Each thread keeps more columns (every x value it
  // evaluates, prologue and all, serves them all: x is read once per workgroup, and fewer workgroups read it), its K
  // loop is written out trip by trip on GPUs with a trip's weight loads before its multiply-adds, and the rows' norm
  // statistics share one reduction round (Emitter.mergedPhases). The workgroup size stays the generic one: kernels
  // of one size share dispatches (passes/groupKernels.ts).
  const rowsBudget = o.matvecAccumulators ?? (unroll ? ROWS_ACCUMULATORS : MAX_ACCUMULATORS);
  const rowsPath = MB > 1 && direct && rowsBudget > 0 && weights.every((w) => !isQuantized(storageOf(w!)));
  const genericBudget = unroll ? MAX_ACCUMULATORS : CPU_ACCUMULATORS;
  const genericR = Math.min(N, Math.max(1, Math.min(16, Math.max(4, floorPow2(MIN_WORK / K)), floorPow2(genericBudget / (T * MB)))));
  // the rows path takes more columns while 256 workgroups remain (an H200 has 132 SMs), never fewer than the generic;
  // the quantized loop shares each trip's x (and its sums) by as many columns as keep ~256 workgroups, up to 16
  const rowsR = Math.min(N, 16, floorPow2(rowsBudget / (T * MB)), Math.max(genericR, floorPow2(N / 256)));
  const forced = quant ? o.quantShape : undefined;
  // Over a short K (decode's projections, K <= 2048) 4 columns: the workgroups are small (64-128 threads), and 16
  // columns leave too few threads to hide the decode's latency (H200, `bench quant-sweep`, 2026-12-02: K = 1024,
  // 3072 and 5632 rows, 5.3 vs 6.5-6.7 us and 6.5 vs 7.6-9.6 us; at K = 4096 16 columns stay best)
  const quantCap = K <= QUANT_SHORT_K ? o.quantShape?.short || QUANT_SHORT_COLS : 16;
  const quantR = forced?.cols ? Math.min(N, forced.cols) : Math.min(N, Math.max(1, Math.min(quantCap, floorPow2(N / 256), floorPow2((2 * MAX_ACCUMULATORS) / (T * MB)))));
  const R = quant ? quantR : rowsPath ? Math.max(1, rowsR) : genericR;
  // x in workgroup memory (variants staged, dot4 quantized to int8, half as f16 pairs): every matmul reads the same x
  const sharedX = quant && matmuls.every((m) => m.inputs[0] === matmuls[0]!.inputs[0]);
  const stagedVariant = sharedX && (variant === 'staged' || variant === 'dot4' || variant === 'half');
  const chunkOf = variant === 'dot4' ? dot4Chunk : variant === 'half' ? halfChunk : stagedChunk;
  // k values per thread and step: the quantized loop's (matvecQuant.ts), else one packed word of the most tightly
  // packed weight (2 halves, 4 int8, 8 int4); odd K steps one element at a time
  const packed = Math.max(2, ...weights.map((w) => (w ? elementsPerWord(w) : 1)));
  // (half: one whole block a trip, its f16 sum scaled once)
  // ('wide': staged's u32x4 a column and trip, x read where needed as in lanes: a fourth of the load instructions
  // and block constants of lanes, no staging copy)
  const U = quant ? (stagedVariant && variant === 'half' ? QUANT_BLOCK : quantStep(plan, stagedVariant || variant === 'wide')) : K % packed === 0 ? packed : K % 2 === 0 ? 2 : 1;
  const outputsPerGroup = MB * R;
  const accumulators = T * outputsPerGroup;
  const mChunks = Math.ceil(M / MB);
  const nGroups = Math.ceil(N / R);
  const groups = numel(batchShape) * mChunks * nGroups;
  // Enough threads that each takes several steps along K (the quantized loop: about 2, more warps in flight and half
  // the code of its 16 columns written out; staged: one); shared memory for the partials stays under 16 KiB.
  let wg = forced?.threads || Math.min(256, Math.max(32, nextPow2(Math.ceil(K / (U * (stagedVariant ? 1 : quant ? 2 : 4))))));
  const partsPerAcc = partsOf(subgroups);
  // the rows path: the partials and a phase's reduction array (wg floats) within the adapter's workgroup storage
  const over = (size: number) => 4 * accumulators * partsPerAcc(size) + (rowsPath ? 4 * size : 0) > (rowsPath ? workgroupStorage : 16384);
  while (wg > 32 && over(wg)) wg /= 2;
  wg = Math.max(wg, nextPow2(outputsPerGroup));
  // staged x: the workgroup memory left after the partials and a norm phase's reduction array (wg floats each), with
  // fewer threads when that leaves too little; a chunk of K takes as many threads as it has steps
  let staged: ReturnType<typeof stagedChunk>;
  for (let w = wg; stagedVariant && !staged && w >= 32; w /= 2) {
    staged = chunkOf(K, MB, workgroupStorage - 4 * accumulators * partsPerAcc(w) - 8 * w);
    if (staged) wg = Math.max(forced?.threads ? w : Math.min(w, nextPow2(staged.chunk / U)), 32, nextPow2(outputsPerGroup));
  }
  return { N, K, M, MB, T, direct, batchShape, rowShape, variant, quant, rowsPath, rowsBudget, stagedVariant, R, U, wg, outputsPerGroup, accumulators, mChunks, nGroups, groups, staged };
}

/**
 * Each workgroup computes up to ROW_BLOCK rows x COLS columns of every matmul in the plan. Its threads stride
 * over K (two elements at a time when the weights allow, so a packed 16-bit word is loaded once), each keeping
 * one accumulator per (matmul, row, column); the prologue of the left operand is evaluated once per row and k
 * and shared by every column, and each weight element is used for every row. Accumulators are reduced within
 * subgroups (or through shared memory without them); then one thread per output evaluates the epilogue.
 *
 * When every matmul reads a plain transposed weight, all leading output coordinates count as rows (batched
 * decode rows share the weight reads); otherwise the leading coordinates but the last are batch dims.
 */
export function lowerMatvec(root: Node, plan: MatvecPlan, isMat: (n: Node) => boolean, o: MatvecOptions = {}): LoweredKernel {
  const { subgroups = false, unroll = true, workgroupStorage = 16384 } = o;
  const { core, matmuls, weights } = plan;
  const e = new Emitter(root, isMat, 'matvec', subgroups);
  e.vectorLoads = o.vectorLoads ?? false;
  for (const mm of matmuls) e.inlined.add(mm.id);
  const shapeOf = matvecShape(plan, o);
  const { N, K, M, MB, T, direct, batchShape, rowShape, variant, quant, rowsPath, rowsBudget, stagedVariant, R, U, wg, outputsPerGroup, accumulators, mChunks, nGroups, groups, staged } = shapeOf;
  if (rowsPath && o.matvecRows && o.matvecRows !== 'direct') {
    const stagedRows = lowerStagedRows(root, plan, isMat, { subgroups, unroll, workgroupStorage, accumulators: rowsBudget, variant: o.matvecRows });
    if (stagedRows) return stagedRows;
  }
  const shape = core.shape;
  // a matmul may be a reshape of the core's shape (same linear positions): its rows are indexed in its own shape
  const mmRowShape = (mm: Node) => (direct ? mm.shape.slice(0, -1) : rowShape);
  const partsPerAcc = partsOf(subgroups);

  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const gi = e.bound('gi', groups - 1);
  const batch = delinearize(e.ix, e.ix.div(gi, mChunks * nGroups), batchShape).map((s, d) => e.declareTop(`o${d}`, s));
  const mb0 = mChunks > 1 ? e.declareTop(`o${batch.length}`, e.ix.mul(e.ix.mod(e.ix.div(gi, nGroups), mChunks), MB)) : e.ix.lit(0);
  const n0 = e.declareTop(`o${batch.length + 1}`, e.ix.mul(e.ix.mod(gi, nGroups), R));
  // the rows this workgroup reads (clamped: a partial last block recomputes the last row, never stored twice)
  const rowIdx = (mm: Node, i: number) => {
    const m = mChunks > 1 ? e.ix.min(e.ix.add(mb0, e.ix.lit(i)), M - 1) : e.ix.lit(Math.min(i, M - 1));
    return delinearize(e.ix, m, mmRowShape(mm)).map((s) => e.indexVar(s));
  };
  const colIdx = Array.from({ length: R }, (_, c) => e.declareTop(`o${batch.length + 2 + c}`, e.ix.min(e.ix.add(n0, e.ix.lit(c)), N - 1)));
  const acc = (t: number, i: number, c: number) => `acc${t}_${i}_${c}`;

  // U k values per thread and trip (a pair, a packed word or a block): lid * U, then strides of WG * U; written out
  // trip by trip only while the code stays small: every trip repeats each row's prologue, and shader compilation
  // (lavapipe's LLVM above all) grows with the text
  const pairs = Math.ceil(K / U);
  const stride = unroll && (rowsPath || Math.ceil(pairs / wg) * MB <= UNROLL_ROW_TRIPS) ? wg : undefined;
  if (unroll && (MB <= UNROLL_ROWS || rowsPath)) e.workgroupSize = wg; // the phases (a norm's statistic) unroll their loops too
  // the rows path with its K loop written out loads every trip's weight words first, ahead of the phases (the rows'
  // norm statistics), so that their latency overlaps the phases'; a partial last trip loads a clamped index
  const trips = stride === undefined ? Infinity : Math.ceil(pairs / stride);
  const preloaded: KExpr[][][][] = [];
  // one row (decode at batch 1) may do the same (matvecPreload), its K loop written out as the rows path's is
  const preloadOne = o.matvecPreload === true && M === 1 && direct && !quant;
  const preload = !((rowsPath || preloadOne) && trips <= PRELOAD_TRIPS) ? [] : e.nested(() => {
    for (let trip = 0; trip < trips; trip++) {
      const p = e.bound(e.fresh('k'), pairs - 1);
      const start = trip === 0 ? Kx.v('lid') : V.arith('+', Kx.v('lid'), Kx.u32(trip * wg));
      e.line(`let ${p} = ${(trip + 1) * wg > pairs ? V.fn('min', [start, Kx.u32(pairs - 1)]) : start};`);
      const kk = e.bound(e.ix.mul(p, U), K - U);
      // f32 words come back as buffer reads: loaded here too
      const bind = (v: KExpr) => {
        if (/^[\w.]+$/.test(`${v}`)) return v;
        const name = e.fresh('v');
        e.line(`let ${name} = ${v};`);
        return Kx.v(name, 'f32');
      };
      preloaded.push(weights.map((w) => colIdx.map((col) => loadWeightRun(e, w!, e.ix.add(e.ix.mul(col, K), kk), U).map(bind))));
    }
  });
  const main = e.nested(() => {
    for (let t = 0; t < T; t++) for (let i = 0; i < MB; i++) for (let c = 0; c < R; c++) e.line(`var ${acc(t, i, c)}: f32 = 0.0;`);
    const step = (kk: KExpr) => {
      const ks = Array.from({ length: U }, (_, u) => e.ix.add(kk, e.ix.lit(u)));
      // the weight elements of each column at k..k+U-1 (the rows path: every matmul's loads before any use)
      const load = (mm: Node, t: number): KExpr[][] =>
        Array.from({ length: R }, (_, c) => {
          const w = weights[t];
          if (!w) return ks.map((k) => e.value(mm.inputs[1]!, [...batch, k, colIdx[c]!]));
          return loadWeightRun(e, w, e.ix.add(e.ix.mul(colIdx[c]!, K), kk), U);
        });
      const loaded = preloaded.shift() ?? (rowsPath ? matmuls.map(load) : []);
      matmuls.forEach((mm, t) => {
        const wv = loaded[t] ?? load(mm, t);
        for (let i = 0; i < MB; i++) {
          const rows = rowIdx(mm, i);
          const av = ks.map((k) => e.value(mm.inputs[0]!, [...batch, ...rows, k]));
          for (let c = 0; c < R; c++) {
            const a = Kx.v(acc(t, i, c), 'f32');
            e.line(`${a} = ${V.sum([a, ...av.map((x, u) => V.arith('*', x, wv[c]![u]!))])};`);
          }
        }
      });
    };
    const loop = { plan, K, MB, R, wg, U, unroll, rowIdx, colIdx, acc };
    if (quant) (staged && variant === 'dot4' ? dot4Loop(e, loop, staged) : staged && variant === 'half' ? halfLoop(e, loop, staged) : quantLoop(e, loop, staged)).forEach((l) => e.line(l));
    else e.stridedLoop('lid', pairs, stride, (p) => step(e.bound(e.ix.mul(p, U), K - U))).forEach((l) => e.line(l));
    // reduce each accumulator over the workgroup into mv_part[j * parts]
    const all = [];
    for (let t = 0; t < T; t++) for (let i = 0; i < MB; i++) for (let c = 0; c < R; c++) all.push(acc(t, i, c));
    const parts = partsPerAcc(wg);
    if (subgroups) {
      all.forEach((a, j) => e.line(`let s${j} = subgroupAdd(${a});`));
      e.line(`if (sg_lane == 0u) {`);
      all.forEach((_, j) => e.line(`  mv_part[${V.arith('+', Kx.u32(j * parts), V.arith('/', Kx.v('lid'), Kx.v('sg_size')))}] = s${j};`));
      e.line(`}`);
      e.line(`workgroupBarrier();`);
    } else {
      all.forEach((a, j) => e.line(`mv_part[${V.arith('+', Kx.u32(j * parts), Kx.v('lid'))}] = ${a};`));
      e.line(`workgroupBarrier();`);
      e.line(`for (var s: u32 = WG / 2u; s > 0u; s >>= 1u) {`);
      e.line(`  if (lid < s) {`);
      // accumulator j's partial of thread lid, and its partner's s threads on
      const mine = V.arith('+', V.arith('*', Kx.v('j'), Kx.u32(parts)), Kx.v('lid'));
      const part = (i: KExpr) => Kx.load('mv_part', i, all.length * parts, 'f32');
      e.line(`    for (var j: u32 = 0u; j < ${all.length}u; j++) { mv_part[${mine}] = ${V.arith('+', part(mine), part(V.arith('+', mine, Kx.v('s'))))}; }`);
      e.line(`  }`);
      e.line(`  workgroupBarrier();`);
      e.line(`}`);
    }
    // one thread per output: total its partials, evaluate the epilogue, store
    const out = e.nested(() => {
      const local = e.fresh('k');
      const em = e.bound(e.fresh('k'), M - 1); // within the guard below
      const ec = e.bound(e.fresh('k'), N - 1);
      e.line(`let ${local} = lid;`);
      e.line(`let ${em} = ${e.ix.add(mb0, e.ix.div(Kx.v(local), R))};`);
      e.line(`let ${ec} = ${e.ix.add(n0, e.ix.mod(Kx.v(local), R))};`);
      e.line(`if (${em} < ${M}u && ${ec} < ${N}u) {`);
      const inner = e.nested(() => {
        const idx = [...batch, ...delinearize(e.ix, em, rowShape).map((s) => e.indexVar(s)), ec];
        matmuls.forEach((mm, t) => {
          const tot = `tot${t}`;
          // the first of this output's partials (one per subgroup, or the reduction's one)
          const partials = V.arith('*', V.arith('+', Kx.u32(t * outputsPerGroup), Kx.v(local)), Kx.u32(parts));
          if (subgroups) {
            e.line(`var ${tot}: f32 = 0.0;`);
            e.line(`for (var s: u32 = 0u; s < WG / sg_size; s++) { ${tot} = ${V.arith('+', Kx.v(tot, 'f32'), Kx.load('mv_part', V.arith('+', partials, Kx.v('s')), all.length * parts, 'f32'))}; }`);
          } else e.line(`let ${tot} = mv_part[${partials}];`);
          e.seedAll(mm, Kx.v(tot, 'f32')); // this thread's one output: every read of the matmul is at its position
        });
        const v = e.value(core, idx);
        e.line(e.store(root, linearize(e.ix, idx, shape), v));
      });
      inner.forEach((l) => e.line('  ' + l));
      e.line(`}`);
    });
    e.line(`if (lid < ${outputsPerGroup}u) {`);
    out.forEach((l) => e.line('  ' + l));
    e.line(`}`);
  });
  // read after the body is built: index names hoisted to the top block belong before the phases
  if (subgroups) e.redTypes.add('f32'); // declares the subgroup builtins
  const head = [...e.topLines()];
  // the rows path's norm statistics reduce together, through mv_part (read only after they are done)
  const phases = rowsPath ? e.mergedPhases('mv_part', wg) : { lines: e.phases, phases: 0 };
  const shared = [`var<workgroup> mv_part: array<f32, ${Math.max(1, accumulators * partsPerAcc(wg), e.mergedFloats(phases.phases, wg))}>;`];
  if (staged && variant === 'dot4') shared.push(...dot4Shared(staged.chunk, MB));
  else if (staged && variant === 'half') shared.push(...halfShared(staged.chunk, MB));
  else if (staged) shared.push(`var<workgroup> mv_x: array<vec4<f32>, ${MB * stagedRow(staged.chunk)}>;`);
  const text = assemble(e, [...head, ...preload, ...phases.lines, ...main], wg, shared);
  return { ...finish(e, 'matvec', { ...text, ...(staged && variant === 'half' ? { f16: true } : {}) }, groups), shape: describeMatvecShape(shapeOf) };
}

const storageOf = (w: Node) => (w as Node<'weight'>).attrs.storage;

/** Weight elements one u32 of its buffer holds (f32 counts as one). */
function elementsPerWord(w: Node): number {
  const storage = storageOf(w);
  return isQuantized(storage) ? QUANT_FORMATS[storage].perWord : storage === 'f32' ? 1 : 2;
}

/**
 * Values of `count` consecutive elements of a weight from linear offset `off` (a multiple of count), read a packed
 * word at a time: count is 1, or a multiple of the elements per word (quantized: each word's block constants are
 * loaded with it, so adjacent threads of one block read the same constant word in one transaction).
 */
export function loadWeightRun(e: Emitter, w: Node, off: KExpr, count: number): KExpr[] {
  const storage = storageOf(w);
  const buf = e.buffer(w);
  const n = numel(w.shape);
  const base = e.fresh('ix');
  e.line(`let ${base} = ${off};`);
  const at = (u: number) => (u ? V.arith('+', Kx.v(base), Kx.u32(u)) : Kx.v(base));
  if (storage === 'f32') return Array.from({ length: count }, (_, u) => Kx.load(buf, at(u), n, 'f32'));
  if (isQuantized(storage)) {
    const format = QUANT_FORMATS[storage];
    const values: KExpr[] = [];
    for (let u = 0; u < count; u += format.perWord) {
      const run = format.run(buf, at(u), n, (p) => e.fresh(p));
      run.lines.forEach((l) => e.line(l));
      values.push(...run.values);
    }
    return values;
  }
  const half = storage as HalfStorage;
  if (count > 2) return Array.from({ length: count / 2 }, (_, h) => loadWeightRun(e, w, e.ix.add(Kx.v(base), e.ix.lit(2 * h)), 2)).flat();
  if (count === 1) return [halfElement(half, buf, Kx.v(base), n)];
  const word = e.fresh('v');
  e.line(`let ${word} = ${halfWord(buf, Kx.v(base), n)};`);
  const pair = halfPair(half, Kx.v(word), (p) => e.fresh(p));
  pair.lines.forEach((l) => e.line(l));
  return pair.values;
}
