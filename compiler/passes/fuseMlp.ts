// fuseMlp: a gated MLP at batch 1 as one kernel (DeviceLimits.mlpFusion). The down projection `matmul(act, Wd^T)`
// of one row, whose `act` is an elementwise function (through views) of matvecs of one left row x (gate and up),
// becomes a `fused_mlp` node: same inputs, same value. Its kernel (lower/mlpKernel.ts) gives each workgroup J
// columns of act: it computes the matvecs' rows those columns read, act, then those J columns of the down
// projection for every output row, and adds its partial sums as fixed point (compiler/fixedPoint.ts). The matvecs
// and act get no buffers. Another fused kernel zeroes each accumulator between its last reader and its next write
// (zeroMlpSums); so a program needs two of them, and their buffers are their own.
import { type Graph, type Node, numel } from '../ir.ts';
import { OPS } from '../ops.ts';
import { numberIndex } from '../indexAlgebra.ts';
import { FIXED_WORDS } from '../fixedPoint.ts';
import { transposedWeight } from '../lower/matvecKernel.ts';
import type { LoweredKernel } from './lowerToWgsl.ts';

/** One (matvec, column offset) that act's column c reads at column c + offset. */
export interface MlpSite {
  matmul: Node;
  weight: Node;
  offset: number;
}

/** What the fused kernel computes: act over `sites` of rows of x, then act x Wd^T (N outputs of I columns). */
export interface MlpPlan {
  x: Node;
  act: Node;
  sites: MlpSite[];
  /** The down projection's [N, I] weight. */
  down: Node;
  K: number;
  I: number;
  N: number;
  /** act columns a workgroup. */
  J: number;
  /** act's subtree down to and with the matvecs: the nodes the kernel computes without buffers. */
  inner: number[];
}

const isWeight = (n: Node) => n.op === 'weight';
/** Weights the kernel reads as vectors: 16-bit (u32x4 of 8) or f32 (vec4s), not block-quantized. */
const plainWeight = (w: Node | undefined): w is Node => w !== undefined && ['f16', 'bf16', 'f32'].includes((w as Node<'weight'>).attrs.storage);
/** One row: every dimension but the last is 1. */
const oneRow = (n: Node) => n.shape.length >= 2 && numel(n.shape) === n.shape[n.shape.length - 1];

/**
 * The (matvec, column) pairs act reads at index idx, or undefined where something other than elementwise ops, views,
 * constants and one-row matvecs of plain (16/32-bit) weights is met. `inner` collects the nodes on the way to a
 * matvec (not those that lead only to constants, which other layers may share).
 */
function reads(n: Node, idx: number[], found: Map<number, Node>, inner: Set<number>): [number, number][] | undefined {
  if (n.op === 'const') return [];
  let out: [number, number][] | undefined;
  const def = OPS[n.op];
  if (n.op === 'matmul') {
    if (!oneRow(n) || !plainWeight(transposedWeight(n.inputs[1]!, isWeight))) return undefined;
    found.set(n.id, n);
    out = [[n.id, idx[idx.length - 1]!]];
  } else if (def.kind === 'elementwise') {
    out = [];
    for (const i of n.inputs) {
      if (i.op !== 'const' && i.shape.join() !== n.shape.join()) return undefined;
      const r = reads(i, idx, found, inner);
      if (!r) return undefined;
      out.push(...r);
    }
  } else if (def.kind === 'view' && !def.indirect) {
    const cands = def.index(numberIndex, idx, n.attrs as never, n.inputs, n);
    if (cands.length !== 1) return undefined;
    out = reads(n.inputs[cands[0]!.input]!, cands[0]!.index, found, inner);
  }
  if (out && out.length > 0) inner.add(n.id);
  return out;
}

/** The plan of a one-row matmul that is a gated MLP's down projection, or undefined. */
export function mlpPlanOf(m: Node): MlpPlan | undefined {
  if ((m.op !== 'matmul' && m.op !== 'fused_mlp') || !oneRow(m)) return undefined;
  const [act, b] = m.inputs as [Node, Node];
  const down = transposedWeight(b, isWeight);
  const I = act.shape[act.shape.length - 1]!;
  const N = m.shape[m.shape.length - 1]!;
  if (!plainWeight(down) || !oneRow(act) || OPS[act.op].kind === 'source' || act.op === 'matmul') return undefined;
  const J = [32, 16, 8].find((j) => I % j === 0);
  if (J === undefined) return undefined;
  const found = new Map<number, Node>();
  const inner = new Set<number>();
  const at = (c: number) => [...act.shape.slice(0, -1).map(() => 0), c];
  const first = reads(act, at(0), found, inner);
  if (!first || first.length === 0 || found.size === 0) return undefined;
  // every column reads the same sites, shifted with it
  const sites = [...new Map(first.map(([id, col]) => [`${id}:${col}`, { matmul: found.get(id)!, offset: col }])).values()];
  for (let c = 1; c < I; c++) {
    const r = reads(act, at(c), found, inner);
    if (!r || r.length !== first.length || r.some(([id, col], i) => id !== first[i]![0] || col !== first[i]![1] + c)) return undefined;
  }
  // one left row for every matvec, of one length; their columns in range
  const x = sites[0]!.matmul.inputs[0]!;
  const K = x.shape[x.shape.length - 1]!;
  if (sites.some((s) => s.matmul.inputs[0] !== x || s.offset < 0 || s.offset + I > s.matmul.shape[s.matmul.shape.length - 1]!) || K % 2 !== 0) return undefined;
  const withWeights = sites.map((s) => ({ ...s, weight: transposedWeight(s.matmul.inputs[1]!, isWeight)! }));
  return { x, act, sites: withWeights, down, K, I, N, J, inner: [...inner] };
}

