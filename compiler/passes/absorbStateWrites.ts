// absorbStateWrites: the Mamba-2 decode step (`ssd_step`) is three nodes of one op, its output y and the new SSM
// state and conv ring that the step scatters back into its states. Planned alone, each part is a kernel and each
// scatter another; here, when a part is read by nothing but a scatter into the state version the step itself
// reads, at the rows it reads (the slot ids of its gathers), the y kernel writes that state in place instead
// (lower/ssdStepKernel.ts: each element is written by one workgroup, and none reads a ring slot being written),
// and the part's kernel and its scatter go. One dispatch per layer instead of three.
import type { Node } from '../ir.ts';
import { type SsdStepWrites, lowerSsdStep } from '../lower/ssdStepKernel.ts';
import type { LoweredKernel } from './lowerToWgsl.ts';

/** Input of the step that gathers the rows a part's scatter writes back: the ring (2) for conv, h0 (3) for ssm. */
const GATHERED = { ssm: 3, conv: 2 } as const;

const sameStep = (a: Node, b: Node): boolean => {
  const [x, y] = [(a as Node<'ssd_step'>).attrs, (b as Node<'ssd_step'>).attrs];
  return x.dtMin === y.dtMin && x.dtMax === y.dtMax && a.inputs.every((n, i) => n === b.inputs[i]);
};

export function absorbStateWrites(kernels: LoweredKernel[], isMat: (n: Node) => boolean): LoweredKernel[] {
  let out = [...kernels];
  for (const k of kernels) {
    if (k.root.op !== 'ssd_step' || (k.root as Node<'ssd_step'>).attrs.part !== 'y') continue;
    const writes: SsdStepWrites = {};
    const gone = new Set<LoweredKernel>();
    for (const part of ['ssm', 'conv'] as const) {
      const pk = out.find((o) => o.root.op === 'ssd_step' && (o.root as Node<'ssd_step'>).attrs.part === part && sameStep(o.root, k.root));
      if (!pk) continue;
      const readers = out.filter((o) => o.reads.includes(pk.root));
      const sk = readers[0];
      if (readers.length !== 1 || sk!.root.op !== 'scatter' || sk!.root.inputs[2] !== pk.root || sk!.alsoWrites) continue;
      const gathered = k.root.inputs[GATHERED[part]]!;
      const [target, rows] = sk!.root.inputs as [Node, Node];
      if (gathered.op !== 'gather' || gathered.inputs[0] !== target || gathered.inputs[1] !== rows) continue;
      writes[part] = sk!.root;
      gone.add(pk).add(sk!);
    }
    if (!gone.size) continue;
    const merged = lowerSsdStep(k.root, isMat, writes);
    out = out.filter((o) => !gone.has(o)).map((o) => (o === k ? merged : o));
  }
  return out;
}
