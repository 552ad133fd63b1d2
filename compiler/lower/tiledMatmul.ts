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
 * A 64x64 output tile per workgroup (32x32 when that leaves too few workgroups), K in steps of 16 (32 for 32x32
 * tiles) through shared memory, the next step's loads in flight while a step is multiplied; each of 256 threads keeps a 4x4 (2x2) block of accumulators per matmul. Operands are read through the emitter, so prologues (casts, unpacking, gathers) stay
 * fused; the epilogue evaluates the root at each output with each matmul's value seeded from its accumulator.
 */
export function lowerTiledMatmul(root: Node, mms: Node[], isMat: (n: Node) => boolean): LoweredKernel {
  const e = new Emitter(root, isMat, 'tiled');
  for (const mm of mms) e.inlined.add(mm.id);
  const a = mms[0]!.inputs[0]!;
  const r = root.shape.length;
  const [M, N] = [root.shape[r - 2]!, root.shape[r - 1]!];
  const K = reduceLength(mms[0]!);
  const batchShape = root.shape.slice(0, -2);
  const big = numel(batchShape) * Math.ceil(M / 64) * Math.ceil(N / 64) >= TILE_MIN_GROUPS;
  const TILE = big ? 64 : 32; // outputs per workgroup along M and N
  const [MB, NB] = [Math.ceil(M / TILE), Math.ceil(N / TILE)];
  const groups = numel(batchShape) * MB * NB;
  const per = TILE / 16; // outputs per thread along each axis (16x16 threads)
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  e.bound('gi', groups - 1);
  const batch = delinearize(e.ix, `(gi / ${MB * NB}u)`, batchShape).map((s, d) => e.declareTop(`o${d}`, s));
  e.line(`let m0 = ((gi / ${NB}u) % ${MB}u) * ${TILE}u;`);
  e.line(`let n0 = (gi % ${NB}u) * ${TILE}u;`);
  e.line(`let tx = lid % 16u;`);
  e.line(`let ty = lid / 16u;`);
  mms.forEach((_, t) => {
    for (let i = 0; i < per; i++) for (let j = 0; j < per; j++) e.line(`var acc${t}_${i}_${j}: f32 = 0.0;`);
  });
  // K per step. 32 (where two B tiles still fit 16 KiB) doubled each thread's loads and lavapipe's compile time of
  // the kernel (2.2 -> 5.5 s) for a gain the H200 run of a956350 could not separate from the attention change
  const TK = 16;
  const perLoad = (TILE * TK) / 256; // elements of each tile a thread loads per step
  // Software pipelining: the next step's elements are loaded into registers while this step's tiles are multiplied,
  // so the global loads' latency overlaps the arithmetic (one step at a time left them exposed: each step cost a
  // full round trip to memory, ~60 us for a 128 x 1024 x 1024 matmul on an H200).
  for (let q = 0; q < perLoad; q++) {
    e.line(`var ra_${q}: f32 = 0.0;`);
    mms.forEach((_, t) => e.line(`var rb${t}_${q}: f32 = 0.0;`));
  }
  // A elements [m][k] and B elements [k][n], k fastest for both (row-major activations and [out, in] weights read
  // through a transpose are then contiguous across threads)
  const place = (q: number) => {
    const el = `(lid + ${q * 256}u)`;
    return { row: `(${el} / ${TK}u)`, kk: `(${el} % ${TK}u)` };
  };
  const loadFrom = (base: string) =>
    e.nested(() => {
      for (let q = 0; q < perLoad; q++) {
        const { row, kk } = place(q);
        e.line(`{`);
        const inner = e.nested(() => {
          const m = e.fresh('k');
          const k = e.fresh('k');
          const n = e.fresh('k');
          e.line(`let ${m} = min(m0 + ${row}, ${M - 1}u);`);
          e.line(`let ${k} = min(${base} + ${kk}, ${K - 1}u);`);
          e.line(`let ${n} = min(n0 + ${row}, ${N - 1}u);`);
          const av = e.value(a, [...batch, m, k]);
          e.line(`ra_${q} = select(0.0, ${av}, m0 + ${row} < ${M}u && ${base} + ${kk} < ${K}u);`);
          mms.forEach((mm, t) => {
            const bv = e.value(mm.inputs[1]!, [...batch, k, n]);
            e.line(`rb${t}_${q} = select(0.0, ${bv}, n0 + ${row} < ${N}u && ${base} + ${kk} < ${K}u);`);
          });
        });
        inner.forEach((l) => e.line('  ' + l));
        e.line(`}`);
      }
    });
  // one loop trip per step plus one: trip s stores and multiplies step s - 1 while step s's loads are in flight
  // (the loads written once, so the shader stays as small as before; a trip's barriers are uniform in kt)
  const kt = e.bound(e.fresh('k'), Math.ceil(K / TK) * TK);
  const loads = loadFrom(kt);
  e.line(`for (var ${kt}: u32 = 0u; ${kt} <= ${Math.ceil(K / TK) * TK}u; ${kt} += ${TK}u) {`);
  e.line(`  if (${kt} > 0u) {`);
  for (let q = 0; q < perLoad; q++) {
    const { row, kk } = place(q);
    e.line(`    tile_a[${row} * ${TK + 1}u + ${kk}] = ra_${q};`);
    mms.forEach((_, t) => e.line(`    tile_b${t}[${kk} * ${TILE + 1}u + ${row}] = rb${t}_${q};`));
  }
  e.line(`    workgroupBarrier();`);
  e.line(`  }`);
  e.line(`  if (${kt} < ${K}u) {`);
  loads.forEach((l) => e.line('    ' + l));
  e.line(`  }`);
  e.line(`  if (${kt} > 0u) {`);
  e.line(`    for (var kk: u32 = 0u; kk < ${TK}u; kk++) {`);
  for (let i = 0; i < per; i++) e.line(`      let a${i} = tile_a[(ty + ${16 * i}u) * ${TK + 1}u + kk];`);
  mms.forEach((_, t) => {
    for (let j = 0; j < per; j++) e.line(`      let b${t}_${j} = tile_b${t}[kk * ${TILE + 1}u + tx + ${16 * j}u];`);
    for (let i = 0; i < per; i++) for (let j = 0; j < per; j++) e.line(`      acc${t}_${i}_${j} = acc${t}_${i}_${j} + a${i} * b${t}_${j};`);
  });
  e.line(`    }`);
  e.line(`    workgroupBarrier();`);
  e.line(`  }`);
  e.line(`}`);
  for (let i = 0; i < per; i++)
    for (let j = 0; j < per; j++) {
      const body = e.nested(() => {
        const m = e.fresh('k');
        const n = e.fresh('k');
        e.line(`let ${m} = m0 + ty + ${16 * i}u;`);
        e.line(`let ${n} = n0 + tx + ${16 * j}u;`);
        const idx = [...batch, m, n];
        mms.forEach((mm, t) => e.seed(mm, idx, `acc${t}_${i}_${j}`));
        const v = e.value(root, idx);
        e.line(e.store(root, linearize(e.ix, idx, root.shape), v));
      });
      e.line(`if (m0 + ty + ${16 * i}u < ${M}u && n0 + tx + ${16 * j}u < ${N}u) {`);
      body.forEach((l) => e.line('  ' + l));
      e.line(`}`);
    }
  const tiles = [`var<workgroup> tile_a: array<f32, ${TILE * (TK + 1)}>;`, ...mms.map((_, t) => `var<workgroup> tile_b${t}: array<f32, ${TK * (TILE + 1)}>;`)];
  return finish(e, 'tiled', assemble(e, e.topLines(), 256, tiles), groups);
}

