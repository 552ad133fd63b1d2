// The compiler pipeline, top to bottom: verify, simplify, split weights, fuse (first choice of buffers),
// planKernels (templates and buffers to a fixpoint of rules, each kernel lowered there), order, plan memory,
// group, bind. One Program per bucket.
import { fuseMlp, unbufferedByMlps, zeroMlpSums } from './passes/fuseMlp.ts';
import type { Graph, Node } from './ir.ts';
import type { KernelSpec, Program } from './program.ts';
import { OPS, wgslType } from './ops.ts';
import { type QuantMatvec, type QuantShape, isQuantized } from './quantized.ts';
import type { TiledVariant } from './lower/tiledMatmul.ts';
import type { MatrixTile, SubgroupMatrixConfig } from './lower/tiledMatrix.ts';
import type { Tiles } from './lower/attentionPrefillKernel.ts';
import type { AttentionDecodeVariant } from './lower/attentionDecodeVariants.ts';
import type { MatvecRowsVariant } from './lower/matvecRows.ts';
import type { DecodeSplits } from './attentionSplit.ts';
import { verify } from './passes/verify.ts';
import { simplify } from './passes/simplify.ts';
import { type FuseOptions, initialMaterialization } from './passes/fuse.ts';
import type { LoweredKernel } from './passes/lowerToWgsl.ts';
import { CompileError, type KernelPlan, type PlanStep, planKernels, templateName } from './passes/planKernels.ts';
import { groupKernels, groupWorkgroupSize, workgroupVars } from './passes/groupKernels.ts';
import { renderKernel } from './lower/emitter.ts';
import { orderKernels } from './passes/orderKernels.ts';
import { absorbScatters } from './passes/absorbScatters.ts';
import { absorbStateWrites } from './passes/absorbStateWrites.ts';
import { projectSsdInputs } from './passes/projectSsdInputs.ts';
import { decomposeKernels } from './passes/decomposeKernels.ts';
import { planMemory } from './passes/planMemory.ts';
import { splitWeights } from './passes/splitWeights.ts';

