// planProjections: which decode attention kernels compute their own q, k and v (DeviceLimits.attentionProjection).
// At decode a query head's workgroup needs only its head's q row and its KV head's k and v rows of the step's
// token, so the q/k/v matvec's dispatch can go: the attention kernel projects those rows from the shared left
// operand (the normed residual) into workgroup memory and writes the KV cache rows it reads itself (the scatters
// it absorbs). What each workgroup needs is found here by walking the index maps with numbers, once per
// workgroup, and kept as a table (the kernel's constant array); the fusion is declined where the needs are not
// one x row and windows of equal width per workgroup.
import { type Node, numel } from '../ir.ts';
import { OPS } from '../ops.ts';
import { delinearize, linearize, numberIndex } from '../indexAlgebra.ts';
import { transposedWeight } from '../lower/matvecKernel.ts';
import { SEQ_MAX, reduceLength } from '../lower/emitter.ts';

/** A projected matmul: `left @ weight.T`, of which each workgroup computes `width` columns from its table entry on. */
export interface ProjectedMatmul {
  node: Node;
  /** The [N, K] weight. */
  weight: Node;
  width: number;
}

/** A cache write the kernel makes: `elements` consecutive values of the scatter from the workgroup's table entry on. */
export interface AbsorbedScatter {
  node: Node;
  elements: number;
}

export interface AttentionProjection {
  /** The matmuls' shared left operand ([..., rows, K]: the normed residual). */
  left: Node;
  /** q's matmul, then the k and v caches' value matmuls. */
  matmuls: ProjectedMatmul[];
  scatters: AbsorbedScatter[];
  /**
   * Per workgroup: the left operand's row (linear over its leading dims), each matmul's first column, each
   * scatter's first element.
   */
  table: number[];
  /** Graph nodes the kernel now computes (the matmuls' epilogues, the scatters' values and indices). */
  nodes: number[];
  /** The matmuls and the reshapes of them that fuse had given buffers: they get none. */
  unbuffered: number[];
}

