// decomposeKernels: a hand-fused kernel op (ssd_step, selective_step, selective_scan) whose inputs read more buffers than the adapter binds in one
// kernel is replaced by its composition (the op table's `decompose`, also its test oracle), which the planner
// then splits like any other expression. A portable target of 8 storage buffers gets the unfused Mamba-1/2 steps
// rather than an error; an adapter with 16 (H200, lavapipe) keeps the kernel.
import type { DType, Graph, Node, OpName } from '../ir.ts';
import { type Composer, OPS } from '../ops.ts';

/**
 * Distinct buffers under a node's inputs, plus its output: sources, and results of reductions, scans, scatters
 * and kernels, which the planner gives buffers (elementwise work and views are inlined).
 */
function bindingsOf(n: Node): number {
  const seen = new Set<number>();
  const buffers = new Set<number>();
  const stack = [...n.inputs];
  while (stack.length) {
    const x = stack.pop()!;
    if (seen.has(x.id)) continue;
    seen.add(x.id);
    const kind = OPS[x.op].kind;
    if (x.op === 'const') continue;
    if (kind === 'source' || kind === 'reduce' || kind === 'scan' || kind === 'scatter' || kind === 'kernel') buffers.add(x.id);
    else stack.push(...x.inputs);
  }
  return buffers.size + 1;
}

export function decomposeKernels(g: Graph, maxStorageBuffers: number): Graph {
  const over = (n: Node) => (n.op === 'ssd_step' || n.op === 'selective_step' || n.op === 'selective_scan') && bindingsOf(n) > maxStorageBuffers;
  if (!g.nodes.some(over)) return g;
  const nodes: Node[] = [];
  const make = (op: OpName, inputs: Node[], attrs: object, shape: readonly number[], dtype: DType): Node => {
    const n = { id: nodes.length, op, inputs, attrs, shape: [...shape], dtype } as Node;
    nodes.push(n);
    return n;
  };
  const composer: Composer = {
    emit: (op, inputs, attrs) => {
      const { shape, dtype } = OPS[op].infer(inputs, attrs as never);
      return make(op, inputs, attrs, shape, dtype);
    },
    constant: (value, dtype = 'f32') => make('const', [], { value }, [], dtype),
    iota: (shape, axis) => make('iota', [], { axis }, shape, 'i32'),
  };
  const map = new Map<number, Node>();
  for (const n of g.nodes) {
    const inputs = n.inputs.map((i) => map.get(i.id)!);
    const def = OPS[n.op];
    map.set(n.id, over(n) && def.kind === 'kernel' && 'decompose' in def ? def.decompose(composer, inputs, n.attrs as never) : make(n.op, inputs, n.attrs, n.shape, n.dtype));
  }
  const remap = <T extends Node>(m: Map<string, T>) => new Map([...m].map(([k, n]) => [k, map.get(n.id)! as T]));
  return { nodes, outputs: remap(g.outputs), stateWrites: remap(g.stateWrites), inputs: remap(g.inputs), states: remap(g.states), weights: remap(g.weights) };
}
