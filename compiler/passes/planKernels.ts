// planKernels: the scheduling pass. From the graph and fuse's first choice of materialised nodes it decides, by
// rules over the graph, which nodes get buffers, each kernel's template, what it inlines and which buffers it
// reads, and brings those decisions to a fixpoint: a rule that gives a node a buffer changes what the kernels
// around it inline, so the rules run again until none fires. The result is data (KernelPlan, printable with
// printKernelPlan); binding and grouping then run once on it.
//
// The rules, in the order they are checked for each kernel root (graph order, as dispatch order is derived):
//   template     chooseTemplate: the op's own template, tiled / matvec / map / row / element; a many-row matmul
//                read through views gets its own tiled kernel
//   inlining     templates without cooperative phases (scatter, scan, attention, tiled, ssdstep, selstep, selscan) cannot hold a long
//                reduction: the first one their emitter would reach gets a buffer (a prefill norm's mean then has a
//                kernel of its own: computing a tile's rows' statistics in the tiled kernel, before its K loop, made
//                prefill 25-35% slower on the H200, bench/results/2026-12-03-h200-row-stats/)
//   in place     a scatter writes its state in place: values or indices that read that state get a buffer, unless
//                it fits one workgroup (reads, a barrier, then writes) and they read the very version it overwrites
//   emission     the emitter's refusal (a cooperative reduction whose index varies inside an enclosing loop, or
//                along the row of a row kernel: element template instead)
//   bindings     a kernel reading more buffers than the adapter binds splits off the inlined subtree that reads most
// Each kernel is lowered once per state of what it inlines (results are kept until a node it inlines gets a
// buffer), so the last lowering of each kernel is the one that is bound.
import { type Graph, type Node, fmtShape, stateRoot } from '../ir.ts';
import type { DeviceLimits } from '../compile.ts';
import { OPS } from '../ops.ts';
import { GPU_QUANT_MATVEC, quantMatvecRuns } from '../quantized.ts';
import { type AttentionProjection, planProjection } from './planProjections.ts';
import { projectionFloats } from '../lower/attentionProjection.ts';
import { type LoweredKernel, SEQ_MAX, type TemplateChoice, chooseTemplate, isReduction, lowerKernel, reduceLength, scatterReadsInPlace } from './lowerToWgsl.ts';

/** A graph the compiler cannot schedule for the adapter (re-exported by compile.ts). */
export class CompileError extends Error {
  override name = 'CompileError';
}

/** The scheduled kernels in graph order (orderKernels then picks the dispatch order) and the materialised nodes. */
export interface KernelPlan {
  kernels: LoweredKernel[];
  materialized: Set<number>;
}

/** Where a materialisation came from, for the plan's text form and for tests. */
export interface PlanStep {
  node: Node;
  rule: 'template' | 'inlining' | 'in place' | 'emission' | 'bindings' | 'projection';
  reason: string;
}

/** The order a template's emitter evaluates a node's inputs in (an indirect view reads its indices first, a selecting one its last part first). */
function evaluationOrder(n: Node): readonly Node[] {
  const def = OPS[n.op];
  if (def.kind !== 'view' || n.inputs.length < 2) return n.inputs;
  return def.indirect ? [n.inputs[1]!, n.inputs[0]!] : [...n.inputs].reverse();
}

/** The first long reduction reached from `starts` in evaluation order, without crossing buffers or the `skip` nodes' reductions. */
function firstLongReduction(starts: readonly Node[], isMat: (n: Node) => boolean, skip: ReadonlySet<number> = new Set()): Node | undefined {
  const seen = new Set<number>();
  const visit = (n: Node): Node | undefined => {
    if (seen.has(n.id) || isMat(n) || n.op === 'const') return undefined;
    seen.add(n.id);
    if (!skip.has(n.id) && isReduction(n) && reduceLength(n) > SEQ_MAX) return n;
    for (const i of evaluationOrder(n)) {
      const hit = visit(i);
      if (hit) return hit;
    }
    return undefined;
  };
  for (const s of starts) {
    const hit = visit(s);
    if (hit) return hit;
  }
  return undefined;
}

/** Buffers reachable from `starts` without crossing one: what a kernel evaluating them reads. */
function readsFrom(starts: readonly Node[], isMat: (n: Node) => boolean): Node[] {
  const seen = new Set<number>();
  const reads: Node[] = [];
  const stack = [...starts];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n.id) || n.op === 'const') continue;
    seen.add(n.id);
    if (isMat(n)) reads.push(n);
    else stack.push(...n.inputs);
  }
  return reads;
}