export interface DeviceLimits {
  maxStorageBuffersPerShaderStage: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBufferBindingSize: number;
  /** Subgroup operations are available (the 'subgroups' feature). */
  subgroups?: boolean;
  /**
   * Write loops with a known trip count out trip by trip (loads in flight together). Off for software adapters:
   * lavapipe gains nothing from it and its LLVM takes seconds per unrolled kernel (test suite 4x slower).
   */
  unroll?: boolean;
  /**
   * Bound short sequential loops by a value the shader compiler cannot fold, so that it keeps them loops: on for
   * software adapters, whose compiler writes constant-trip loops out and spends seconds on the result
   * (compiler/lower/opaqueLoops.ts). STRATA_OPAQUE_LOOPS=0/1 (Node) overrides the adapter's default.
   */
  opaqueLoops?: boolean;
  /** Bytes of workgroup memory a kernel may declare (WebGPU's default is 16 KiB). */
  maxComputeWorkgroupStorageSize?: number;
  /**
   * Accumulators per thread at most in the matvec's rows path (batched decode rows over 16/32-bit weights): more
   * columns per workgroup share each x value read. Unset: ROWS_ACCUMULATORS on GPUs, 16 on software adapters (their
   * compile time grows with it); 0 turns the rows path off (the generic loop). The ops bench measures several.
   */
  matvecAccumulators?: number;
  /**
   * The rows path's variant (compiler/lower/matvecRows.ts): 'direct' (x read by every thread from global memory)
   * where unset; 'staged' variants stage x in workgroup memory and read u32x4 weight vectors. The ops bench measures each.
   */
  matvecRows?: MatvecRowsVariant;
  /**
   * The one-row matvec (decode at batch 1) over 16/32-bit weights loads every trip's weight words ahead of the norm
   * phases, as the rows path does, so their latency overlaps the norm's reduction (when its K loop is written out).
   * Off where unset; STRATA_MATVEC_PRELOAD=1 sets it on an adapter.
   */
  matvecPreload?: boolean;
  /**
   * The matvec's K loop reads its left operand's f32 and 16-bit buffers as vec4s: one load for 4 (8) consecutive
   * elements where each thread read every element alone, 32 bytes apart across a warp (Emitter.vectorLoads). Off
   * where unset; adapters turn it on, STRATA_VECTOR_LOADS=0 turns it off. H200 (bench/results/2026-12-03-h200-
   * vector-loads/): q4 at 32768x8192 1,447 -> 2,271 GB/s (wide), llama-400m q4 decode kernels 1.72 -> 1.64 ms
   * summed, its f16 ones unchanged (1.44 / 1.46 ms).
   */
  vectorLoads?: boolean;
  /**
   * The matvec's K loop for block-quantized weights (compiler/lower/matvecQuant.ts): 'word' (int-to-float
   * conversions, the generic loop) where unset; the ops bench measures each.
   */
  quantMatvec?: QuantMatvec;
  /**
   * The quantized matvec's shape where set (0: the planner's choice): columns (weight rows) a workgroup computes and
   * its threads. STRATA_QUANT_SHAPE=cols=N,threads=N sets it on an adapter; `bench ops --quant-sweep` measures a grid.
   */
  quantShape?: QuantShape;
  /** The tiled (prefill) matmul's variant (compiler/lower/tiledMatmul.ts): DEFAULT_TILED_VARIANT where unset; the ops bench measures each. */
  tiledMatmul?: TiledVariant;
  /**
   * The decode attention kernel's variant (compiler/lower/attentionDecodeVariants.ts): defaultAttentionDecode
   * (GPU 'sector', software 'lanes') where unset; STRATA_ATTN_DECODE sets it on an adapter.
   */
  attentionDecode?: AttentionDecodeVariant;
  /**
   * Kernels of one workgroup fuse further: a scatter reads the rows it overwrites (every thread reads, a barrier,
   * then the writes: the position update pos[slot] += valid is one kernel, not a map and a scatter), and a
   * one-workgroup map or scatter shares a dispatch with kernels of a larger workgroup size. On where unset;
   * STRATA_ONE_GROUP_FUSION=0 turns it off on an adapter (the A/B: two more dispatches a decode step).
   */
  oneGroupFusion?: boolean;
  /**
   * A prefill tile reads its left operand from a buffer: the normed rows are written once by a row kernel instead of
   * being recomputed in every column tile's prologue, and other computed left operands (a gated norm, a scan's
   * output times a gate) get a kernel of their own. More dispatches (granite4h-350m-like 285 -> 317) but faster:
   * 128-token prefill +13% (llama-400m, granite4h) and +15% (jamba-small) on the H200
   * (bench/results/2026-12-04-h200-projection-default/plain-left/). On where unset; STRATA_TILED_PLAIN_LEFT=0 turns
   * it off, =norms takes only the left operands that read a reduction (measured slower).
   */
  tiledPlainLeft?: boolean | 'norms';
  /**
   * A gated MLP at batch 1 is one kernel (passes/fuseMlp.ts, lower/mlpKernel.ts): its gate/up matvecs, activation
   * and down projection, the workgroups' partial sums added as fixed point with integer atomics (deterministic).
   * STRATA_MLP_FUSION=0|1.
   */
  mlpFusion?: boolean;
  /** Threads of a fused MLP workgroup at most: the adapter's maximum (256 where unset). */
  mlpThreads?: number;
  /**
   * A decode attention kernel computes its head's q row and its KV head's k and v rows itself and writes its cache
   * rows: the q/k/v matvec's dispatch goes (llama-400m decode 121 -> 97). A trade: the GPU's step grows by ~3 us a
   * layer (16 workgroups project what the matvec spreads over the GPU: 0.82 against 0.75 ms on the H200) and the
   * host records and submits a fifth fewer dispatches, which decides batch 1 where the host is slow (a browser's
   * always is); at batch 8 it pays outright (4,847 against 4,245 tok/s). README: the lease of 66ba4cb. On (every
   * decode bucket) is the GPU default; 'batched': only buckets of several sequences. STRATA_ATTN_PROJECTION=0|1|batched.
   */
  attentionProjection?: boolean | 'batched';
  /**
   * A Mamba-2 decode step kernel computes the in_proj rows it reads itself (its head's x rows, its group's B and C
   * rows, its dt row) and its share of the z columns (passes/projectSsdInputs.ts): in_proj's matvec dispatch goes
   * (granite4h-350m-like decode 157 -> 129). Off by default: every workgroup of a group recomputes the shared B and
   * C rows, and the projection is a chain of dependent phases on 48 workgroups where the matvec spreads over the
   * GPU. H200 (bench/results/2026-12-04-h200-ssd-step/): its 28 step kernels 0.65 ms against 0.27, the GPU's step
   * 1.07 against 0.87 ms; computing an eighth of the B and C rows (a probe) took the same time, so the chain costs,
   * not the bytes. STRATA_SSD_PROJECTION=1; 'heads' keeps a head's state in one workgroup however many elements
   * that makes a thread.
   */
  ssdProjection?: boolean | 'heads';
  /**
   * Threads of a Mamba-2 decode step workgroup that projects its in_proj rows: 256 where unset; adapters take 1024
   * where they allow it (four times the weight loads in flight: 'heads' 0.74 -> 0.66 ms on the H200).
   * STRATA_SSD_THREADS=256|512|1024.
   */
  ssdThreads?: number;
  /**
   * Decode attention over key slices (flash-decoding, compiler/attentionSplit.ts DecodeSplits), a trace-time choice:
   * ModelRunner hands it to the step's StepContext, the generator runs it from its length on. false: one slice.
   * STRATA_ATTN_SPLITS=0|N (N slices at any length).
   */
  decodeSplits?: DecodeSplits | false;
  /** WGSL's language feature packed_4x8_integer_dot_product (dot4I8Packed) is available: quantMatvec 'dot4' needs it. */
  packedDot?: boolean;
  /** The device has 'shader-f16' (WGSL `enable f16`): quantMatvec 'half' needs it. */
  shaderF16?: boolean;
  /**
   * The adapter's subgroup matrix (runtime/device.ts subgroupMatrixOf): the tiled matmul stages its operands as
   * f16 and multiplies them with subgroup matrices (tensor cores) instead of f32 multiply-adds. Off where unset or
   * false; on an adapter where it has the feature (STRATA_SUBGROUP_MATRIX=0 turns it off).
   */
  subgroupMatrix?: SubgroupMatrixConfig | false;
  /** The subgroup matrix kernel's tiling where set (STRATA_MATRIX_TILE=tm,tn,slices,tk on an adapter); else by shape. */
  matrixTile?: MatrixTile | false;
  /** The prefill attention's tile where set and it fits (STRATA_ATTN_TILES=rows,keys on an adapter); else the largest that fits. */
  attentionTiles?: Tiles | false;
  /**
   * Batched decode rows take the tiled kernel from this many rows (2-16: every leading coordinate a row, weights read
   * directly and 16-bit), its rows' norms fused as cooperative phases as in the matvec: the products of up to 16
   * rows are one subgroup matrix's, where the matvec does 8 multiply-adds per weight element on each thread. Where
   * unset or false, the matvec. GPUs with subgroup matrices take 2; STRATA_TILED_ROWS=N sets it (0 off; on an
   * adapter without them, the f32 tiled form: how the suite tests the kernel on lavapipe).
   */
  tiledRows?: number | false;
  /**
   * Batched rows over block-quantized weights take the tiled kernel too (tiledRows), their weights decoded an element
   * at a time into the f16 tiles. Off where unset; an adapter's limits set it (STRATA_TILED_ROWS_QUANT=0 turns it off).
   */
  tiledRowsQuantized?: boolean;
}