/** Visits what `start` at `idx` reads, down to `stop` nodes (given their index) and other buffers; false where an op has no static index map. */
function walk(start: Node, idx: number[], stop: (n: Node) => boolean, isMat: (n: Node) => boolean, found: (n: Node, idx: number[]) => void, seen: Map<number, Node>, reaches: (n: Node) => boolean): boolean {
  const visit = (n: Node, at: number[]): boolean => {
    if (stop(n)) return found(n, at), true;
    if (n.op === 'const' || isMat(n) || !reaches(n)) return true;
    seen.set(n.id, n);
    const def = OPS[n.op];
    if (def.kind === 'elementwise') return def.indexArgs ? true : n.inputs.every((i) => visit(i, at));
    if (def.kind !== 'view') return false;
    const cands = def.index(numberIndex, at, n.attrs as never, n.inputs, n);
    if (def.indirect) {
      // a gathered row is known only on the device: the cache's columns are what matters (row 0 stands for any)
      const [ids, rest] = cands as [(typeof cands)[0], (typeof cands)[0]];
      return visit(n.inputs[ids.input]!, ids.index) && visit(n.inputs[rest.input]!, [0, ...rest.index]);
    }
    // every part of a concat is evaluated at a clamped index (the emitter's select), so each is read
    return cands.every((c) => {
      const shape = n.inputs[c.input]!.shape;
      return visit(n.inputs[c.input]!, c.index.map((v, d) => (v < 0 || v >= shape[d]! ? shape[d]! - 1 : v)));
    });
  };
  return visit(start, idx);
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** The one node `stop` selects that `start` reads over `indices`, with the indices it is read at; undefined otherwise. */
function readsOne(start: Node, indices: number[][], stop: (n: Node) => boolean, isMat: (n: Node) => boolean, seen: Map<number, Node>, reaches: (n: Node) => boolean): { node: Node; at: number[][] } | undefined {
  let node: Node | undefined;
  const at: number[][] = [];
  let ok = true;
  for (const idx of indices) {
    ok &&= walk(start, idx, stop, isMat, (n, i) => {
      if (node && node !== n) ok = false;
      node = n;
      at.push(i);
    }, seen, reaches);
  }
  return ok && node ? { node, at } : undefined;
}

/** [first, width] of a set of numbers when they all lie in one window; width is its extent. */
const windowOf = (xs: number[]) => [Math.min(...xs), Math.max(...xs) - Math.min(...xs) + 1] as const;

/**
 * The projection of a decode attention node, or undefined where the graph is not the pattern: q read from one
 * long matmul over a plain weight, kT and v read from caches whose step writes (scatters) read one such matmul
 * each, all three sharing their left operand, one token per sequence, and no other reader of the matmuls.
 */
export function planProjection(attn: Node, isMat: (n: Node) => boolean, consumers: Map<number, Node[]>): AttentionProjection | undefined {
  const [q, kT, v] = attn.inputs as [Node, Node, Node];
  const r = attn.shape.length;
  const D = q.shape[r - 1]!;
  const rows = numel(attn.shape) / attn.shape[r - 1]!;
  const isLongMatmul = (n: Node) => n.op === 'matmul' && reduceLength(n) > SEQ_MAX;
  // fuse gives a matvec's reshaped result the buffer (the kernel's root): such a reshape is looked through
  const viewOfMatmul = (n: Node): boolean => n.op === 'reshape' && (isLongMatmul(n.inputs[0]!) || viewOfMatmul(n.inputs[0]!));
  const outer = isMat;
  isMat = (n) => outer(n) && !viewOfMatmul(n);
  const seen = new Map<number, Node>();
  // whether a node's inlined subtree holds a matmul or a cache write at all: the position arithmetic under RoPE
  // and the masks hold neither, and are not walked element by element
  const memo = new Map<number, boolean>();
  const reaches = (n: Node): boolean => {
    let hit = memo.get(n.id);
    if (hit === undefined) {
      hit = isLongMatmul(n) || n.op === 'scatter' || (!isMat(n) && n.inputs.some(reaches));
      memo.set(n.id, hit);
    }
    return hit;
  };
  const perGroup = range(rows).map((gi) => {
    const outer = delinearize(numberIndex, gi, attn.shape.slice(0, -1));
    const batch = outer.slice(0, -1);
    const qm = readsOne(q, range(D).map((d) => [...outer, d]), isLongMatmul, isMat, seen, reaches);
    // the caches as the kernel reads them (key 0 stands for every key: a key's columns do not depend on it)
    const kc = readsOne(kT, range(D).map((d) => [...batch, d, 0]), (n) => n.op === 'scatter', isMat, seen, reaches);
    const vc = readsOne(v, range(v.shape[r - 1]!).map((d) => [...batch, 0, d]), (n) => n.op === 'scatter', isMat, seen, reaches);
    return { qm, caches: [kc, vc] };
  });
  const first = perGroup[0]!;
  if (!first.qm || first.caches.some((c) => !c)) return undefined;
  const qMatmul = first.qm.node;
  const scatters = first.caches.map((c) => c!.node);
  if (scatters[0] === scatters[1]) return undefined;
  if (perGroup.some((p) => p.qm?.node !== qMatmul || p.caches.some((c, i) => c?.node !== scatters[i]))) return undefined;
  // each scatter's values, element by element: the matmul rows and columns they read
  const cacheMatmuls: (Node | undefined)[] = [];
  const elementReads = scatters.map((s, si) => {
    const [, indices, values] = s.inputs as [Node, Node, Node];
    const reads: { row: number; col: number }[][] = [];
    let ok2 = true;
    for (let t = 0; t < numel(values.shape); t++) {
      const at: { row: number; col: number }[] = [];
      const vIdx = delinearize(numberIndex, t, values.shape);
      const ok = walk(values, vIdx, isLongMatmul, isMat, (m, i) => {
        if ((cacheMatmuls[si] ??= m) !== m) ok2 = false;
        at.push({ row: linearize(numberIndex, i.slice(0, -1), m.shape.slice(0, -1)), col: i[i.length - 1]! });
      }, seen, reaches) && walk(indices, vIdx.slice(0, indices.shape.length), () => false, isMat, () => {}, seen, reaches);
      if (!ok || !ok2) return undefined;
      reads.push(at);
    }
    return reads;
  });
  const [kMatmul, vMatmul] = cacheMatmuls;
  if (elementReads.some((e) => !e) || !kMatmul || !vMatmul || new Set([qMatmul, kMatmul, vMatmul]).size !== 3) return undefined;
  const matmuls = [qMatmul, kMatmul, vMatmul];
  const left = qMatmul.inputs[0]!;
  const K = reduceLength(qMatmul);
  if (matmuls.some((m) => m.inputs[0] !== left || reduceLength(m) !== K || m.shape[m.shape.length - 2] !== 1) || K % 2 !== 0) return undefined;
  const weights = matmuls.map((m) => transposedWeight(m.inputs[1]!, isMat));
  if (weights.some((w) => !w)) return undefined;
  // nothing else reads the matmuls: their values exist only in the kernel's workgroup memory
  if (matmuls.some((m) => (consumers.get(m.id) ?? []).some((c) => !seen.has(c.id) && !scatters.includes(c)))) return undefined;
  // each scatter element's cache column, and its x row (-1 where its values read several)
  const elements = scatters.map((scatter, s) => {
    const target = scatter.inputs[0]!;
    const values = scatter.inputs[2]!;
    const k = scatter.inputs[1]!.shape.length;
    return elementReads[s]!.map((reads, t) => {
      const vIdx = delinearize(numberIndex, t, values.shape);
      const rows = new Set(reads.map((x) => x.row));
      return { col: linearize(numberIndex, vIdx.slice(k), target.shape.slice(1)), row: rows.size === 1 ? [...rows][0]! : -1 };
    });
  });
  // per workgroup: its x row, the columns of each matmul it needs, the scatter elements writing what it reads
  const table: number[][] = [];
  for (const p of perGroup) {
    const rowsRead = new Set(p.qm!.at.map((i) => linearize(numberIndex, i.slice(0, -1), qMatmul.shape.slice(0, -1))));
    if (rowsRead.size !== 1) return undefined;
    const row = [...rowsRead][0]!;
    const cols: number[][] = [p.qm!.at.map((i) => i[i.length - 1]!), [], []];
    const starts: number[] = [];
    for (const [s, scatter] of scatters.entries()) {
      const target = scatter.inputs[0]!;
      const readCols = new Set(p.caches[s]!.at.map((i) => linearize(numberIndex, i.slice(1), target.shape.slice(1))));
      const mine: number[] = [];
      elements[s]!.forEach((el, t) => {
        if (el.row === row && readCols.has(el.col)) mine.push(t);
      });
      if (mine.length === 0 || mine[mine.length - 1]! - mine[0]! + 1 !== mine.length) return undefined;
      starts.push(mine[0]!, mine.length);
      for (const t of mine) for (const x of elementReads[s]![t]!) cols[1 + s]!.push(x.col);
    }
    if (cols.some((c) => c.length === 0)) return undefined;
    // [row, q first, q width, k first, k width, v first, v width, k scatter first, count, v scatter first, count]
    table.push([row, ...cols.flatMap((c) => windowOf(c)), ...starts]);
  }
  // one width per matmul and one element count per scatter for every workgroup; windows slid to fit
  const widths = matmuls.map((_, m) => Math.max(...table.map((t) => t[2 + 2 * m]!)));
  const counts = scatters.map((_, s) => table[0]![8 + 2 * s]!);
  if (table.some((t) => scatters.some((_, s) => t[8 + 2 * s] !== counts[s]))) return undefined;
  const flat = table.flatMap((t) => [
    t[0]!,
    ...matmuls.map((m, j) => Math.min(t[1 + 2 * j]!, m.shape[m.shape.length - 1]! - widths[j]!)),
    ...scatters.map((_, s) => t[7 + 2 * s]!),
  ]);
  return {
    left,
    matmuls: matmuls.map((node, j) => ({ node, weight: weights[j]!, width: widths[j]! })),
    scatters: scatters.map((node, s) => ({ node, elements: counts[s]! })),
    table: flat,
    nodes: [...seen.keys()],
    unbuffered: [...matmuls.map((m) => m.id), ...[...seen.values()].filter(viewOfMatmul).map((n) => n.id)],
  };
}