/** Where the emitter of each template without cooperative phases starts evaluating (its inputs, in its order). */
function phaseFreeStarts(root: Node, choice: TemplateChoice): { starts: Node[]; skip?: Set<number> } | undefined {
  switch (choice.template) {
    case 'scatter': return { starts: [root.inputs[1]!, root.inputs[2]!] };
    case 'scan': return { starts: [root.inputs[0]!] };
    case 'ssdstep':
    case 'selstep':
    case 'selscan': return { starts: [...root.inputs] };
    case 'attention': { const [q, kT, v, mask, limit] = root.inputs as [Node, Node, Node, Node, Node]; return { starts: [q, limit, mask, kT, v] }; }
    // batched decode rows: the rows' norms are cooperative phases, as in the matvec
    case 'tiled': return choice.rows ? undefined : { starts: [choice.matmuls[0]!.inputs[0]!, ...choice.matmuls.map((m) => m.inputs[1]!), root], skip: new Set(choice.matmuls.map((m) => m.id)) };
    default: return undefined;
  }
}

/** DeviceLimits.tiledPlainLeft: a prefill tile's left operand computed by a kernel of its own (through its views), not in the tile's prologue. */
function plainLeftRule(choice: TemplateChoice, isMat: (n: Node) => boolean, only: boolean | 'norms'): PlanStep | undefined {
  if (choice.template !== 'tiled' || choice.rows) return undefined;
  let left = choice.matmuls[0]!.inputs[0]!;
  while (!isMat(left) && OPS[left.op].kind === 'view' && left.inputs.length === 1) left = left.inputs[0]!;
  if (isMat(left) || OPS[left.op].kind === 'source') return undefined;
  if (only === 'norms' && !readsReduction(left, isMat)) return undefined;
  return { node: left, rule: 'template', reason: 'a tile reads its left operand from a buffer (tiledPlainLeft)' };
}

/**
 * Whether n's elementwise expression reads a reduction (a norm's statistics): through elementwise ops and views,
 * down to buffers, which are looked at but not through.
 */
function readsReduction(n: Node, isMat: (n: Node) => boolean, seen = new Set<number>()): boolean {
  if (seen.has(n.id)) return false;
  seen.add(n.id);
  const kind = OPS[n.op].kind;
  if (kind === 'reduce') return n.op !== 'matmul'; // a matmul's output is a buffer of its own, not a row statistic
  return !isMat(n) && (kind === 'elementwise' || kind === 'view') && n.inputs.some((i) => readsReduction(i, isMat, seen));
}

/** The rules that need no lowering: a node to materialise, or undefined when the kernel may be lowered as chosen. */
function structuralRule(root: Node, choice: TemplateChoice, isMat: (n: Node) => boolean, readsInPlace: boolean): PlanStep | undefined {
  const phaseFree = phaseFreeStarts(root, choice);
  if (phaseFree) {
    const target = root.op === 'scatter' ? root.inputs[0]! : undefined;
    // a projecting attention computes its matmuls in its own prologue
    const projected = new Set(choice.template === 'attention' ? (choice.projection?.matmuls ?? []).map((m) => m.node.id) : []);
    const boundary = (n: Node) => n === target || isMat(n) || projected.has(n.id);
    const long = firstLongReduction(phaseFree.starts, boundary, phaseFree.skip);
    if (long) return { node: long, rule: 'inlining', reason: `a reduction of ${reduceLength(long)} in a ${choice.template} kernel` };
  }
  if (root.op === 'scatter') {
    // Rows of the target are written in place: values (or indices) that read that same version would race with
    // the writes, unless the scatter fits one workgroup (every thread reads before a barrier, then writes:
    // lowerScatter). Another version of the state shares the target's buffer: never readable here.
    const [target, indices, values] = root.inputs as [Node, Node, Node];
    const reads = readsFrom([indices, values], (n) => n === target || isMat(n));
    const inPlace = readsInPlace && scatterReadsInPlace(root);
    if (reads.includes(target) && !inPlace) return { node: isMat(values) ? indices : values, rule: 'in place', reason: 'scatter values read the state being written' };
    if (reads.some((r) => r !== target && stateRoot(r) === stateRoot(root))) return { node: values, rule: 'in place', reason: 'scatter values read the state being written' };
  }
  return undefined;
}

