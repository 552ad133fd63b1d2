// fuse: the first choice of which nodes get a buffer of their own ("materialised"); every other node is inlined
// into the kernels that read it. The kernel planner (planKernels.ts) refines it by rules until every kernel's
// template can hold what it inlines.
import type { Graph, Node } from '../ir.ts';
import { OPS } from '../ops.ts';

export interface FuseOptions {
  /** false: every compute node gets its own kernel (views stay free); the baseline that shows what fusion buys. */
  fuse: boolean;
}

/** Largest inlined subtree a node shared by several consumers may have before it gets its own buffer. */
const SHARED_INLINE_LIMIT = 12;

export function consumerCounts(g: Graph): Map<number, number> {
  const counts = new Map<number, number>();
  for (const n of g.nodes) for (const i of new Set(n.inputs)) counts.set(i.id, (counts.get(i.id) ?? 0) + 1);
  return counts;
}

function inlinedCost(n: Node, isMat: (n: Node) => boolean, seen = new Set<number>()): { nodes: number; matmuls: boolean } {
  let nodes = 0;
  let matmuls = false;
  const stack = [n];
  while (stack.length) {
    const cur = stack.pop()!;
    if (seen.has(cur.id)) continue;
    seen.add(cur.id);
    const kind = OPS[cur.op].kind;
    if (kind === 'elementwise' || kind === 'reduce') nodes++; // views and constants cost no arithmetic
    if (cur.op === 'matmul') matmuls = true;
    for (const i of cur.inputs) if (!isMat(i)) stack.push(i);
  }
  return { nodes, matmuls };
}

/** Deepest nesting of reductions in the expression inlined under `n` (materialised nodes end the walk). */
function reductionDepth(n: Node, isMat: (n: Node) => boolean, memo = new Map<number, number>()): number {
  const known = memo.get(n.id);
  if (known !== undefined) return known;
  let below = 0;
  for (const i of n.inputs) if (!isMat(i)) below = Math.max(below, reductionDepth(i, isMat, memo));
  const depth = below + (OPS[n.op].kind === 'reduce' ? 1 : 0);
  memo.set(n.id, depth);
  return depth;
}

/** Walks view ops down to the node they look at (gathers and concats read by position: not looked through). */
function underViews(n: Node): Node {
  while (OPS[n.op].kind === 'view' && n.op !== 'gather' && n.op !== 'concat') n = n.inputs[0]!;
  return n;
}

/** Whether a gather from a weight split into pieces (splitWeights: a concat of the pieces) is inlined under `n`. */
function gathersSplitWeight(n: Node, isMat: (n: Node) => boolean): boolean {
  const isPiece = (p: Node) => p.op === 'weight' && (p as Node<'weight'>).attrs.piece !== undefined;
  const stack = [n];
  const seen = new Set<number>();
  while (stack.length) {
    const cur = stack.pop()!;
    if (seen.has(cur.id)) continue;
    seen.add(cur.id);
    const table = cur.op === 'gather' ? underViews(cur.inputs[0]!) : undefined;
    if (table?.op === 'concat' && table.inputs.every((p) => isPiece(underViews(p)))) return true;
    for (const i of cur.inputs) if (!isMat(i)) stack.push(i);
  }
  return false;
}

export function initialMaterialization(g: Graph, opts: FuseOptions): Set<number> {
  const mat = new Set<number>();
  const isMat = (n: Node) => mat.has(n.id);
  const consumers = consumerCounts(g);
  for (const n of g.outputs.values()) mat.add(n.id);
  for (const n of g.nodes) {
    const kind = OPS[n.op].kind;
    if (n.op === 'const' || n.op === 'iota') continue;
    if (kind === 'source' || kind === 'scatter' || kind === 'scan' || kind === 'kernel') mat.add(n.id);
    else if (!opts.fuse && kind !== 'view') mat.add(n.id);
  }
  // In topological order, so a shared node's cost counts what is already materialised below it.
  for (const n of g.nodes) {
    if (mat.has(n.id) || (consumers.get(n.id) ?? 0) < 2 || n.op === 'const' || n.op === 'iota') continue;
    if (OPS[n.op].kind === 'reduce') {
      mat.add(n.id);
      continue;
    }
    // Recomputing a row statistic (norm, softmax max/sum) in each consumer is cheap; recomputing a matmul is not.
    const cost = inlinedCost(n, isMat);
    if (!cost.matmuls && cost.nodes <= SHARED_INLINE_LIMIT) continue;
    // A shared view (q's reshape, read twice by RoPE; in_proj's slices) costs nothing itself: the node under it gets
    // the buffer, which the consumers read through the view. Materialising the view instead made a kernel that only
    // copied the matmul's buffer into another (two a layer in llama's prefill).
    const under = underViews(n);
    mat.add(under !== n && !mat.has(under.id) && OPS[under.op].kind !== 'source' ? under.id : n.id);
  }
  // A matmul reads each operand element once per output along the other free axis, so whatever is inlined in an
  // operand is recomputed that many times. Affordable for elementwise work and a row statistic (a norm), not for
  // an inlined matmul or a reduction nested in another (an SSM scan behind out_proj ran 64 times over), nor for
  // a gather from a split weight, which selects among every piece at each read (Gemma 3n's 9-piece embedding
  // behind its per-layer projection made a 47 KB kernel that lavapipe took 18 s to compile).
  if (opts.fuse) {
    for (const n of g.nodes) {
      if (n.op !== 'matmul') continue;
      for (const operand of n.inputs) {
        const c = underViews(operand);
        if (mat.has(c.id) || OPS[c.op].kind === 'source' || c.op === 'iota') continue;
        if (inlinedCost(c, isMat).matmuls || reductionDepth(c, isMat) >= 2 || gathersSplitWeight(c, isMat)) mat.add(c.id);
      }
    }
  }
  // A concat reads every part at each output element and selects one, so a matmul inlined in a part would run
  // once per part (the products of a split weight, see splitWeights): each such part gets its own buffer.
  for (const n of g.nodes) {
    if (n.op !== 'concat') continue;
    for (const part of n.inputs) {
      const c = underViews(part);
      if (c.op === 'matmul') mat.add(c.id);
    }
  }
  return mat;
}
