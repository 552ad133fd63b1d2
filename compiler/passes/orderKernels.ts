// orderKernels: the dispatch order. Data dependencies first; a kernel that writes a state in place (a scatter, or
// a kernel's alsoWrites) additionally waits for every kernel that still reads the version it overwrites.
import { type Node, stateRoot } from '../ir.ts';
import type { LoweredKernel } from './lowerToWgsl.ts';

/** Kernels that read version `v` of a state, or an older one, must run before the scatter that overwrites `v`. */
function readsOlderOrEqual(read: Node, target: Node): boolean {
  // versions form a chain target <- ... <- state; walk down from target
  let cur: Node | undefined = target;
  while (cur) {
    if (cur.id === read.id) return true;
    cur = cur.op === 'scatter' ? cur.inputs[0] : undefined;
  }
  return false;
}

export function orderKernels(kernels: LoweredKernel[]): LoweredKernel[] {
  const producer = new Map<number, LoweredKernel>();
  for (const k of kernels) for (const w of [k.write, ...(k.alsoWrites ?? [])]) producer.set(w.id, k);
  const deps = new Map<LoweredKernel, Set<LoweredKernel>>();
  for (const k of kernels) {
    const d = new Set<LoweredKernel>();
    for (const r of k.reads) {
      const p = producer.get(r.id);
      if (p && p !== k) d.add(p);
    }
    // the state versions it writes in place: its root when a scatter, and those it writes besides (ssd_step)
    // (a temp among alsoWrites, an SSD step's projected in_proj result, has no older version)
    const inPlace = [...(k.root.op === 'scatter' ? [k.root] : []), ...(k.alsoWrites ?? []).filter((w) => w.op === 'scatter')];
    for (const w of inPlace) {
      const target = w.inputs[0]!;
      const prev = producer.get(target.id);
      if (prev && prev !== k) d.add(prev);
      const state = stateRoot(target)!;
      for (const other of kernels) {
        if (other === k) continue;
        if (other.reads.some((r) => stateRoot(r) === state && readsOlderOrEqual(r, target))) d.add(other);
      }
    }
    deps.set(k, d);
  }
  // Kahn's algorithm, preferring trace order among ready kernels.
  const order: LoweredKernel[] = [];
  const done = new Set<LoweredKernel>();
  const pending = [...kernels].sort((a, b) => a.root.id - b.root.id);
  while (pending.length) {
    const i = pending.findIndex((k) => [...deps.get(k)!].every((d) => done.has(d)));
    if (i < 0) throw new Error(`orderKernels: cyclic dependency among ${pending.map((k) => `%${k.root.id}`).join(', ')} (a state read after it is overwritten in the same program?)`);
    const [k] = pending.splice(i, 1);
    order.push(k!);
    done.add(k!);
  }
  return order;
}
