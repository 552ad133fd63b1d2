// simplify: dead-code elimination, view folding, constant folding and common-subexpression elimination.
// Rebuilds the graph with fresh ids in topological order.
import { type Graph, type Node, type OpAttrs, type OpName, numel } from '../ir.ts';
import { OPS } from '../ops.ts';

function liveNodes(g: Graph): Set<number> {
  const live = new Set<number>();
  const stack: Node[] = [...g.outputs.values(), ...g.stateWrites.values()];
  while (stack.length) {
    const n = stack.pop()!;
    if (live.has(n.id)) continue;
    live.add(n.id);
    stack.push(...n.inputs);
  }
  return live;
}

/** The scalar a node is, if it is a constant seen through reshapes and broadcasts. */
function constValue(n: Node): number | undefined {
  let cur = n;
  while (cur.op === 'reshape' || cur.op === 'broadcast') cur = cur.inputs[0]!;
  return cur.op === 'const' ? (cur as Node<'const'>).attrs.value : undefined;
}

class Builder {
  readonly nodes: Node[] = [];
  private readonly cse = new Map<string, Node>();

  make<K extends OpName>(op: K, inputs: Node[], attrs: OpAttrs[K], shape: readonly number[], dtype: Node['dtype']): Node {
    const key = `${op}|${inputs.map((i) => i.id).join(',')}|${JSON.stringify(attrs)}|${shape.join(',')}|${dtype}`;
    // sources and scatters keep their identity; everything else is shared when equal
    const shareable = op !== 'scatter' && op !== 'input' && op !== 'weight' && op !== 'state';
    if (shareable) {
      const hit = this.cse.get(key);
      if (hit) return hit;
    }
    const n: Node = { id: this.nodes.length, op, inputs, attrs, shape: [...shape], dtype };
    this.nodes.push(n);
    if (shareable) this.cse.set(key, n);
    return n;
  }
}

function fold(b: Builder, n: Node, inputs: Node[]): Node {
  const x = inputs[0];
  const same = (s: readonly number[]) => s.length === n.shape.length && s.every((d, i) => d === n.shape[i]);
  switch (n.op) {
    case 'reshape':
      if (same(x!.shape)) return x!;
      if (x!.op === 'reshape') return b.make('reshape', [x!.inputs[0]!], { shape: [...n.shape] }, n.shape, n.dtype);
      break;
    case 'permute': {
      const perm = (n as Node<'permute'>).attrs.perm;
      if (perm.every((p, i) => p === i)) return x!;
      if (x!.op === 'permute') {
        const inner = (x as Node<'permute'>).attrs.perm;
        const composed = perm.map((p) => inner[p]!);
        if (composed.every((p, i) => p === i)) return x!.inputs[0]!;
        return b.make('permute', [x!.inputs[0]!], { perm: composed }, n.shape, n.dtype);
      }
      break;
    }
    case 'broadcast':
      if (same(x!.shape)) return x!;
      if (x!.op === 'broadcast') return b.make('broadcast', [x!.inputs[0]!], { shape: [...n.shape] }, n.shape, n.dtype);
      break;
    case 'slice': {
      const a = (n as Node<'slice'>).attrs;
      if (same(x!.shape) && a.starts.every((s) => s === 0) && a.steps.every((s) => s === 1)) return x!;
      break;
    }
  }
  const def = OPS[n.op];
  if (def.kind === 'elementwise' && n.op !== 'iota' && inputs.length > 0) {
    const consts = inputs.map(constValue);
    if (consts.every((c) => c !== undefined)) {
      const v = def.cpu(consts as number[], n.attrs as never, inputs);
      const c = b.make('const', [], { value: n.dtype === 'f32' ? Math.fround(v) : v }, [], n.dtype);
      if (n.shape.length === 0) return c;
      const r = b.make('reshape', [c], { shape: n.shape.map(() => 1) }, n.shape.map(() => 1), n.dtype);
      return numel(n.shape) === 1 ? r : b.make('broadcast', [r], { shape: [...n.shape] }, n.shape, n.dtype);
    }
    // algebraic identities with a constant operand (float only: exact for integers too, but keep it narrow)
    const [c0, c1] = consts;
    if ((n.op === 'add' && c1 === 0) || (n.op === 'sub' && c1 === 0) || (n.op === 'mul' && c1 === 1) || (n.op === 'div' && c1 === 1)) return inputs[0]!;
    if ((n.op === 'add' && c0 === 0) || (n.op === 'mul' && c0 === 1)) return inputs[1]!;
  }
  return b.make(n.op, inputs, n.attrs, n.shape, n.dtype);
}

export function simplify(g: Graph): Graph {
  const live = liveNodes(g);
  const b = new Builder();
  const map = new Map<number, Node>();
  for (const n of g.nodes) {
    if (!live.has(n.id)) continue;
    map.set(n.id, fold(b, n, n.inputs.map((i) => map.get(i.id)!)));
  }
  const remap = <T extends Node>(m: Map<string, T>) => new Map([...m].filter(([, n]) => live.has(n.id)).map(([k, n]) => [k, map.get(n.id)! as T]));
  // Folding can leave nodes that are no longer reached; a second sweep keeps the graph minimal.
  const out: Graph = {
    nodes: b.nodes,
    outputs: remap(g.outputs),
    stateWrites: remap(g.stateWrites),
    inputs: remap(g.inputs),
    states: remap(g.states),
    weights: remap(g.weights),
  };
  const stillLive = liveNodes(out);
  if (stillLive.size === out.nodes.length) return out;
  return simplify({ ...out, nodes: out.nodes.filter((n) => stillLive.has(n.id)) });
}
