// The tiled matmul kernel template for matmuls with many rows (prefill), with fused prologues and epilogues.
import type { Node } from '../ir.ts';
import { numel } from '../ir.ts';
import { delinearize, linearize } from '../indexAlgebra.ts';
import { OPS } from '../ops.ts';
import { Emitter, type LoweredKernel, SEQ_MAX, assemble, finish, reduceLength } from './emitter.ts';

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
  const walk = (n: Node): void => {
    if (n.op === 'matmul' && reduceLength(n) > SEQ_MAX && n.shape.join() === root.shape.join()) {
      found.set(n.id, n);
      return;
    }
    if (OPS[n.op].kind === 'reduce' && reduceLength(n) > SEQ_MAX) other = true;
    if (OPS[n.op].kind !== 'elementwise' || n.op === 'iota') return;
    for (const i of n.inputs) if (!isMat(i) && i.op !== 'const' && i.shape.join() === root.shape.join()) walk(i);
  };
  walk(root);
  const mms = [...found.values()];
  if (other || mms.length === 0 || mms.length > 3 || mms.some((m) => m.inputs[0] !== mms[0]!.inputs[0])) return undefined;
  return mms;
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
 * How a tiled kernel splits its work. Why the previous kernel ran at 3% of its byte roofline on an H200 (128-token
 * prefill of llama-400m: 97 us per projection): a 128-row output gives 128 workgroups of 32x32 (one per SM, 8 warps),
 * each walking all of K in steps of 16, one round trip to memory plus two barriers per step (~0.8 us: 176 steps for
 * the 2816-long down projection, 139 us), and a step's arithmetic (2x2 outputs per thread, 4 shared loads per 4
 * multiply-adds) too short to cover that latency. Now each thread keeps 4x4 outputs per matmul (two 16-byte shared
 * loads per 16 multiply-adds), and where the grid is small the workgroup's 256 threads form S slices of the same
 * output tile that walk interleaved parts of K and add their partial sums at the end (split-K inside the
 * workgroup, no second dispatch): S times fewer serial steps, S times the loads in flight per step.
 */
interface TilePlan {
  /** Outputs per workgroup along M and along N. */
  tile: 32 | 64;
  /** Threads per output tile ((tile / 4)^2, each 4x4 outputs) and slices of K per workgroup (256 / threads). */
  threads: number;
  slices: number;
  /** K per step of one slice. */
  tk: number;
}

/** Floats of workgroup memory the kernel uses: 16 KiB, WebGPU's default limit (tiles, then the partial sums). */
const SMEM = 4096;
const WG_TILED = 256;

function tilePlan(groups64: number, matmuls: number): TilePlan {
  const tile = groups64 >= TILE_MIN_GROUPS ? 64 : 32;
  const threads = (tile / 4) ** 2;
  const slices = WG_TILED / threads;
  let tk = 32;
  while (slices * tk * tile * (1 + matmuls) > SMEM) tk /= 2;
  return { tile, threads, slices, tk };
}

/**
 * A 64x64 or 32x32 output tile per workgroup (plan above), operands staged through shared memory in steps of K with
 * the next step's loads in flight while a step is multiplied. Operands are read through the emitter, so prologues
 * (casts, unpacking, gathers, a norm's scale) stay fused; the epilogue evaluates the root at each output with each
 * matmul's value seeded from its summed accumulator. `unroll` writes the per-thread loads and outputs out one by one
 * (loads in flight together on a GPU); off, they are loops (compact shaders for a software adapter).
 */
