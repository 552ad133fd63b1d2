// splitWeights: a weight larger than the adapter binds in one buffer (maxStorageBufferBindingSize, 128 MiB on
// lavapipe and browsers) becomes row ranges, each a weight buffer of its own (an embedding's or LM head's rows, a
// projection's output-column blocks). A matmul that reads the weight is split with it, so each piece is read by
// one kernel: rows that are output columns give a concat of matmuls, rows that are the reduction give a sum.
// Any other reader (a gather) sees the concat of the pieces, which the emitter reads by position.
import { type Graph, type Node, type OpAttrs, type OpName, type StorageDType, type WeightPiece, numel } from '../ir.ts';
import { isQuantized, quantRowBytes } from '../quantized.ts';
import { OPS } from '../ops.ts';
import { nodeBytes } from './planMemory.ts';

export class WeightSplitError extends Error {
  override name = 'WeightSplitError';
}

export function pieceName(piece: WeightPiece): string {
  return `${piece.of}[rows ${piece.rowStart}:${piece.rowStart + piece.rows}]`;
}

/** Row ranges of equal size (the last shorter) that each fit `limit` bytes; 16-bit rows stay whole u32 words. */
export function planPieces(name: string, shape: readonly number[], storage: StorageDType, limit: number): WeightPiece[] {
  const rows = shape[0]!;
  const rowElems = numel(shape.slice(1));
  // quantized rows are whole blocks (compiler/quantized.ts), so a piece of whole rows is whole words too; its buffer
  // is padded to a whole u32x4 (at most 12 bytes more)
  const rowBytes = isQuantized(storage) ? quantRowBytes(storage, rowElems) : rowElems * (storage === 'f32' ? 4 : 2);
  if (isQuantized(storage)) limit -= 12;
  // a 16-bit piece must start on a word: with an odd row length, an even number of rows per piece
  const step = (storage === 'f16' || storage === 'bf16') && rowElems % 2 === 1 ? 2 : 1;
  const fit = Math.floor(limit / rowBytes / step) * step;
  if (fit < 1)
    throw new WeightSplitError(`weight '${name}' ${JSON.stringify(shape)}: one row needs ${rowBytes * step} bytes, more than the ${limit} the adapter binds per buffer`);
  const count = Math.ceil(rows / fit);
  const per = Math.ceil(rows / count / step) * step;
  const pieces: WeightPiece[] = [];
  for (let start = 0; start < rows; start += per) pieces.push({ of: name, rowStart: start, rows: Math.min(per, rows - start), totalRows: rows });
  return pieces;
}

/** Where the weight's row axis is in a view of it, and how to rebuild that view over a piece. */
interface RowView {
  axis: number;
  rebuild(piece: Node, make: Make): Node;
}

type Make = <K extends OpName>(op: K, inputs: Node[], attrs: OpAttrs[K], shape: readonly number[], dtype: Node['dtype']) => Node;

const withAxis = (shape: readonly number[], axis: number, size: number) => shape.map((d, i) => (i === axis ? size : d));

/**
 * Follows a chain of permutes, size-1 reshapes and broadcasts from `n` down to a split weight; returns the row
 * axis in `n` and a function that applies the same chain to a piece. Undefined for any other view.
 */
function rowView(n: Node, split: Map<number, WeightPiece[]>): RowView | undefined {
  if (split.has(n.id)) return { axis: 0, rebuild: (piece) => piece };
  if (n.op !== 'permute' && n.op !== 'broadcast' && n.op !== 'reshape') return undefined;
  const below = rowView(n.inputs[0]!, split);
  if (!below) return undefined;
  const rebuildAs = (axis: number, attrsFor: (rows: number) => object) => ({
    axis,
    rebuild(piece: Node, make: Make) {
      const inner = below.rebuild(piece, make);
      const rows = inner.shape[below.axis]!;
      return make(n.op, [inner], attrsFor(rows) as never, withAxis(n.shape, axis, rows), n.dtype);
    },
  });
  switch (n.op) {
    case 'permute': {
      const perm = (n as Node<'permute'>).attrs.perm;
      return rebuildAs(perm.indexOf(below.axis), () => ({ perm: [...perm] }));
    }
    case 'broadcast': {
      const shape = (n as Node<'broadcast'>).attrs.shape;
      return rebuildAs(below.axis, (rows) => ({ shape: withAxis(shape, below.axis, rows) }));
    }
    case 'reshape': {
      // only reshapes that add or drop axes of size 1 keep the row axis whole
      const from = n.inputs[0]!.shape;
      const keep = (s: readonly number[]) => s.map((d, i) => [d, i] as const).filter(([d]) => d !== 1);
      const [a, b] = [keep(from), keep(n.shape)];
      if (a.length !== b.length || a.some(([d], i) => d !== b[i]![0])) return undefined;
      const at = a.findIndex(([, i]) => i === below.axis);
      if (at < 0) return undefined;
      const axis = b[at]![1];
      return rebuildAs(axis, (rows) => ({ shape: withAxis(n.shape, axis, rows) }));
    }
    default:
      return undefined;
  }
}

/**
 * Replaces every weight over `limit` bytes by its pieces. Returns the graph unchanged when none is; throws a
 * WeightSplitError when a single row is over the limit.
 */
