// absorbStateWrites: a recurrent decode step (`ssd_step`, Mamba-2; `selective_step`, Mamba-1) or prefill scan
// (`selective_scan`: Mamba-1, and Mamba-2 as it once per group of heads) is several nodes of one op, its output y and
// the new states (SSM state, Mamba-2's conv ring) that the step scatters back. Planned alone, each part is a kernel
// and each scatter another; here, when a part is read by nothing but a scatter into the state version the step
// itself reads, at the rows it reads (the slot ids of its gathers), the y kernel writes that state in place instead
// (lower/ssdStepKernel.ts, selectiveStepKernel.ts, selectiveScanKernel.ts: each element is written by one workgroup,
// and none reads an element another writes), and the part's kernel and its scatter go. One dispatch per layer
// instead of three.
import type { Node } from '../ir.ts';
import { lowerSelectiveScan } from '../lower/selectiveScanKernel.ts';
import { lowerSelectiveStep } from '../lower/selectiveStepKernel.ts';
import { lowerSsdStep } from '../lower/ssdStepKernel.ts';
import type { LoweredKernel } from './lowerToWgsl.ts';

type StepOp = 'ssd_step' | 'selective_step' | 'selective_scan';
type Part = 'ssm' | 'conv';

/** Per step op: the input that gathers the rows each state part's scatter writes back, and the merged lowering. */
const STEPS: { [K in StepOp]: { gathered: Partial<Record<Part, number>>; lower(root: Node, isMat: (n: Node) => boolean, writes: Partial<Record<Part, Node>>): LoweredKernel } } = {
  ssd_step: { gathered: { ssm: 3, conv: 2 }, lower: lowerSsdStep },
  selective_step: { gathered: { ssm: 5 }, lower: lowerSelectiveStep },
  selective_scan: { gathered: { ssm: 6 }, lower: lowerSelectiveScan },
};

const isStep = (n: Node): n is Node<StepOp> => n.op in STEPS;
const partOf = (n: Node): string => (n.attrs as { part: string }).part;

/** The same step: same op, inputs and attributes but the part. */
const sameStep = (a: Node, b: Node): boolean => {
  const { part: _a, ...x } = a.attrs as Record<string, unknown>;
  const { part: _b, ...y } = b.attrs as Record<string, unknown>;
  return a.op === b.op && Object.keys(x).every((k) => x[k] === y[k]) && a.inputs.length === b.inputs.length && a.inputs.every((n, i) => n === b.inputs[i]);
};

/**
 * A node under reshapes that keep its leading dim (a row's elements in the same order): Mamba-2's SSM state,
 * [rows, heads, P, N] in the state table, is the selective_scan's [rows, heads * P, N] (dsl/nn/mamba2.ts ssdSelective).
 */
const rowsOf = (n: Node): Node => (n.op === 'reshape' && n.inputs[0]!.shape[0] === n.shape[0] ? rowsOf(n.inputs[0]!) : n);

export function absorbStateWrites(kernels: LoweredKernel[], isMat: (n: Node) => boolean): LoweredKernel[] {
  let out = [...kernels];
  for (const k of kernels) {
    if (!isStep(k.root) || partOf(k.root) !== 'y') continue;
    const step = STEPS[k.root.op];
    const writes: Partial<Record<Part, Node>> = {};
    const gone = new Set<LoweredKernel>();
    for (const [part, input] of Object.entries(step.gathered) as [Part, number][]) {
      const pk = out.find((o) => partOf(o.root) === part && sameStep(o.root, k.root));
      if (!pk) continue;
      const readers = out.filter((o) => o.reads.includes(pk.root));
      const sk = readers[0];
      if (readers.length !== 1 || sk!.root.op !== 'scatter' || rowsOf(sk!.root.inputs[2]!) !== pk.root || sk!.alsoWrites) continue;
      const gathered = rowsOf(k.root.inputs[input]!);
      const [target, rows] = sk!.root.inputs as [Node, Node];
      if (gathered.op !== 'gather' || gathered.inputs[0] !== target || gathered.inputs[1] !== rows) continue;
      writes[part] = sk!.root;
      gone.add(pk).add(sk!);
    }
    if (!gone.size) continue;
    const merged = step.lower(k.root, isMat, writes);
    out = out.filter((o) => !gone.has(o)).map((o) => (o === k ? merged : o));
  }
  return out;
}
