// Batched decode rows on the tiled template (DeviceLimits.tiledRows): which matvec plans take it, the workgroup memory
// its rows' statistics and slice sums reserve, and its left operand's loads, a literal row at a time.
import type { Node } from '../ir.ts';
import { numel } from '../ir.ts';
import { delinearize } from '../indexAlgebra.ts';
import { K as Kx, type KExpr } from '../kexpr/expr.ts';
import { V } from '../kexpr/value.ts';
import { isQuantized } from '../quantized.ts';
import { type Emitter, reduceLength } from './emitter.ts';
import type { MatvecPlan } from './matvecKernel.ts';

/** Rows of a batched decode kernel on tiles at most: one subgroup matrix's m, and the rows' statistics' workgroup memory. */
export const TILED_ROWS_MAX = 16;

/** Floats of every slice's sums of a batched-rows matrix kernel: 8 subgroups of one 16 x 16 fragment each. */
const MATRIX_SLICE_SUMS = 8 * 256;

/**
 * Whether a batched decode matmul (a matvec plan) takes the tiled kernel (DeviceLimits.tiledRows): from `from` rows to
 * TILED_ROWS_MAX, every weight read directly and 16-bit (or block-quantized, where `quantized`), one left operand, K
 * in pairs.
 */
export function batchedRowsTiled(plan: MatvecPlan, from: number | false | undefined, quantized = false): boolean {
  if (!from) return false;
  const { core, matmuls, weights } = plan;
  const M = numel(core.shape.slice(0, -1));
  const N = core.shape[core.shape.length - 1]!;
  const storages = weights.map((w) => (w as Node<'weight'> | undefined)?.attrs.storage);
  const ok = storages.every((s) => s !== undefined && s !== 'f32' && (quantized || !isQuantized(s)));
  return ok && M >= from && M <= TILED_ROWS_MAX && N >= 16 && reduceLength(matmuls[0]!) % 2 === 0 && matmuls.length <= 3 && matmuls.every((m) => m.inputs[0] === matmuls[0]!.inputs[0]);
}

/**
 * Bytes of workgroup memory M batched rows reserve beside the tiles: their statistics merged into one reduction round
 * (a float per row and thread: no subgroups here) or, for the matrix form, every slice's sums at once (one f32 array
 * serves both, the statistics before the K loop and the sums after it), and a lone phase's reduction array.
 */
export function rowsReserve(M: number, wg: number): number {
  return 4 * (Math.max(MATRIX_SLICE_SUMS, M * wg) + wg);
}

/** What the left operand's row loads need from the tiled kernel being built (lowerTiledMatmul). */
export interface RowLoads {
  e: Emitter;
  /** The left operand, every leading coordinate a row. */
  a: Node;
  M: number;
  K: number;
  /** k values a load (2: a pair), threads of a slice, K of a slice's step. */
  W: number;
  PT: number;
  TK: number;
  /** WGSL of the slice's first k of this step. */
  k0: KExpr;
  /** Staged through registers (`stage0`) a step ahead, on a GPU; else stored straight into the tile. */
  staged: boolean;
  /** Tiles hold f16 (the matrix form). */
  half: boolean;
  /** A staged element's place in the tile: operand, row, k within the step. */
  slot: (o: number, row: KExpr, kk: KExpr) => string;
}

/**
 * The left operand's loads, row i a literal (so its prologue's statistics, a norm's, are hoistable cooperative
 * phases) and the pair t (+ PT, ...) of the slice's step: `values` per thread, `load` writes a step's loads (into
 * stage0, or the tile), `store` moves stage0 into the tile.
 */
export function rowLoads(c: RowLoads): { values: number; load: () => void; store: (pad: string) => void } {
  const { e, a, M, K, W, PT, TK, k0, staged, half, slot } = c;
  const pairs = TK / W;
  const trips = Math.ceil(pairs / PT);
  const u32 = Kx.u32;
  const pair = (trip: number) => (trip ? V.arith('+', Kx.v('t'), u32(trip * PT)) : Kx.v('t'));
  const guard = (trip: number) => ((trip + 1) * PT > pairs ? V.compare('<', pair(trip), u32(pairs)) : undefined);
  // the k of element w of the pair: its first k past the step's, then w
  const kAt = (trip: number, w: number) => V.arith('+', V.arith('*', pair(trip), u32(W)), u32(w));
  const load = () => {
    for (let trip = 0; trip < trips; trip++) {
      const body = e.nested(() => {
        const k = Kx.v(e.fresh('k'));
        const first = V.arith('+', k0, V.arith('*', pair(trip), u32(W)));
        e.line(`let ${e.bound(k, K - W)} = ${V.fn('min', [first, u32(K - W)])};`);
        const g = guard(trip);
        const inside = g ? V.logic('&&', g, V.compare('<', first, u32(K))) : V.compare('<', first, u32(K));
        for (let i = 0; i < M; i++) {
          const rows = delinearize(e.ix, e.ix.lit(i), a.shape.slice(0, -1));
          for (let w = 0; w < W; w++) {
            const v = e.value(a, [...rows, w ? e.ix.add(k, e.ix.lit(w)) : k]);
            const at = staged ? `stage0[${(trip * M + i) * W + w}u]` : slot(0, u32(i), kAt(trip, w));
            const line = `${at} = ${V.select(V.lit(0, 'f32'), v, inside)};`;
            e.line(staged || !guard(trip) ? line : `if (${guard(trip)}) { ${line} }`);
          }
        }
      });
      body.forEach((l) => e.line(l));
    }
  };
  const store = (pad: string) => {
    for (let trip = 0; trip < trips; trip++) {
      const g = guard(trip);
      if (g) e.line(`${pad}if (${g}) {`);
      for (let j = 0; j < M * W; j++) {
        const [i, w] = [Math.floor(j / W), j % W];
        const v = `stage0[${(trip * M + i) * W + w}u]`;
        e.line(`${pad}${g ? '  ' : ''}${slot(0, u32(i), kAt(trip, w))} = ${half ? `f16(${v})` : v};`);
      }
      if (g) e.line(`${pad}}`);
    }
  };
  return { values: trips * M, load, store };
}