export function splitWeights(g: Graph, limit: number): Graph {
  const big = [...g.weights.values()].filter((w) => nodeBytes(w) > limit);
  if (big.length === 0) return g;
  const nodes: Node[] = [];
  const make: Make = (op, inputs, attrs, shape, dtype) => {
    const n: Node = { id: nodes.length, op, inputs, attrs, shape: [...shape], dtype };
    nodes.push(n);
    return n;
  };
  const map = new Map<number, Node>();
  /** New id of a split weight -> its piece nodes. */
  const split = new Map<number, WeightPiece[]>();
  const pieceNodes = new Map<number, Node[]>();
  const weights = new Map(g.weights);
  // views of a split weight are rebuilt per piece where a matmul reads them; elsewhere the concat stands in
  const concatOf = new Map<number, Node>();
  const asConcat = (n: Node): Node => {
    let c = concatOf.get(n.id);
    if (!c) {
      const view = rowView(n, split)!;
      const parts = pieceNodes.get(splitRoot(n)!.id)!.map((p) => view.rebuild(p, make));
      c = make('concat', parts, { axis: view.axis }, n.shape, n.dtype);
      concatOf.set(n.id, c);
    }
    return c;
  };
  const splitRoot = (n: Node): Node | undefined => (split.has(n.id) ? n : n.inputs[0] && OPS[n.op].kind === 'view' ? splitRoot(n.inputs[0]) : undefined);
  const isSplitView = (n: Node) => rowView(n, split) !== undefined;

  for (const n of g.nodes) {
    if (n.op === 'weight' && big.includes(n as Node<'weight'>)) {
      const { name, storage } = (n as Node<'weight'>).attrs;
      const pieces = planPieces(name, n.shape, storage, limit);
      const parts = pieces.map((piece) => {
        const attrs = { name: pieceName(piece), storage, piece };
        const p = make('weight', [], attrs, withAxis(n.shape, 0, piece.rows), n.dtype) as Node<'weight'>;
        weights.set(attrs.name, p);
        return p;
      });
      weights.delete(name);
      // the weight itself maps to a placeholder id that only views and matmuls look through
      const stand: Node = { ...n, id: -1 - nodes.length, inputs: [] };
      split.set(stand.id, pieces);
      pieceNodes.set(stand.id, parts);
      map.set(n.id, stand);
      continue;
    }
    const inputs = n.inputs.map((i) => map.get(i.id)!);
    if (OPS[n.op].kind === 'view' && n.op !== 'gather' && n.op !== 'concat' && inputs.some(isSplitView)) {
      // keep it symbolic: rebuilt per piece by a matmul, or concatenated when something else reads it
      const view: Node = { ...n, id: -1 - nodes.length - map.size, inputs };
      if (rowView(view, split)) {
        map.set(n.id, view);
        continue;
      }
    }
    const resolved = inputs.map((i) => (isSplitView(i) ? asConcat(i) : i));
    if (n.op === 'matmul' && inputs.some(isSplitView)) {
      map.set(n.id, splitMatmul(n, inputs, make, split, pieceNodes, splitRoot, asConcat));
      continue;
    }
    map.set(n.id, make(n.op, resolved, n.attrs, n.shape, n.dtype));
  }
  const remap = <T extends Node>(m: Map<string, T>) => new Map([...m].map(([k, n]) => [k, (isSplitView(map.get(n.id)!) ? asConcat(map.get(n.id)!) : map.get(n.id)!) as T]));
  return { nodes, outputs: remap(g.outputs), stateWrites: remap(g.stateWrites), inputs: remap(g.inputs), states: remap(g.states), weights };
}

/** a [..., M, K] x b [..., K, N] where b views a split weight along N (concat of products) or K (sum of products). */
function splitMatmul(
  n: Node,
  [a, b]: Node[],
  make: Make,
  split: Map<number, WeightPiece[]>,
  pieceNodes: Map<number, Node[]>,
  splitRoot: (n: Node) => Node | undefined,
  asConcat: (n: Node) => Node,
): Node {
  const view = rowView(b!, split);
  const rank = n.shape.length;
  if (!view || rowView(a!, split) || view.axis < rank - 2) return make('matmul', [asConcat(a!), asConcat(b!)], {}, n.shape, n.dtype);
  const parts = pieceNodes.get(splitRoot(b!)!.id)!;
  const pieces = split.get(splitRoot(b!)!.id)!;
  if (view.axis === rank - 1) {
    const products = parts.map((p) => {
      const rhs = view.rebuild(p, make);
      return make('matmul', [a!, rhs], {}, withAxis(n.shape, rank - 1, rhs.shape[rank - 1]!), n.dtype);
    });
    return make('concat', products, { axis: rank - 1 }, n.shape, n.dtype);
  }
  // rows are the reduction: each piece multiplies its slice of a's last axis
  let sum: Node | undefined;
  pieces.forEach((piece, i) => {
    const rhs = view.rebuild(parts[i]!, make);
    const starts = a!.shape.map((_, d) => (d === rank - 1 ? piece.rowStart : 0));
    const ends = a!.shape.map((s, d) => (d === rank - 1 ? piece.rowStart + piece.rows : s));
    const lhs = make('slice', [a!], { starts, ends, steps: a!.shape.map(() => 1) }, withAxis(a!.shape, rank - 1, piece.rows), a!.dtype);
    const product = make('matmul', [lhs, rhs], {}, n.shape, n.dtype);
    sum = sum ? make('add', [sum, product], {}, n.shape, n.dtype) : product;
  });
  return sum!;
}
