// Row statistics of a prefill tile's left operand: the long reductions its prologue reads once per row (an RMSNorm's
// mean of squares). The tiled kernel computes them for its tile's rows before the K loop (cooperative phases, as
// the matvec does for its one row) instead of reading them from a kernel of their own.
import { type Node, numel } from '../ir.ts';
import { OPS } from '../ops.ts';
import { delinearize, numberIndex } from '../indexAlgebra.ts';
import { SEQ_MAX, isReduction, reduceLength } from './emitter.ts';

/** Shapes equal but for leading 1s. */
function sameRows(a: readonly number[], b: readonly number[]): boolean {
  const strip = (s: readonly number[]) => s.slice(s.findIndex((d) => d !== 1) < 0 ? s.length : s.findIndex((d) => d !== 1)).join();
  return strip(a) === strip(b);
}

/** A statistic's index for the operand's leading index `row`: aligned at the end, its extra leading dims (of 1) at `zero`. */
export function statIndex<T>(stat: Node, row: readonly T[], zero: T): T[] {
  const rank = stat.shape.length;
  return rank >= row.length ? [...Array.from({ length: rank - row.length }, () => zero), ...row] : row.slice(row.length - rank);
}

/**
 * The long reductions the left operand of tiled matmuls `mms` reads, when each is read at the operand's row only:
 * its shape is the operand's less the last dim (leading 1s aside), and a[..., m, k] reads it at [..., m] whatever k (checked at the
 * first, second and last rows and k of the first and last batch, by walking the index maps with numbers). Empty
 * where a long reduction under the operand is read otherwise, or is also read by the weights or the epilogue;
 * those, and any under a gather or a short reduction, keep a buffer of their own.
 */
export function rowStatistics(root: Node, mms: readonly Node[], isMat: (n: Node) => boolean): Node[] {
  const a = mms[0]!.inputs[0]!;
  const lead = a.shape.slice(0, -1);
  const [M, K] = [a.shape[a.shape.length - 2]!, a.shape[a.shape.length - 1]!];
  const found = new Map<number, Node>();
  let ok = true;
  // a's value at [...row, k], down to buffers: each long reduction must be read at `row`
  const probe = (n: Node, idx: number[], row: number[]): void => {
    if (!ok || isMat(n) || n.op === 'const' || n.op === 'iota') return;
    if (isReduction(n) && reduceLength(n) > SEQ_MAX) {
      if (!sameRows(n.shape, lead) || idx.join() !== statIndex(n, row, 0).join()) ok = false;
      else found.set(n.id, n);
      return;
    }
    const def = OPS[n.op];
    if (def.kind === 'elementwise') {
      if (!def.indexArgs) n.inputs.forEach((i) => probe(i, idx, row));
      return;
    }
    // not walked below a short reduction, a gather or a kernel op: a long reduction there keeps its buffer (the
    // planner's inlining rule finds it)
    if (def.kind !== 'view' || def.indirect) return;
    for (const c of def.index(numberIndex, idx, n.attrs as never, n.inputs, n)) {
      const shape = n.inputs[c.input]!.shape;
      probe(n.inputs[c.input]!, c.index.map((v, d) => Math.min(Math.max(v, 0), shape[d]! - 1)), row);
    }
  };
  const batches = numel(lead) / M;
  for (const b of new Set([0, batches - 1]))
    for (const m of new Set([0, 1 % M, M - 1]))
      for (const k of new Set([0, 1 % K, K - 1])) {
        const row = delinearize(numberIndex, b * M + m, lead);
        probe(a, [...row, k], row);
      }
  if (!ok || found.size === 0) return [];
  // what the weights and the epilogue read (the root less the matmuls' own subtrees) must not hold them
  const others = new Set<number>();
  const stop = new Set(mms.map((m) => m.id));
  // (the root itself is the kernel's output buffer: its inputs are walked)
  const stack = [...mms.map((m) => m.inputs[1]!), ...(stop.has(root.id) ? [] : root.inputs)];
  while (stack.length) {
    const n = stack.pop()!;
    if (others.has(n.id) || stop.has(n.id) || isMat(n)) continue;
    others.add(n.id);
    stack.push(...n.inputs);
  }
  const stats = [...found.values()];
  return stats.some((n) => others.has(n.id)) ? [] : stats;
}

/** Shared floats the statistics' merged reduction rounds take at most (rounds of fewer rows where a row needs more). */
export const STATS_FLOATS = 1024;

/** Bytes of workgroup memory `count` statistics reserve beside the tiles: the rounds' array, a lone phase's, and up to 64 rows' values each. */
export const statsReserve = (count: number, wg = 256): number => 4 * (STATS_FLOATS + wg + 64 * count);