/** Inlined nodes under the root with the most distinct buffers below them: the one to split off. */
function splitCandidate(k: LoweredKernel, isMat: (n: Node) => boolean, nodeById: Map<number, Node>): Node | undefined {
  let best: Node | undefined;
  let bestReads = 1;
  for (const id of k.nodes.slice(1)) {
    const n = nodeById.get(id);
    if (!n || n.op === 'const' || n.op === 'iota') continue;
    const r = new Set(readsFrom(n.inputs, isMat).map((x) => x.id)).size;
    if (r > bestReads && r < k.reads.length) [best, bestReads] = [n, r];
  }
  return best;
}

function bindingRule(k: LoweredKernel, isMat: (n: Node) => boolean, limits: DeviceLimits, nodeById: Map<number, Node>): PlanStep | undefined {
  const buffers = new Set(k.reads.map((r) => stateRoot(r)?.id ?? r.id)).size + 1;
  if (buffers <= limits.maxStorageBuffersPerShaderStage) return undefined;
  const split = splitCandidate(k, isMat, nodeById);
  if (!split) throw new CompileError(`kernel for %${k.root.id} (${k.root.op}) needs ${buffers} storage buffers; the adapter allows ${limits.maxStorageBuffersPerShaderStage}`);
  return { node: split, rule: 'bindings', reason: `kernel needs ${buffers} storage buffers` };
}

