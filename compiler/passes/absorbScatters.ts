// absorbScatters: a small scatter whose next reader is a kernel that accepts it (the decode attention kernel) runs at
// that kernel's start instead of as a dispatch of its own: every workgroup writes all of the scatter's elements,
// then a storage barrier makes its own writes visible to its threads. Decode writes one K and one V row per slot a
// step and reads them in the attention right after; the scatter kernel cost a dispatch (~7 us on an H200) for a
// few hundred elements.
//
// Workgroups write the same values to the same places, so whichever write lands last, each workgroup reads what it
// wrote itself; what no workgroup reads before its own barrier is written by all identically.
import { type Node, stateRoot } from '../ir.ts';
import type { LoweredKernel } from './lowerToWgsl.ts';

/** Elements of a scatter, per thread of the absorbing kernel's workgroup, up to which it is absorbed. */
const ELEMENTS_PER_THREAD = 8;

const BARRIER = 'storageBarrier(); // the absorbed scatters are written';

const writesOf = (k: LoweredKernel): Node[] => [k.write, ...(k.alsoWrites ?? [])];

/** Buffers a kernel binds at most (temporaries may share one, states and inputs never do). */
function buffersOf(k: LoweredKernel): number {
  return new Set([...k.reads, ...writesOf(k)].map((n) => stateRoot(n)?.id ?? n.id)).size;
}

export function absorbScatters(kernels: LoweredKernel[], maxStorageBuffers: number): LoweredKernel[] {
  const out = [...kernels];
  for (let i = 0; i < out.length; i++) {
    const s = out[i]!;
    if (!s.scatter) continue;
    const j = out.findIndex((k, at) => at > i && k.reads.includes(s.write));
    const a = out[j];
    if (!a?.absorbsScatters || s.scatter.elements > ELEMENTS_PER_THREAD * a.workgroupSize) continue;
    // the kernels in between must neither see the new version nor change what the scatter reads or overwrites
    const state = stateRoot(s.write);
    const readStates = new Set(s.reads.map((r) => stateRoot(r)).filter((r) => r !== undefined));
    const between = out.slice(i + 1, j);
    const conflict = between.some(
      (k) => k.reads.some((r) => stateRoot(r) === state) || writesOf(k).some((w) => stateRoot(w) === state || readStates.has(stateRoot(w)!)),
    );
    if (conflict) continue;
    const loop = [`for (var t: u32 = lid; t < ${s.scatter.elements}u; t += WG) {`, ...s.scatter.body.map((l) => '  ' + l), `}`];
    // after the scatters absorbed before (in dispatch order), before the one barrier that follows them all
    const at = a.text.main.indexOf(BARRIER);
    const main = at < 0 ? [...loop, BARRIER, ...a.text.main] : [...a.text.main.slice(0, at), ...loop, ...a.text.main.slice(at)];
    const merged: LoweredKernel = {
      ...a,
      text: { ...a.text, decls: [...new Set([...a.text.decls, ...s.text.decls])], main },
      reads: [...new Set([...s.reads, ...a.reads])],
      alsoWrites: [...(a.alsoWrites ?? []), s.write],
      nodes: [...a.nodes, ...s.nodes],
    };
    if (buffersOf(merged) > maxStorageBuffers) continue;
    out[j] = merged;
    out.splice(i, 1);
    i--;
  }
  return out;
}
