// projectSsdInputs: a Mamba-2 decode step kernel (`ssd_step`, lower/ssdStepKernel.ts) computes the in_proj rows
// it reads itself (DeviceLimits.ssdProjection), so in_proj's matvec dispatch goes. in_proj's result is
// [z | xBC | dt]; xBC and dt are views of it the step reads, z is read after the step (the gated norm). Each step
// workgroup computes its head's x rows of its chunk, its group's B and C rows and its head's dt row into workgroup
// memory, and its share of the z columns into the matmul's buffer, which keeps only those columns. Declined where
// xBC or dt is not a plain view of one matvec's columns, another kernel reads columns besides z, or the merged
// kernel would bind more buffers than the adapter allows.
import { type Graph, type Node, numel, stateRoot } from '../ir.ts';
import { OPS } from '../ops.ts';
import type { DeviceLimits } from '../compile.ts';
import { delinearize, linearize, numberIndex } from '../indexAlgebra.ts';
import { isQuantized } from '../quantized.ts';
import { transposedWeight } from '../lower/matvecKernel.ts';
import { ELEMENTS_PER_THREAD, lowerSsdStep, type SsdStepWrites } from '../lower/ssdStepKernel.ts';
import { ssdStepDims } from '../ssdStep.ts';
import { type LoweredKernel, SEQ_MAX, reduceLength } from './lowerToWgsl.ts';
import type { PlanStep } from './planKernels.ts';

export interface SsdProjection {
  /** in_proj's result ([S, 1, cols]: one row a sequence), computed by the step kernel. */
  matmul: Node;
  /** Its left operand (the normed residual, [S, 1, K]) and its [cols, K] weight. */
  left: Node;
  weight: Node;
  /** The first columns of xBC and of dt. */
  xbc: number;
  dt: number;
  /** [first, width] of the columns others read (z), stored by the step kernel; undefined where none are. */
  z?: readonly [number, number];
  /** Nodes the kernel computes besides its own: the matvec's (the norm) and the views of the matmul. */
  nodes: number[];
}

/** Follows views from `n` at `idx` down to `target`: the index read there, undefined where anything but a one-input view is met. */
function viewOf(n: Node, idx: number[], target: Node, seen: Set<number>): number[] | undefined {
  while (n !== target) {
    const def = OPS[n.op];
    if (def.kind !== 'view' || def.indirect) return undefined;
    const cands = def.index(numberIndex, idx, n.attrs as never, n.inputs, n);
    if (cands.length !== 1) return undefined;
    const next = n.inputs[cands[0]!.input]!;
    if (cands[0]!.index.some((v, d) => v < 0 || v >= next.shape[d]!)) return undefined;
    seen.add(n.id);
    [n, idx] = [next, cands[0]!.index];
  }
  return idx;
}

/** The matmul column each of `rows` x `width` elements of `view` reads, provided it is `first + element` at row `row`; the first column, or undefined. */
function columnsOf(view: Node, target: Node, seen: Set<number>): number | undefined {
  const [S, width] = view.shape as [number, number];
  const cols = target.shape[target.shape.length - 1]!;
  let first: number | undefined;
  for (let s = 0; s < S; s++)
    for (let c = 0; c < width; c++) {
      const at = viewOf(view, [s, c], target, seen);
      if (!at || linearize(numberIndex, at.slice(0, -1), target.shape.slice(0, -1)) !== s) return undefined;
      first ??= at[at.length - 1]! - c;
      if (at[at.length - 1]! - c !== first || first < 0 || first + width > cols) return undefined;
    }
  return first;
}