/** Whether nothing outside the MLP reads what the kernel computes without buffers. */
function closed(plan: MlpPlan, m: Node, consumers: Map<number, Node[]>): boolean {
  const inside = new Set([...plan.inner, m.id]);
  return plan.inner.every((id) => (consumers.get(id) ?? []).every((c) => inside.has(c.id)));
}

/** Whether n leads only to constants (a multiplier broadcast through views). */
const constOnly = (n: Node): boolean => n.op === 'const' || (OPS[n.op].kind === 'view' && n.inputs.length === 1 && constOnly(n.inputs[0]!));

/**
 * Whether m's value is scaled by something computed (through views): a MoE expert's, by its router's weight. The
 * experts' matvecs share kernels that the fusion would split, and their weighted sum would take a kernel of its own.
 */
function weighted(m: Node, consumers: Map<number, Node[]>): boolean {
  return (consumers.get(m.id) ?? []).some((c) => {
    if (OPS[c.op].kind === 'view' && c.inputs.length === 1) return weighted(c, consumers);
    return c.op === 'mul' && c.inputs.some((i) => i !== m && !constOnly(i));
  });
}

/** The graph with every gated MLP's down projection of one row as a `fused_mlp` node; unchanged where fewer than two qualify. */
export function fuseMlp(g: Graph): Graph {
  const consumers = new Map<number, Node[]>();
  for (const n of g.nodes) for (const i of n.inputs) consumers.set(i.id, [...(consumers.get(i.id) ?? []), n]);
  const outputs = new Set([...g.outputs.values()].map((n) => n.id));
  const chosen = g.nodes.filter((m) => {
    if (m.op !== 'matmul' || outputs.has(m.id)) return false;
    const plan = mlpPlanOf(m);
    return plan !== undefined && closed(plan, m, consumers) && !weighted(m, consumers) && !plan.inner.some((id) => outputs.has(id));
  });
  if (chosen.length < 2) return g;
  const replaced = new Map<number, Node>();
  const remap = (n: Node): Node => replaced.get(n.id) ?? n;
  const fusedIds = new Set(chosen.map((m) => m.id));
  const nodes = g.nodes.map((n) => {
    const inputs = n.inputs.map(remap);
    const changed = fusedIds.has(n.id) || inputs.some((x, i) => x !== n.inputs[i]);
    if (!changed) return n;
    const next: Node = { ...n, inputs, ...(fusedIds.has(n.id) ? { op: 'fused_mlp' as const, attrs: {} } : {}) };
    replaced.set(n.id, next);
    return next;
  });
  const map = <T extends Node>(m: Map<string, T>) => new Map([...m].map(([k, v]) => [k, remap(v) as T]));
  return { ...g, nodes, outputs: map(g.outputs), stateWrites: map(g.stateWrites) };
}

/** What the fused kernels compute without buffers (after fuse's first choice of materialised nodes). */
export function unbufferedByMlps(g: Graph): number[] {
  return g.nodes.filter((n) => n.op === 'fused_mlp').flatMap((n) => mlpPlanOf(n)?.inner ?? []);
}

/** The i32 words a fused MLP's accumulator takes. */
export const mlpWords = (n: Node) => numel(n.shape) * FIXED_WORDS;

/**
 * Each fused MLP's accumulator is zeroed by another fused MLP kernel that runs after the accumulator's last reader
 * or before its writer (so, for the next step, in between): the first such one after the last reader, in dispatch
 * order around the step. Fresh buffers are zero, so the first step finds them ready; each accumulator keeps its own
 * buffer (planMemory.ts). Undefined where no fused kernel runs outside an accumulator's writer and readers (one
 * layer's MLPs around one reader): the program is then compiled without the fusion.
 */
export function zeroMlpSums(kernels: LoweredKernel[]): LoweredKernel[] | undefined {
  const at = kernels.flatMap((k, i) => (k.mode === 'mlp' ? [i] : []));
  if (at.length === 0) return kernels;
  const targets = new Map<number, Node[]>();
  for (const w of at) {
    const target = kernels[w]!.write;
    const lastRead = kernels.reduce((last, k, r) => (k.reads.some((x) => x.id === target.id) ? r : last), w);
    const valid = (z: number) => z !== w && (z < w || z > lastRead);
    const zeroer = [...at.filter((z) => z > lastRead), ...at.filter((z) => z < w)].find(valid);
    if (zeroer === undefined) return undefined;
    targets.set(zeroer, [...(targets.get(zeroer) ?? []), target]);
  }
  return kernels.map((k, i) => {
    const zeroed = targets.get(i);
    if (!zeroed) return k;
    const zero = zeroed.flatMap((t) => [`if (gi == 0u) {`, `  for (var z: u32 = lid; z < ${mlpWords(t)}u; z += WG) { atomicStore(&@B${t.id}@[z], 0i); }`, `}`]);
    return { ...k, text: { ...k.text, main: [...k.text.main, ...zero] }, alsoWrites: [...(k.alsoWrites ?? []), ...zeroed] };
  });
}
