// The subgroup matrix form of the tiled matmul (DeviceLimits.subgroupMatrix): its tiling (matrixPlan) and the WGSL
// of the phases where it differs from the f32 form (matrixPieces); lowerTiledMatmul writes the rest (the staged
// loads, the loop, the fused epilogue) for both.
import { K as Kx, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import type { TilePlan } from './tiledMatmul.ts';

const u32 = Kx.u32;
const [SL, SM, SN] = [Kx.v('sl'), Kx.v('sm'), Kx.v('sn')];
const times = (x: KExpr, c: number) => V.arith('*', x, u32(c));
/** The first row (or column) of a subgroup's fragment: its subgroup's block of `per`, then `at` within it. */
const fragment = (sub: KExpr, per: number, at: number) => V.arith('+', times(sub, per), u32(at));

/**
 * The subgroup matrix shape the tiled matmul multiplies with (lowerTiledMatmul): left m x k, right
 * k x n, result m x n, f16 operands and an f32 result, on subgroups of `size` invocations (the adapter's only size:
 * the kernel numbers its subgroups as local_invocation_index / size).
 */
export interface SubgroupMatrixConfig {
  m: number;
  n: number;
  k: number;
  size: number;
}

/**
 * The matrix form's part of a TilePlan (lower/tiledMatmul.ts): the adapter's config, the f16 tiles' row stride, a
 * slice's subgroups along m, and the fragments (config-sized result matrices) each subgroup keeps along m and n.
 */
export interface MatrixShape {
  config: SubgroupMatrixConfig;
  stride: number;
  sgm: number;
  fm: number;
  fn: number;
}

/** A subgroup matrix tiling: outputs a workgroup (tm x tn), slices of K, K a slice's step. */
export interface MatrixTile {
  tm: 16 | 32 | 64;
  tn: 16 | 32 | 64;
  slices: 1 | 2 | 4 | 8;
  tk: 16 | 32 | 64;
}

/** Subgroups a workgroup of the subgroup matrix kernel. */
const MATRIX_SUBGROUPS = 8;

/**
 * The subgroup matrix tiling (DeviceLimits.subgroupMatrix): tm x tn outputs a workgroup of eight subgroups, dealt
 * to `slices` slices of K that add their sums at the end (split-K inside the workgroup, as the f32 kernel's
 * slices), each slice's subgroups laid over the tile's fragments (config-sized result matrices). Operands are
 * staged as f16 rows padded by 8 halves (a row stride that is no multiple of 128 bytes); the results go through f32
 * workgroup memory to the epilogue. `tile` where given (DeviceLimits.matrixTile, a measurement knob), else
 * defaultMatrixTile. Undefined where the config does not divide the tile or workgroup memory is short.
 */
export function matrixPlan(config: SubgroupMatrixConfig, M: number, N: number, K: number, matmuls: number, workgroupBytes: number, tile?: MatrixTile): (TilePlan & { matrix: MatrixShape }) | undefined {
  const { tm, tn, slices, tk: tk0 } = tile ?? defaultMatrixTile(M, N);
  const wg = MATRIX_SUBGROUPS * config.size;
  const per = MATRIX_SUBGROUPS / slices; // subgroups a slice
  const [gm, gn] = [tm / config.m, tn / config.n]; // fragments along m and n
  let sgm = per;
  while (sgm > 1 && (gm % sgm !== 0 || gn % (per / sgm) !== 0)) sgm /= 2;
  const [fm, fn] = [gm / sgm, gn / (per / sgm)];
  if (!Number.isInteger(fm) || !Number.isInteger(fn) || fm < 1 || fn < 1) return undefined;
  const width = K % 2 === 0 ? 2 : 1;
  const threads = wg / slices;
  const bytes = (tk: number) => 2 * slices * (tk + 8) * (tm + tn * matmuls) + 4 * tm * tn;
  const fits = (tk: number) => bytes(tk) <= workgroupBytes && tk % config.k === 0 && (tk * Math.min(tm, tn)) % (threads * width) === 0;
  // Where the tile does not fit, the K step shrinks (llama-400m's prefill gate/up: two slices of 16, 32 trips).
  // Halving the slices instead (one slice of 64, 16 trips) ran faster alone in `bench tiled` (37.9 against 42.2 us)
  // but made llama-400m's whole prefill 10% slower in two rounds of one call, jamba-small's 3-11% faster: not taken
  // (bench/results/2026-12-03-h200-tiling/).
  let tk: number = tk0;
  while (tk > config.k && !fits(tk)) tk /= 2;
  if (!fits(tk)) return undefined;
  return { tm, tn, threads, slices, tk, width, floats: 0, wg, matrix: { config, stride: tk + 8, sgm, fm, fn } };
}

/**
 * 32 x 64 outputs and two slices of K where that gives 128 workgroups or more, else 32 x 32 and four slices (twice
 * the workgroups, half the serial steps). The loads and the prologues the operands fuse (a norm's scale, a gated
 * norm's silu) run on the workgroup's threads, so a 128-row prefill needs many workgroups in flight: measured on the
 * H200 in the 128-token prefills (bench/results/2026-12-03-h200-subgroup-matrix/, kernels timed in the model, weights
 * from memory, not L2), llama-400m's tiled kernels took 3.35 ms with 32 x 32 everywhere and 4.03 ms with 32 x 64
 * (its q/k/v/o of 64 workgroups or fewer were the slow ones), granite4h-350m-like's 5.09 and 4.55 ms; 64 x 64, and
 * 16 x 32 with eight slices, were slower in both (4.57-6.74 ms).
 */
function defaultMatrixTile(M: number, N: number): MatrixTile {
  return Math.ceil(M / 32) * Math.ceil(N / 64) >= 128 ? { tm: 32, tn: 64, slices: 2, tk: 32 } : { tm: 32, tn: 32, slices: 4, tk: 32 };
}

/**
 * The tiling of batched decode rows (lower/tiledMatmul.ts, TiledOptions.rows): all rows in one matrix's m (16), and
 * columns for at least 128 workgroups where N allows (64 for an LM head, 16 for a 1024-wide projection), each subgroup
 * one fragment, so the slices of K take what the columns leave of the eight subgroups (8 at 16 columns: a 1024-long K
 * in 4 steps of 256).
 */
export function rowsMatrixTile(M: number, N: number): MatrixTile {
  const tm = M <= 16 ? 16 : 32;
  const tn = N / 64 >= 128 ? 64 : N / 32 >= 128 ? 32 : 16;
  const slices = Math.max(1, MATRIX_SUBGROUPS / ((tm / 16) * (tn / 16))) as MatrixTile['slices'];
  return { tm, tn, slices, tk: 32 };
}

/**
 * The matrix form's WGSL, for a plan's tile (tm x tn, K steps of tk, `slices` slices, `matmuls` right operands):
 * `setup` numbers the subgroups and declares the accumulators, `slot` is a staged element's place in `tile_h`,
 * `multiply` is one step's products, `store` one slice's accumulators of matmul t into `tile_c`.
 */
export function matrixPieces(mx: MatrixShape, d: { tm: number; tn: number; tk: number; slices: number; matmuls: number }) {
  const { config: c, stride, sgm, fm, fn } = mx;
  const region = stride * (d.tm + d.tn * d.matmuls); // halves of one slice's tiles
  const base = (o: number) => (o === 0 ? 0 : stride * (d.tm + (o - 1) * d.tn)); // operand o's tile in a slice's region
  const mms = Array.from({ length: d.matmuls }, (_, t) => t);
  return {
    describe: `${d.tm}x${d.tn} outputs, ${c.m}x${c.n}x${c.k} subgroup matrices (${fm}x${fn} a subgroup), ${d.slices} slices of K in steps of ${d.tk}`,
    shape: `matrix ${d.tm}x${d.tn} s${d.slices} k${d.tk} ${c.m}x${c.n}x${c.k}`,
    decls: [`var<workgroup> tile_h: array<f16, ${d.slices * region}>;`, `var<workgroup> tile_c: array<f32, ${d.tm * d.tn}>;`],
    setup: (): string[] => [
      // subgroup sg's fragments: rows sm * fm * m.., columns sn * fn * n.. of the tile
      `let sg = t / ${c.size}u;`,
      `let sm = sg % ${sgm}u;`,
      `let sn = sg / ${sgm}u;`,
      ...mms.flatMap((t) => fragments().map(([i, j]) => `var acc${t}_${i}_${j} = subgroup_matrix_result<f32, ${c.n}, ${c.m}>();`)),
    ],
    // rows of `stride` halves, k fastest: subgroupMatrixLoad's row-major left operand, and its column-major right
    // operand (the weight's rows are the right operand's columns)
    slot: (o: number, row: KExpr, kk: KExpr): string => `tile_h[${V.sum([times(SL, region), u32(base(o)), times(row, stride), kk])}]`,
    multiply: (): string[] => {
      const lines: string[] = [];
      for (let kk = 0; kk < d.tk; kk += c.k) {
        for (let i = 0; i < fm; i++) lines.push(`let l${kk}_${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, ${c.k}, ${c.m}>, row_major>(&tile_h, ${V.sum([times(SL, region), times(fragment(SM, fm * c.m, i * c.m), stride), u32(kk)])}, ${stride}u);`);
        for (const t of mms) {
          for (let j = 0; j < fn; j++) lines.push(`let r${kk}_${t}_${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, ${c.n}, ${c.k}>, col_major>(&tile_h, ${V.sum([times(SL, region), u32(base(t + 1)), times(fragment(SN, fn * c.n, j * c.n), stride), u32(kk)])}, ${stride}u);`);
          for (const [i, j] of fragments()) lines.push(`acc${t}_${i}_${j} = subgroupMatrixMultiplyAccumulate(l${kk}_${i}, r${kk}_${t}_${j}, acc${t}_${i}_${j});`);
        }
      }
      return [...lines, `workgroupBarrier();`];
    },
    // every slice's accumulators of matmul t at once, slice sl's tile at sl * tm * tn (batched decode rows)
    storeSlices: (t: number): string[] => stores(t, [times(SL, d.tm * d.tn)]),
    store: (t: number, sl: number): string[] => (d.slices > 1 ? [`if (sl == ${sl}u) {`, ...stores(t, []).map((l) => '  ' + l), `}`] : stores(t, [])),
  };
  /** Matmul t's accumulators into tile_c, the tile starting at the sum of `base` (none: 0). */
  function stores(t: number, base: KExpr[]): string[] {
    return fragments().map(([i, j]) => `subgroupMatrixStore<row_major>(&tile_c, ${V.sum([...base, times(fragment(SM, fm * c.m, i * c.m), d.tn), times(SN, fn * c.n), u32(j * c.n)])}, acc${t}_${i}_${j}, ${d.tn}u);`);
  }
  function fragments(): [number, number][] {
    return Array.from({ length: fm * fn }, (_, f) => [Math.floor(f / fn), f % fn]);
  }
}
