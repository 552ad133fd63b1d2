// planMemory: one buffer per input, weight, state and output; temporaries share buffers when their lifetimes
// (first write to last read, in dispatch order) do not overlap.
import { type Graph, type Node, numel, stateRoot } from '../ir.ts';
import type { BufferSpec } from '../program.ts';
import { isQuantized, quantBytes } from '../quantized.ts';
import { mlpWords } from './fuseMlp.ts';
import type { LoweredKernel } from './lowerToWgsl.ts';

export interface MemoryPlan {
  buffers: BufferSpec[];
  /** Node id -> buffer id, for every node a kernel reads or writes. */
  bufferOf: Map<number, number>;
}

export function nodeBytes(n: Node): number {
  if (n.op === 'fused_mlp') return mlpWords(n) * 4;
  const storage = n.op === 'weight' ? (n as Node<'weight'>).attrs.storage : 'f32';
  const count = numel(n.shape);
  if (isQuantized(storage)) return quantBytes(storage, n.shape);
  return Math.max(4, storage === 'f32' ? count * 4 : Math.ceil(count / 2) * 4);
}

export function planMemory(g: Graph, kernels: LoweredKernel[]): MemoryPlan {
  const buffers: BufferSpec[] = [];
  const bufferOf = new Map<number, number>();
  const named = new Map<string, number>();
  const add = (spec: Omit<BufferSpec, 'id'>): number => {
    buffers.push({ id: buffers.length, ...spec });
    return buffers.length - 1;
  };
  const outputs = new Map<number, string>();
  for (const [name, n] of g.outputs) outputs.set(n.id, name);

  const sourceBuffer = (n: Node): number | undefined => {
    const root = n.op === 'scatter' ? stateRoot(n) : n;
    if (!root) return undefined;
    if (root.op !== 'input' && root.op !== 'weight' && root.op !== 'state') return undefined;
    const name = (root as Node<'input'>).attrs.name;
    const key = `${root.op}:${name}`;
    let id = named.get(key);
    if (id === undefined) {
      const { storage, piece } = root.op === 'weight' ? (root as Node<'weight'>).attrs : { storage: undefined, piece: undefined };
      id = add({ role: root.op as 'input' | 'weight' | 'state', name, bytes: nodeBytes(root), dtype: root.dtype, shape: [...root.shape], ...(storage ? { storage } : {}), ...(piece ? { piece } : {}) });
      named.set(key, id);
    }
    return id;
  };

  const lastUse = new Map<number, number>();
  kernels.forEach((k, i) => k.reads.forEach((r) => lastUse.set(r.id, i)));
  const free: number[] = [];
  kernels.forEach((k, i) => {
    for (const r of k.reads) {
      const b = sourceBuffer(r);
      if (b !== undefined) bufferOf.set(r.id, b);
    }
    const place = (w: Node): void => {
      // a fused MLP's accumulator is placed by the kernel that zeroes it, which may run first (passes/fuseMlp.ts)
      if (bufferOf.has(w.id)) return;
      const src = sourceBuffer(w);
      if (src !== undefined) bufferOf.set(w.id, src);
      else if (outputs.has(w.id)) bufferOf.set(w.id, add({ role: 'output', name: outputs.get(w.id)!, bytes: nodeBytes(w), dtype: w.dtype, shape: [...w.shape] }));
      else {
        const need = nodeBytes(w);
        // a fused MLP's accumulator is its own buffer for the whole step: it is zeroed one step for the next
        if (w.op === 'fused_mlp') {
          bufferOf.set(w.id, add({ role: 'temp', bytes: need, dtype: 'i32', shape: [mlpWords(w)] }));
          return;
        }
        let best = -1;
        for (let f = 0; f < free.length; f++) if (buffers[free[f]!]!.bytes >= need && (best < 0 || buffers[free[f]!]!.bytes < buffers[free[best]!]!.bytes)) best = f;
        const id = best >= 0 ? free.splice(best, 1)[0]! : add({ role: 'temp', bytes: need, dtype: w.dtype, shape: [...w.shape] });
        bufferOf.set(w.id, id);
      }
    };
    // state versions written in place, or a temp (an SSD step's projected in_proj result: projectSsdInputs.ts)
    for (const also of k.alsoWrites ?? []) place(also);
    place(k.write);
    // temps read for the last time here become free for later kernels
    for (const r of k.reads) {
      const b = bufferOf.get(r.id)!;
      // a fused MLP's accumulator stays its own: zeroed for the next step once its readers have run
      if (lastUse.get(r.id) === i && buffers[b]!.role === 'temp' && r.op !== 'fused_mlp' && !free.includes(b)) free.push(b);
    }
  });
  return { buffers, bufferOf };
}
