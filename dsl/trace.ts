// Tracing: while a trace runs, every Tensor operation appends a node to the current graph.
import { type DType, type Graph, type Node, type OpAttrs, type OpName, type StorageDType, fmtShape } from '../compiler/ir.ts';
import { type Composer, OPS, ShapeError } from '../compiler/ops.ts';
import { Tensor } from './tensor.ts';

/** A dimension: a number, or a name bound by the bucket being traced (e.g. 'T' tokens per step, 'S' slots). */
export type Dim = number | string;
export type Dims = Record<string, number>;

class Tracer {
  readonly graph: Graph = { nodes: [], outputs: new Map(), stateWrites: new Map(), inputs: new Map(), states: new Map(), weights: new Map() };
  constructor(readonly dims: Dims) {}

  node<K extends OpName>(op: K, inputs: Node[], attrs: OpAttrs[K], shape: number[], dtype: DType): Node<K> {
    const n: Node<K> = { id: this.graph.nodes.length, op, inputs, attrs, shape, dtype };
    this.graph.nodes.push(n as Node);
    return n;
  }

  resolve(shape: readonly Dim[], what: string): number[] {
    return shape.map((d) => {
      if (typeof d === 'number') {
        if (!Number.isInteger(d) || d < 1) throw new ShapeError(`${what}: dim ${d} must be a positive integer`);
        return d;
      }
      const v = this.dims[d];
      if (v === undefined) throw new ShapeError(`${what}: dim '${d}' is not bound by this trace (bound: ${Object.keys(this.dims).join(', ') || 'none'})`);
      return v;
    });
  }
}

let current: Tracer | null = null;

function tracer(): Tracer {
  if (!current) throw new Error('Tensor operations must run inside trace(...)');
  return current;
}

/** Records a primitive: runs its shape rule (errors name the op and shapes) and appends the node. */
export function emit<K extends OpName>(op: K, inputs: Node[], attrs: OpAttrs[K]): Node<K> {
  const t = tracer();
  const { shape, dtype } = OPS[op].infer(inputs, attrs as never);
  return t.node(op, inputs, attrs, shape, dtype);
}

/** The tracer as the op table's compositions see it (KernelDef.decompose). */
export const composer: Composer = {
  emit,
  constant: (value, dtype) => constant(value, dtype).node,
  iota: (shape, axis) => iota(shape, axis).node,
};

export function constant(value: number, dtype: DType = 'f32'): Tensor {
  return new Tensor(tracer().node('const', [], { value }, [], dtype));
}

export function iota(shape: readonly Dim[], axis: number, dtype: DType = 'i32'): Tensor {
  const t = tracer();
  const s = t.resolve(shape, '[iota]');
  if (axis < 0 || axis >= s.length) throw new ShapeError(`[iota] axis ${axis} out of range for shape ${fmtShape(s)}`);
  if (dtype === 'bool') throw new ShapeError('[iota] dtype must be f32, i32 or u32, got bool (compare the indices instead)');
  return new Tensor(t.node('iota', [], { axis }, s, dtype));
}

/** A per-step value written by the host or by an earlier program (tokens, positions). */
export function input(name: string, shape: readonly Dim[], dtype: DType = 'f32'): Tensor {
  const t = tracer();
  const existing = t.graph.inputs.get(name);
  if (existing) return new Tensor(existing);
  const n = t.node('input', [], { name }, t.resolve(shape, `input '${name}'`), dtype);
  t.graph.inputs.set(name, n);
  return new Tensor(n);
}

/** A model parameter; f16/bf16 stay 16-bit on the device and are unpacked in the shader. */
export function weight(name: string, shape: readonly Dim[], storage: StorageDType = 'f32'): Tensor {
  const t = tracer();
  const s = t.resolve(shape, `weight '${name}'`);
  const existing = t.graph.weights.get(name);
  if (existing) {
    if (existing.shape.join() !== s.join()) throw new ShapeError(`weight '${name}' declared as ${fmtShape(existing.shape)} and again as ${fmtShape(s)}`);
    return new Tensor(existing);
  }
  const n = t.node('weight', [], { name, storage }, s, 'f32');
  t.graph.weights.set(name, n);
  return new Tensor(n);
}

/** A persistent device buffer (cache, recurrent state, positions); read it here, update it with scatter. Returns its latest version in this trace. */
export function state(name: string, shape: readonly Dim[], dtype: DType = 'f32'): Tensor {
  const t = tracer();
  const s = t.resolve(shape, `state '${name}'`);
  const latest = t.graph.stateWrites.get(name);
  if (latest) return new Tensor(latest);
  const existing = t.graph.states.get(name);
  if (existing) {
    if (existing.shape.join() !== s.join() || existing.dtype !== dtype)
      throw new ShapeError(`state '${name}' declared as ${existing.dtype}${fmtShape(existing.shape)} and again as ${dtype}${fmtShape(s)}`);
    return new Tensor(existing);
  }
  const n = t.node('state', [], { name }, s, dtype);
  t.graph.states.set(name, n);
  return new Tensor(n);
}

/** Called by Tensor.scatter: remembers the newest version of a state so later reads see it. */
export function recordStateWrite(root: Node<'state'>, write: Node<'scatter'>): void {
  tracer().graph.stateWrites.set(root.attrs.name, write);
}

export function output(name: string, value: Tensor): void {
  const t = tracer();
  if (t.graph.outputs.has(name)) throw new ShapeError(`output '${name}' is produced twice`);
  t.graph.outputs.set(name, value.node);
}

/** Traces `fn` with the given bucket dims. `fn` may call output(...) and/or return named outputs. */
export function trace(fn: () => Record<string, Tensor> | void, dims: Dims = {}): Graph {
  if (current) throw new Error('trace(...) cannot be nested');
  current = new Tracer(dims);
  try {
    const result = fn();
    if (result) for (const [name, v] of Object.entries(result)) output(name, v);
    return current.graph;
  } finally {
    current = null;
  }
}

/** The dims bound by the trace in progress (a model reads its bucket through this). */
export function traceDims(): Dims {
  return tracer().dims;
}