export const DEFAULT_LIMITS: DeviceLimits = {
  maxStorageBuffersPerShaderStage: 8,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBufferBindingSize: 128 << 20,
};

export interface CompileOptions extends Partial<FuseOptions> {
  limits?: Partial<DeviceLimits>;
  bucket?: Record<string, number>;
}

export { CompileError };

function elementType(n: Node, written = false): string {
  // a fused MLP's accumulator: fixed point in i32 words (compiler/fixedPoint.ts), added to atomically
  if (n.op === 'fused_mlp') return written ? 'atomic<i32>' : 'i32';
  // quantized blocks are read as u32x4 (compiler/quantized.ts)
  if (n.op === 'weight' && isQuantized((n as Node<'weight'>).attrs.storage)) return 'vec4<u32>';
  if (n.op === 'weight' && (n as Node<'weight'>).attrs.storage !== 'f32') return 'u32';
  return n.dtype === 'bool' ? 'u32' : wgslType(n.dtype);
}

/** The element type of a buffer read as vectors (`@V<id>@`, LoweredKernel.vectorReads): vec4<f32>, or u32x4 of packed weights. */
function vectorType(n: Node): string {
  return n.op !== 'weight' || (n as Node<'weight'>).attrs.storage === 'f32' ? 'vec4<f32>' : 'vec4<u32>';
}