/** The projection of a step kernel, with the matvec kernel it replaces; undefined where the graph is not the pattern. */
function planSsdProjection(k: LoweredKernel, kernels: LoweredKernel[], nodeById: Map<number, Node>, isMat: (n: Node) => boolean): { projection: SsdProjection; matvec: LoweredKernel } | undefined {
  const [xbc, dtRaw] = k.root.inputs as [Node, Node];
  const { S, C, Hh } = ssdStepDims(k.root.inputs);
  // the matmul under xbc: the first one-input view chain's end
  let m: Node = xbc;
  while (m.op !== 'matmul' && OPS[m.op].kind === 'view' && m.inputs.length === 1 && !isMat(m)) m = m.inputs[0]!;
  if (m.op !== 'matmul' || reduceLength(m) <= SEQ_MAX || !isMat(m)) return undefined;
  const matvec = kernels.find((o) => o.write === m && o.mode === 'matvec' && !o.alsoWrites);
  const cols = m.shape[m.shape.length - 1]!;
  if (!matvec || numel(m.shape) / cols !== S || m.shape[m.shape.length - 2] !== 1) return undefined;
  const left = m.inputs[0]!;
  const Kd = reduceLength(m);
  const weight = transposedWeight(m.inputs[1]!, isMat);
  if (!weight || Kd % 2 !== 0 || numel(left.shape) / Kd !== S || isQuantized((weight as Node<'weight'>).attrs.storage ?? 'f32')) return undefined;
  const seen = new Set<number>();
  const xOff = columnsOf(xbc, m, seen);
  const dtOff = columnsOf(dtRaw, m, seen);
  if (xOff === undefined || dtOff === undefined) return undefined;
  // the columns the step does not read: one window, and every other reader of the matmul reads only it
  const rest = [...Array(cols).keys()].filter((c) => (c < xOff || c >= xOff + C) && (c < dtOff || c >= dtOff + Hh));
  const z = rest.length ? ([rest[0]!, rest.length] as const) : undefined;
  if (z && rest[rest.length - 1]! !== z[0] + z[1] - 1) return undefined;
  for (const o of kernels) {
    if (o === k || o === matvec || !o.reads.includes(m)) continue;
    for (const id of o.nodes) {
      const n = nodeById.get(id)!;
      // (a step part planned apart, reading xBC, declines it too: those columns are no longer stored)
      if (!n.inputs.includes(m)) continue;
      for (let t = 0; t < numel(n.shape); t++) {
        const at = viewOf(n, delinearize(numberIndex, t, n.shape), m, new Set());
        const col = at?.[at.length - 1];
        if (!z || col === undefined || col < z[0] || col >= z[0] + z[1]) return undefined;
      }
    }
  }
  return { projection: { matmul: m, left, weight, xbc: xOff, dt: dtOff, ...(z ? { z } : {}), nodes: [...matvec.nodes, ...seen] }, matvec };
}

/** The state writes a step kernel already makes (absorbStateWrites.ts): the scatters into its h0's and ring's states. */
function writesOf(k: LoweredKernel): SsdStepWrites {
  const [, , ring, h0] = k.root.inputs as [Node, Node, Node, Node];
  const into = (gathered: Node) => (k.alsoWrites ?? []).find((w) => w.inputs[0] === gathered.inputs[0]);
  const ssm = into(h0);
  const conv = into(ring);
  return { ...(ssm ? { ssm } : {}), ...(conv ? { conv } : {}) };
}

/** Storage buffers a kernel binds: what it writes and reads, a state's versions as one. */
const bindings = (k: LoweredKernel) => new Set([k.write, ...(k.alsoWrites ?? []), ...k.reads].map((n) => stateRoot(n)?.id ?? n.id)).size;

/** The kernels with each step that can project its in_proj rows merged with in_proj's matvec; `steps` records each merge. */
export function projectSsdInputs(kernels: LoweredKernel[], g: Graph, isMat: (n: Node) => boolean, limits: DeviceLimits, steps: PlanStep[] = []): LoweredKernel[] {
  const nodeById = new Map(g.nodes.map((n) => [n.id, n]));
  let out = [...kernels];
  for (const k of kernels) {
    if (k.mode !== 'ssdstep' || (k.root as Node<'ssd_step'>).attrs.part !== 'y') continue;
    const plan = planSsdProjection(k, out, nodeById, isMat);
    if (!plan) continue;
    const threads = limits.ssdThreads ?? 256;
    // 'heads': a head's P x N state in one workgroup, however many elements that makes a thread
    const { P, N } = ssdStepDims(k.root.inputs);
    const perHead = limits.ssdProjection === 'heads' ? { elementsPerThread: Math.max(ELEMENTS_PER_THREAD, Math.ceil((P * N) / threads)) } : {};
    const merged = lowerSsdStep(k.root, isMat, writesOf(k), { projection: plan.projection, subgroups: limits.subgroups ?? false, unroll: limits.unroll ?? true, threads, ...perHead });
    if (merged.refusal || bindings(merged) > limits.maxStorageBuffersPerShaderStage) continue;
    out = out.filter((o) => o !== plan.matvec).map((o) => (o === k ? merged : o));
    const { matmul, z } = plan.projection;
    steps.push({ node: k.root, rule: 'projection', reason: `computes %${matmul.id}${z ? ` (its z columns ${z[0]}..${z[0] + z[1] - 1} stored, no kernel)` : ' (no kernel)'}` });
  }
  return out;
}