export function lowerTiledMatmul(root: Node, mms: Node[], isMat: (n: Node) => boolean, unroll = true): LoweredKernel {
  const e = new Emitter(root, isMat, 'tiled');
  for (const mm of mms) e.inlined.add(mm.id);
  const a = mms[0]!.inputs[0]!;
  const r = root.shape.length;
  const [M, N] = [root.shape[r - 2]!, root.shape[r - 1]!];
  const K = reduceLength(mms[0]!);
  const batchShape = root.shape.slice(0, -2);
  const { tile: T, threads: PT, slices: S, tk: TK } = tilePlan(numel(batchShape) * Math.ceil(M / 64) * Math.ceil(N / 64), mms.length);
  const [MB, NB] = [Math.ceil(M / T), Math.ceil(N / T)];
  const groups = numel(batchShape) * MB * NB;
  const T4 = T / 4; // vec4s per row of a tile
  const region = TK * T4; // vec4s of one operand's tile for one slice
  const perLoad = (TK * T) / PT; // elements of each operand tile a thread loads per step
  const outs = (T * T) / WG_TILED; // outputs each thread writes in the epilogue
  const ops = [a, ...mms.map((mm) => mm.inputs[1]!)];
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  e.bound('gi', groups - 1);
  const batch = delinearize(e.ix, `(gi / ${MB * NB}u)`, batchShape).map((s, d) => e.declareTop(`o${d}`, s));
  e.line(`let m0 = ((gi / ${NB}u) % ${MB}u) * ${T}u;`);
  e.line(`let n0 = (gi % ${NB}u) * ${T}u;`);
  e.line(`let sl = lid / ${PT}u;`); // this thread's slice of K
  e.line(`let t = lid % ${PT}u;`);
  e.line(`let tx = t % ${T4}u;`);
  e.line(`let ty = t / ${T4}u;`);
  mms.forEach((_, t) => {
    for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) e.line(`var acc${t}_${i}_${j}: f32 = 0.0;`);
  });
  // Shared memory as vec4s on a GPU (one 16-byte load per 4 rows); as scalars for a software adapter, whose
  // compiler turns a vec4 component stored at a run-time index into per-lane code (3x the compile time).
  const vec = unroll;
  const smem = vec ? 'tile_v4' : 'tile_f32';
  const at4 = (i4: string, c: string) => (vec ? `${smem}[${i4}][${c}]` : `${smem}[(${i4}) * 4u + ${c}]`);
  const read4 = (i4: string) => (vec ? `${smem}[${i4}]` : `vec4<f32>(${[0, 1, 2, 3].map((c) => `${smem}[(${i4}) * 4u + ${c}u]`).join(', ')})`);
  const write4 = (i4: string, v: string) => (vec ? [`${smem}[${i4}] = ${v};`] : [`let w4 = ${v};`, ...[0, 1, 2, 3].map((c) => `${smem}[(${i4}) * 4u + ${c}u] = w4[${c}];`)]);
  // Written out (q a literal) or as one loop over q, for the per-thread loads and outputs.
  // Every body is built before any line is written: a value hoisted while building one (a slot id) lands above
  // all of them, not inside the first.
  const repeat = (count: number, body: (q: string) => string[], pad = ''): void => {
    if (unroll) {
      const bodies = Array.from({ length: count }, (_, q) => body(`${q}u`));
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
  // Element q of a thread's share of a tile: row (m or n) and k within the step, k fastest (row-major activations
  // and [out, in] weights are then contiguous across threads).
  const place = (q: string) => ({ row: `((t + ${q} * ${PT}u) / ${TK}u)`, kk: `((t + ${q} * ${PT}u) % ${TK}u)` });
  // A tile is stored k-major, 4 rows to a vec4, the vec4 column XOR-swizzled by k so that threads storing
  // neighbouring k do not share a bank; a thread then reads its 4 rows at one k as one vec4.
  const slot = (o: number, row: string, kk: string) =>
    at4(`(${o * S}u + sl) * ${region}u + ${kk} * ${T4}u + ((${row} / 4u) ^ (${kk} & ${T4 - 1}u))`, `${row} % 4u`);
  // On a GPU the next step's elements wait in registers (`stage`) while this step is multiplied, so the loads'
  // latency overlaps the arithmetic; a software adapter stores them straight into shared memory.
  if (vec) ops.forEach((_, o) => e.line(`var stage${o}: array<f32, ${perLoad}>;`));
  const dest = (o: number, q: string, row: string, kk: string) => (vec ? `stage${o}[${q}]` : slot(o, row, kk));
  const kEnd = Math.ceil(K / (S * TK)) * S * TK;
  const kb = e.bound(e.fresh('k'), kEnd);
  const k0 = `(${kb} + sl * ${TK}u)`;
  const loads = (pad: string) =>
    repeat(
      perLoad,
      (q) =>
        e.nested(() => {
          const { row, kk } = place(q);
          const [m, k, n] = [e.fresh('k'), e.fresh('k'), e.fresh('k')];
          // clamped, so that the index arithmetic may fold with the bounds
          e.line(`let ${e.bound(m, M - 1)} = min(m0 + ${row}, ${M - 1}u);`);
          e.line(`let ${e.bound(k, K - 1)} = min(${k0} + ${kk}, ${K - 1}u);`);
          e.line(`let ${e.bound(n, N - 1)} = min(n0 + ${row}, ${N - 1}u);`);
          const inK = `${k0} + ${kk} < ${K}u`;
          e.line(`${dest(0, q, row, kk)} = select(0.0, ${e.value(a, [...batch, m, k])}, m0 + ${row} < ${M}u && ${inK});`);
          mms.forEach((mm, t) => e.line(`${dest(t + 1, q, row, kk)} = select(0.0, ${e.value(mm.inputs[1]!, [...batch, k, n])}, n0 + ${row} < ${N}u && ${inK});`));
        }),
      pad,
    );
  const multiply = (pad: string) => {
    const comp = ['x', 'y', 'z', 'w'];
    e.line(`${pad}for (var kk: u32 = 0u; kk < ${TK}u; kk++) {`);
    e.line(`${pad}  let av = ${read4(`sl * ${region}u + kk * ${T4}u + ((kk & ${T4 - 1}u) ^ ty)`)};`);
    mms.forEach((_, t) => {
      e.line(`${pad}  let bv${t} = ${read4(`(${(t + 1) * S}u + sl) * ${region}u + kk * ${T4}u + ((kk & ${T4 - 1}u) ^ tx)`)};`);
      for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) e.line(`${pad}  acc${t}_${i}_${j} = acc${t}_${i}_${j} + av.${comp[i]} * bv${t}.${comp[j]};`);
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
    repeat(perLoad, (q) => {
      const { row, kk } = place(q);
      return ops.map((_, o) => `${slot(o, row, kk)} = stage${o}[${q}];`);
    }, '    ');
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
  mms.forEach((_, t) => {
    e.line(`var s${t}: array<f32, ${outs}>;`);
    e.line(`workgroupBarrier();`);
    for (let i = 0; i < 4; i++) {
      const w = write4(`sl * ${T * T4}u + (ty * 4u + ${i}u) * ${T4}u + tx`, `vec4<f32>(${[0, 1, 2, 3].map((j) => `acc${t}_${i}_${j}`).join(', ')})`);
      if (w.length === 1) e.line(w[0]!);
      else e.line(`{ ${w.join(' ')} }`);
    }
    e.line(`workgroupBarrier();`);
    repeat(outs, (q) => {
      const terms = Array.from({ length: S }, (_, s) => at4(`${s * T * T4}u + lid / 4u + ${q} * ${WG_TILED / 4}u`, 'lid % 4u'));
      return [`s${t}[${q}] = ${terms.join(' + ')};`];
    });
  });
  repeat(outs, (q) => {
    const body = e.nested(() => {
      const [m, n] = [e.fresh('k'), e.fresh('k')];
      e.line(`let ${m} = m0 + (lid + ${q} * ${WG_TILED}u) / ${T}u;`);
      e.line(`let ${n} = n0 + (lid + ${q} * ${WG_TILED}u) % ${T}u;`);
      e.bound(m, MB * T - 1);
      e.bound(n, NB * T - 1);
      const idx = [...batch, m, n];
      mms.forEach((mm, t) => e.seed(mm, idx, `s${t}[${q}]`));
      const v = e.value(root, idx);
      e.line(e.store(root, linearize(e.ix, idx, root.shape), v));
    });
    return [`if (m0 + (lid + ${q} * ${WG_TILED}u) / ${T}u < ${M}u && n0 + (lid + ${q} * ${WG_TILED}u) % ${T}u < ${N}u) {`, ...body.map((l) => '  ' + l), `}`];
  });
  return finish(e, 'tiled', assemble(e, e.topLines(), WG_TILED, [vec ? `var<workgroup> ${smem}: array<vec4<f32>, ${SMEM / 4}>;` : `var<workgroup> ${smem}: array<f32, ${SMEM}>;`]), groups);
}