/**
 * `@B<id>@[E]` of the buffers bound as vectors, rewritten to E's component (`bufN[(E) >> 2u][(E) & 3u]`): a kernel
 * that reads some runs of a buffer as vec4s reads (and writes) its other elements through the same binding.
 */
function scalarAccessOfVectors(line: string, ids: ReadonlySet<number>): string {
  let out = '';
  let at = 0;
  for (const m of line.matchAll(/@B(\d+)@\[/g)) {
    if (!ids.has(Number(m[1])) || m.index! < at) continue;
    let depth = 1;
    let end = m.index! + m[0].length;
    for (; depth > 0; end++) depth += line[end] === '[' ? 1 : line[end] === ']' ? -1 : 0;
    const index = line.slice(m.index! + m[0].length, end - 1);
    out += `${line.slice(at, m.index!)}@V${m[1]}@[(${index}) >> 2u][(${index}) & 3u]`;
    at = end;
  }
  return out + line.slice(at);
}

/**
 * Binds a group of kernels (usually one) to buffers: one WGSL module whose `main` runs each kernel's body for its
 * own range of workgroups.
 */
/** `matmul*3 mean rsqrt mul*6`: the compute ops of a kernel group, in first-seen order, views and constants left out. */
function fusedOps(group: LoweredKernel[], nodeById: Map<number, Node>): string {
  const counts = new Map<string, number>();
  for (const k of group)
    for (const id of k.nodes) {
      const n = nodeById.get(id);
      if (!n || n.op === 'const' || OPS[n.op].kind === 'view' || OPS[n.op].kind === 'source') continue;
      counts.set(n.op, (counts.get(n.op) ?? 0) + 1);
    }
  return [...counts].map(([op, c]) => (c > 1 ? `${op}*${c}` : op)).join(' ');
}

function bindKernels(group: LoweredKernel[], bufferOf: Map<number, number>, limits: DeviceLimits, index: number, nodeById: Map<number, Node>): KernelSpec {
  const written = group.flatMap((k) => [k.write, ...(k.alsoWrites ?? [])]);
  const writes = [...new Set(written.map((w) => bufferOf.get(w.id)!))];
  const slots: number[] = [...writes];
  const types = new Map<number, string>(written.map((w) => [bufferOf.get(w.id)!, elementType(w, true)]));
  // a buffer read as vectors anywhere in the group is bound as vectors, and every other access of it goes through them
  const vectoredBuffers = new Set(group.flatMap((k) => (k.vectorReads ?? []).map((id) => bufferOf.get(id)!)));
  const vectoredIds = new Set<number>();
  for (const k of group)
    for (const r of k.reads) {
      const b = bufferOf.get(r.id)!;
      if (!slots.includes(b)) slots.push(b);
      if (vectoredBuffers.has(b)) {
        types.set(b, vectorType(r));
        vectoredIds.add(r.id);
      } else if (!types.has(b)) types.set(b, elementType(r));
    }
  for (const w of written) if (vectoredBuffers.has(bufferOf.get(w.id)!)) vectoredIds.add(w.id);
  const decls = slots.map((b, i) => `@group(0) @binding(${i}) var<storage, ${writes.includes(b) ? 'read_write' : 'read'}> buf${i}: array<${types.get(b)}>;`);
  const groups = group.reduce((a, k) => a + k.groups, 0);
  const x = Math.min(groups, limits.maxComputeWorkgroupsPerDimension);
  const y = Math.ceil(groups / x);
  if (y > limits.maxComputeWorkgroupsPerDimension) throw new CompileError(`kernel for %${group[0]!.root.id} needs ${groups} workgroups`);
  const bind = (line: string) => scalarAccessOfVectors(line, vectoredIds).replace(/@[BV](\d+)@/g, (_, id: string) => `buf${slots.indexOf(bufferOf.get(Number(id))!)}`);
  let main: string[];
  if (group.length === 1) main = group[0]!.text.main.map(bind);
  else {
    // each part sees its own workgroup index; the branch is uniform, so barriers inside stay legal
    main = ['let g_all = wid.x + wid.y * NX;'];
    let offset = 0;
    group.forEach((k, i) => {
      const own = offset === 0 ? 'g_all' : `(g_all - ${offset}u)`;
      main.push(`${i === 0 ? '' : '} else '}if (g_all < ${offset + k.groups}u) {`);
      main.push(...k.text.main.map((l) => '  ' + bind(l).replace(/wid\.x \+ wid\.y \* NX/g, own).replace(/\n/g, '\n  ')));
      offset += k.groups;
    });
    main.push('}');
  }
  const helpers = [...new Set(group.flatMap((k) => k.text.decls.filter((d) => !d.startsWith('var<workgroup>'))))];
  const shared = [...workgroupVars(group.flatMap((k) => k.text.decls)).values()].map((v) => v.decl);
  const text = { decls: [...shared, ...helpers], main, wg: groupWorkgroupSize(group)!, subgroups: group.some((k) => k.text.subgroups), f16: group.some((k) => k.text.f16), subgroupMatrix: group.some((k) => k.text.subgroupMatrix) };
  const wgsl = renderKernel(text, decls.join('\n'), limits.opaqueLoops ?? false).replace(/\bNX\b/g, `${x}u`);
  const name = group.length === 1 ? `${group[0]!.mode}_${group[0]!.root.op}` : `${group.map((k) => k.mode).join('+')}_${group.map((k) => k.root.op).join('+')}`;
  return {
    name: `k${index}_${name}`,
    wgsl,
    bindings: slots,
    writes,
    workgroups: [x, y, 1],
    workgroupSize: text.wg,
    templates: group.map(templateName),
    ops: fusedOps(group, nodeById),
    nodes: group.flatMap((k) => k.nodes),
  };
}

/**
 * Every output needs a buffer of its own written by a kernel. An output that is a buffer already (an input, a
 * weight, a state version) or that shares its node with an earlier output (after simplify folds `x.add(0)` to
 * `x`, or CSE merges two equal outputs) would get none: give it an identity copy.
 */
function copyAliasedOutputs(g: Graph): Graph {
  const claimed = new Set<number>();
  const outputs = new Map(g.outputs);
  const nodes = [...g.nodes];
  for (const [name, n] of g.outputs) {
    const isBuffer = n.op === 'input' || n.op === 'weight' || n.op === 'state' || n.op === 'scatter';
    if (isBuffer || claimed.has(n.id)) {
      const copy: Node = { id: nodes.length, op: 'reshape', inputs: [n], attrs: { shape: [...n.shape] }, shape: [...n.shape], dtype: n.dtype };
      nodes.push(copy);
      outputs.set(name, copy);
    } else claimed.add(n.id);
  }
  return nodes.length === g.nodes.length ? g : { ...g, nodes, outputs };
}

/** A compiled Program with the kernel plan it was bound from and the rules that shaped it. */
export interface CompiledWithPlan {
  program: Program;
  plan: KernelPlan;
  steps: PlanStep[];
}

/** Compiles a traced graph into a Program. */
export function compile(graph: Graph, options: CompileOptions = {}): Program {
  return compileWithPlan(graph, options).program;
}

/** compile(), keeping the kernel plan (passes/planKernels.ts) for printing. */
export function compileWithPlan(graph: Graph, options: CompileOptions = {}): CompiledWithPlan {
  const limits: DeviceLimits = { ...DEFAULT_LIMITS, ...options.limits };
  verify(graph);
  const simple = simplify(graph);
  const decomposed = decomposeKernels(simple, limits.maxStorageBuffersPerShaderStage);
  const fuse = options.fuse ?? true;
  const split = splitWeights(copyAliasedOutputs(decomposed === simple ? simple : simplify(decomposed)), limits.maxStorageBufferBindingSize);
  const g = fuse && limits.mlpFusion ? fuseMlp(split) : split;
  verify(g);
  const mat = initialMaterialization(g, { fuse });
  // a fused MLP computes its matvecs and activation itself
  for (const id of unbufferedByMlps(g)) mat.delete(id);
  const steps: PlanStep[] = [];
  const kernelPlan = planKernels(g, mat, limits, steps);
  const absorbed = fuse ? absorbStateWrites(kernelPlan.kernels, (n) => mat.has(n.id)) : kernelPlan.kernels;
  const planned = fuse && limits.ssdProjection ? projectSsdInputs(absorbed, g, (n) => mat.has(n.id), limits, steps) : absorbed;
  const ordered = zeroMlpSums(orderKernels(planned));
  // fused MLPs whose accumulators no other fused kernel can zero: the program without them
  if (!ordered) return compileWithPlan(graph, { ...options, limits: { ...options.limits, mlpFusion: false } });
  const kernels = fuse ? absorbScatters(ordered, limits.maxStorageBuffersPerShaderStage) : ordered;
  const plan = planMemory(g, kernels);
  for (const b of plan.buffers)
    if (b.bytes > limits.maxStorageBufferBindingSize)
      throw new CompileError(`${b.role} ${b.name ? `'${b.name}' ` : ''}needs ${b.bytes} bytes; the adapter binds at most ${limits.maxStorageBufferBindingSize} per buffer`);
  const nodeById = new Map(g.nodes.map((n) => [n.id, n]));
  const groups = fuse ? groupKernels(kernels, plan.bufferOf, limits) : kernels.map((k) => [k]);
  const byRole = (role: string) => Object.fromEntries(plan.buffers.filter((b) => b.role === role).map((b) => [b.name!, b.id]));
  const program: Program = {
    bucket: options.bucket ?? {},
    buffers: plan.buffers,
    kernels: groups.map((grp, i) => bindKernels(grp, plan.bufferOf, limits, i, nodeById)),
    inputs: byRole('input'),
    outputs: byRole('output'),
    weights: byRole('weight'),
    states: byRole('state'),
  };
  return { program, plan: { ...kernelPlan, kernels }, steps };
}
