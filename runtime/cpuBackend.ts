// The CPU reference backend: evaluates a graph node by node, each by a lookup of its op's reference in the op table.
// It defines what every program means; GPU results are tested against it.
import { type Graph, type Node, numel } from '../compiler/ir.ts';
import { type OpDef, OPS } from '../compiler/ops.ts';
import { referenceOf } from '../compiler/references.ts';
import { type NDArray, allocArray } from './ndarray.ts';

export interface CpuRunArgs {
  inputs?: Record<string, NDArray>;
  weights?: Record<string, NDArray>;
  /** Mutated: every state written by the program is replaced by its new value. */
  states?: Record<string, NDArray>;
}

function need<T>(map: Record<string, T> | undefined, name: string, what: string): T {
  const v = map?.[name];
  if (!v) throw new Error(`cpu backend: missing ${what} '${name}'`);
  return v;
}

/** The array the run was given for an input, weight or state, checked against the node's shape. */
function source(n: Node, ctx: CpuRunArgs): NDArray {
  const what = n.op as 'input' | 'weight' | 'state';
  const name = (n as Node<'input'>).attrs.name;
  const v = need(what === 'input' ? ctx.inputs : what === 'weight' ? ctx.weights : ctx.states, name, what);
  if (v.shape.join() !== n.shape.join()) throw new Error(`cpu backend: ${what} '${name}' has shape (${v.shape.join(',')}), expected (${n.shape.join(',')})`);
  return v;
}

/** The value of one node from its inputs' values: the op table's reference for it (references.ts). */
export function evalNode(n: Node, args: readonly NDArray[], ctx: CpuRunArgs): NDArray {
  const result: NDArray = { shape: [...n.shape], dtype: n.dtype, data: allocArray(n.dtype, numel(n.shape)) };
  const returned = referenceOf(OPS[n.op] as OpDef<never>)(n, args, result, { source: (s) => source(s, ctx) });
  return (returned as NDArray | undefined) ?? result;
}

/** Runs a whole graph on the CPU. Returns the named outputs; updates `states` with every state the graph writes. */
export function runCpu(graph: Graph, args: CpuRunArgs): Record<string, NDArray> {
  const values = new Map<number, NDArray>();
  for (const n of graph.nodes) values.set(n.id, evalNode(n, n.inputs.map((i) => values.get(i.id)!), args));
  const outputs: Record<string, NDArray> = {};
  for (const [name, n] of graph.outputs) outputs[name] = values.get(n.id)!;
  for (const [name, n] of graph.stateWrites) if (args.states) args.states[name] = values.get(n.id)!;
  return outputs;
}