/** Plans every kernel of `g`, starting from `mat` (fuse's choice; grown in place), to a fixpoint of the rules. */
export function planKernels(g: Graph, mat: Set<number>, limits: DeviceLimits, steps: PlanStep[] = []): KernelPlan {
  const isMat = (n: Node) => mat.has(n.id);
  // a K loop the adapter cannot compile ('dot4' without packed integer dot products, 'half' without shader-f16): the GPU default's
  const quantMatvec = limits.quantMatvec && !quantMatvecRuns(limits.quantMatvec, limits) ? GPU_QUANT_MATVEC : limits.quantMatvec;
  const options = { subgroups: limits.subgroups ?? false, unroll: limits.unroll ?? true, workgroupStorage: limits.maxComputeWorkgroupStorageSize, matvecAccumulators: limits.matvecAccumulators, matvecRows: limits.matvecRows, matvecPreload: limits.matvecPreload, vectorLoads: limits.vectorLoads, quantMatvec, quantShape: limits.quantShape, tiledMatmul: limits.tiledMatmul, subgroupMatrix: limits.subgroupMatrix, matrixTile: limits.matrixTile, tiledRows: limits.tiledRows, tiledRowsQuantized: limits.tiledRowsQuantized, attentionDecode: limits.attentionDecode, attentionTiles: limits.attentionTiles, mlpThreads: limits.mlpThreads };
  const nodeById = new Map(g.nodes.map((n) => [n.id, n]));
  /** Accepted kernels by root id; one stays valid until a node it inlines gets a buffer. */
  const accepted = new Map<number, LoweredKernel>();
  /** Roots whose row template refused, with what it inlined: they use the element template until one of those gets a buffer. */
  const elementOnly = new Map<number, number[]>();
  // decode attentions that compute their q/k/v rows and write their cache rows themselves (planProjections.ts):
  // the matmuls get no buffer, the scatters no kernel
  const projections = new Map<number, AttentionProjection>();
  if (limits.attentionProjection) {
    const consumers = new Map<number, Node[]>();
    for (const n of g.nodes) for (const i of n.inputs) consumers.set(i.id, [...(consumers.get(i.id) ?? []), n]);
    for (const n of g.nodes) {
      if (n.op !== 'attention' || !mat.has(n.id)) continue;
      if (limits.attentionProjection === 'batched' && n.shape[0] === 1) continue; // one sequence keeps its q/k/v matvec
      const choice = chooseTemplate(n, isMat, options);
      if (!('template' in choice) || choice.template !== 'attention' || choice.variant !== 'decode') continue;
      const p = planProjection(n, isMat, consumers);
      // its arrays come out of the attention's workgroup memory: at most a quarter of it (WebGPU's default 16 KiB
      // would leave a llama-400m attention one key per trip)
      if (!p || 4 * projectionFloats(p) > (options.workgroupStorage ?? 16384) / 4) continue;
      projections.set(n.id, p);
      for (const id of p.unbuffered) mat.delete(id);
      steps.push({ node: n, rule: 'projection', reason: `computes %${p.matmuls.map((m) => m.node.id).join(' %')} (no buffers) and writes %${p.scatters.map((x) => x.node.id).join(' %')} (no kernels)` });
    }
  }
  const absorbed = () => new Set([...projections.values()].flatMap((p) => p.scatters.map((x) => x.node.id)));
  const roots = () => {
    const skip = absorbed();
    return g.nodes.filter((n) => mat.has(n.id) && OPS[n.op].kind !== 'source' && !skip.has(n.id));
  };
  const materialize = (step: PlanStep): void => {
    // a rule that needs a buffer for a node the projection keeps in workgroup memory: the attention projects no more
    for (const [id, p] of projections) {
      if (!p.nodes.includes(step.node.id) && !p.matmuls.some((m) => m.node === step.node)) continue;
      projections.delete(id);
      accepted.delete(id);
    }
    if (mat.has(step.node.id)) throw new CompileError(`cannot lower %${step.node.id} (${step.node.op}${fmtShape(step.node.shape)}): ${step.reason}`);
    mat.add(step.node.id);
    steps.push(step);
    for (const [id, k] of accepted) if (k.nodes.includes(step.node.id)) accepted.delete(id);
    for (const [id, nodes] of elementOnly) if (nodes.includes(step.node.id)) elementOnly.delete(id);
  };
  /** The first rule that fires for root n (its kernel accepted otherwise). */
  const check = (n: Node): PlanStep | undefined => {
    if (accepted.has(n.id)) return undefined;
    for (;;) {
      let choice = chooseTemplate(n, isMat, options);
      if ('materialize' in choice) return { node: choice.materialize, rule: 'template', reason: choice.reason };
      if (choice.template === 'row' && elementOnly.has(n.id)) choice = { template: 'element' };
      const projection = projections.get(n.id);
      if (choice.template === 'attention' && projection) choice = { ...choice, projection };
      const plainLeft = limits.tiledPlainLeft ?? true;
      const structural = (plainLeft ? plainLeftRule(choice, isMat, plainLeft) : undefined) ?? structuralRule(n, choice, isMat, limits.oneGroupFusion ?? true);
      if (structural) return structural;
      const k = lowerKernel(n, choice, isMat, options);
      if (k.refusal?.kind === 'row') {
        elementOnly.set(n.id, k.nodes);
        continue;
      }
      if (k.refusal) return { node: k.refusal.node, rule: 'emission', reason: k.refusal.reason };
      const binding = bindingRule(k, isMat, limits, nodeById);
      if (binding) return binding;
      accepted.set(n.id, k);
      return undefined;
    }
  };
  for (let round = 0; ; round++) {
    if (round > 10 * g.nodes.length + 10) throw new CompileError('fusion did not converge');
    let fired: PlanStep | undefined;
    for (const n of roots()) if ((fired = check(n))) break;
    if (!fired) return { kernels: roots().map((n) => accepted.get(n.id)!), materialized: mat };
    materialize(fired);
  }
}

/** A kernel's template as printed: `attention/decode` where the template has variants. */
export const templateName = (k: LoweredKernel) => (k.variant ? `${k.mode}/${k.variant}` : k.mode);

/** Text form of a plan, one kernel a line: template, root, workgroups x size, inlined nodes, buffers read. */
export function printKernelPlan(plan: KernelPlan, steps: readonly PlanStep[] = []): string {
  const node = (n: Node) => `%${n.id}`;
  const lines = [`plan kernels=${plan.kernels.length} buffers-chosen=${plan.materialized.size}`];
  for (const s of steps) lines.push(`  rule ${s.rule}: %${s.node.id} ${s.node.op}${fmtShape(s.node.shape)} ${s.rule === 'projection' ? s.reason : `gets a buffer (${s.reason})`}`);
  for (const k of plan.kernels) {
    const inlined = k.nodes.slice(1).length;
    lines.push(`  ${node(k.root).padStart(5)} ${k.root.op}${fmtShape(k.root.shape)} ${templateName(k)}${k.shape ? ` (${k.shape})` : ''} grid ${k.groups} wg ${k.workgroupSize} inlines ${inlined} reads [${k.reads.map(node).join(' ')}]`);
  }
  return lines.join('\n');
}
