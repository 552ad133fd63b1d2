// The kernel emitter: evaluates inlined nodes as typed value expressions (kexpr) of an output index, each bound to
// a `let` when its line is written (memoised per scope),
// loads materialised ones through buffer placeholders `@B<nodeId>@`, turns reductions into sequential loops or
// workgroup-cooperative phases, and assembles a kernel's text. The kernel templates in lowerToWgsl.ts,
// attentionKernel.ts and tiledMatmul.ts drive it.
import { fixedElement } from '../fixedPoint.ts';
import { type DType, type Node, numel } from '../ir.ts';
import { QUANT_FORMATS, isQuantized } from '../quantized.ts';
import { halfElement, halfPair } from '../halfStorage.ts';
import { linearize } from '../indexAlgebra.ts';
import { K, type KExpr, type KType, names, print } from '../kexpr/expr.ts';
import { KernelIndex } from '../kexpr/kernelIndex.ts';
import { affineOf, build } from '../kexpr/simplify.ts';
import { render } from '../kexpr/render.ts';
import { KTypeError, V } from '../kexpr/value.ts';
import { OPS, wgslHelpersFor, wgslLiteral, wgslType } from '../ops.ts';
import { opaqueLoopBounds } from './opaqueLoops.ts';

/** Longest reduction inlined as a sequential loop; longer ones are computed cooperatively by a workgroup. */
export const SEQ_MAX = 16;
/** Trips of a strided cooperative loop written out one by one when the workgroup size is known. */
const UNROLL = 8;

/**
 * Why a template cannot hold what is inlined under its root, reported by the emitter as data (the kernel it was
 * building is then discarded): `materialize` names the node that needs a buffer of its own; `row` says the row
 * template cannot hold it but the element template may. The planner (passes/planKernels.ts) acts on it.
 */
export type Refusal = { kind: 'materialize'; node: Node; reason: string } | { kind: 'row'; node: Node; reason: string };

export type KernelMode = 'map' | 'row' | 'element' | 'matvec' | 'scatter' | 'scan' | 'attention' | 'tiled' | 'ssdstep' | 'selstep' | 'selscan' | 'mlp';

export interface LoweredKernel {
  root: Node;
  mode: KernelMode;
  /** Which form of its template the planner chose, where the template has several (attention: decode / tiles / row). */
  variant?: string;
  /** WGSL in parts, with `@B<id>@` placeholders for buffers (bound once the memory plan is known). */
  text: KernelText;
  reads: Node[];
  write: Node;
  workgroupSize: number;
  groups: number;
  nodes: number[];
  /** State versions written in place besides `write`: scatters absorbed by this kernel (passes/absorbScatters.ts). */
  alsoWrites?: Node[];
  /** A scatter's body, one element `t`'s write with no guard, for a kernel that absorbs the scatter. */
  scatter?: { elements: number; body: string[] };
  /**
   * One workgroup whose threads index by `lid` and guard their own range, with no barrier outside uniform control
   * flow: the text is correct in any larger workgroup, so passes/groupKernels.ts may run it in one.
   */
  anyLargerWorkgroup?: boolean;
  /** The kernel may run scatters of what it reads at its start (see passes/absorbScatters.ts). */
  absorbsScatters?: boolean;
  /** Weights the text reads as vectors (`@V<id>@`: array<vec4<u32>> for 16-bit storage, array<vec4<f32>> for f32). */
  vectorReads?: number[];
  /** Set when the template could not hold the inlined expression: the text is unusable, the planner acts on it. */
  refusal?: Refusal;
  /** The template's shape choices as printed by the plan (the matvec's: describeMatvecShape). */
  shape?: string;
}

/**
 * A kernel's WGSL before binding: module-scope declarations (helpers, workgroup memory) and the body of `main`,
 * kept apart so that independent kernels can share one dispatch (compiler/passes/groupKernels.ts).
 */
export interface KernelText {
  decls: string[];
  main: string[];
  wg: number;
  /** The body uses the subgroup builtins `sg_lane` and `sg_size`. */
  subgroups: boolean;
  /** The body uses f16 (WGSL `enable f16`, the device feature 'shader-f16'). */
  f16?: boolean;
  /** The body uses subgroup matrices (the device feature 'chromium-experimental-subgroup-matrix'). */
  subgroupMatrix?: boolean;
}

export function reduceLength(n: Node): number {
  const x = n.inputs[0]!;
  return x.shape[x.shape.length - 1]!;
}

export function isReduction(n: Node): boolean {
  return OPS[n.op].kind === 'reduce';
}

// Generated variable names: values v*, load offsets and named indices ix* (not i*: `i32` is a type), accumulators a*,
// loop indices k*, hoisted results r*, output indices o*.
const GENERATED = /^(?:[vkaro]\d+|ix\d+|j|ks|lid)$/;
/** The generated names an expression reads (the names whose scope decides where the expression may be hoisted). */
const generated = (x: KExpr): string[] => [...names(x)].filter((n) => GENERATED.test(n));
const keyOf = (idx: readonly KExpr[]) => idx.map(print).join(',');

export class Emitter {
  private blocks: string[][] = [[]];
  private scopes: Map<string, KExpr>[] = [new Map()];
  private readonly top = this.scopes[0]!;
  /** The kernel's top-level block, kept even while a cooperative phase swaps `blocks`. */
  private readonly topBlock = this.blocks[0]!;
  /** Names declared in the top block before any phase runs (output coordinates, named indices of them). */
  private readonly headNames = new Set<string>();
  /** Named indices whose expression mentions the row loop index j (directly or through another name). */
  private readonly rowNames = new Set<string>();
  /** Names usable from the kernel's top level (group indices, hoisted reductions). */
  private readonly topVisible = new Set<string>();
  readonly phases: string[] = [];
  /** Each phase's parts, for templates that merge independent phases into one reduction round (mergedPhases). */
  private readonly phaseParts: PhaseParts[] = [];
  readonly reads = new Map<number, Node>();
  readonly inlined = new Set<number>();
  readonly redTypes = new Set<DType>();
  maxCoop = 0;
  /** The first thing this kernel's template cannot hold (see Refusal); emission goes on with a stand-in value. */
  refusal: Refusal | undefined;
  private counter = 0;
  /** A template of another mode whose text places the phases itself (the decode attention's projection prologue). */
  cooperative = false;
  /** The workgroup size when the template fixes it before emitting (cooperative loops are then unrolled). */
  workgroupSize: number | undefined;
  /** Index arithmetic of this kernel, simplified with the bounds of its coordinates and loop indices. */
  readonly ix = new KernelIndex();
  /**
   * Read f32 and 16-bit buffers as vec4s where an offset is a multiple of a vector's elements (plus a constant):
   * one load for 4 f32 (8 16-bit) elements instead of one each, memoised per vector. Set by templates that read
   * runs of consecutive elements (the matvec's K loop). Every other access of such a buffer is rewritten to its
   * vector's component when the kernel is bound (compile.ts, bindKernels).
   */
  vectorLoads = false;
  /** Nodes read as vectors (`@V<id>@`): the kernel binds their buffers as array<vec4<f32>> or array<vec4<u32>>. */
  readonly vectorIds = new Set<number>();
  /** Buffer offsets this kernel reads and writes, range-checked once every bound is declared (`finish`). */
  private readonly offsets: { index: KExpr; length: number; what: string }[] = [];

  constructor(
    readonly root: Node,
    readonly isMat: (n: Node) => boolean,
    readonly mode: KernelMode,
    /** Reduce within subgroups first (fewer barriers) when the device has them. */
    readonly subgroups = false,
  ) {}

  fresh(prefix: string): string {
    return `${prefix}${this.counter++}`;
  }
  line(s: string): void {
    this.blocks[this.blocks.length - 1]!.push(s);
  }
  /** `let <prefix><n> = expr;` in the current block; the name as a node of expr's type. */
  named(prefix: string, expr: KExpr): KExpr {
    const name = this.fresh(prefix);
    this.line(`let ${name} = ${expr};`);
    return K.v(name, expr.type);
  }
  declareTop(name: string, expr: KExpr): KExpr {
    this.line(`let ${name} = ${expr};`);
    this.topVisible.add(name);
    this.headNames.add(name);
    return this.ix.define(name, expr);
  }

  /** Runs fn with a fresh block and scope; returns the block's lines. */
  nested(fn: () => void): string[] {
    this.blocks.push([]);
    this.scopes.push(new Map());
    try {
      fn();
      return this.blocks[this.blocks.length - 1]!;
    } finally {
      this.blocks.pop();
      this.scopes.pop();
    }
  }

  /** Nodes whose value is one expression at whatever index they are read (a matvec thread's one output). */
  private readonly seededAll = new Map<number, KExpr>();
  seedAll(n: Node, expr: KExpr): void {
    this.seededAll.set(n.id, expr);
  }

  /** Nodes a template computed into workgroup memory itself (a decode attention's q/k/v projection): value(n, idx) reads there. */
  private readonly mapped = new Map<number, (idx: readonly KExpr[]) => KExpr>();
  mapValue(n: Node, read: (idx: readonly KExpr[]) => KExpr): void {
    this.mapped.set(n.id, read);
  }

  /** Makes value(n, idx) return `expr` in the current scope (a tiled kernel's accumulator for its matmul). */
  seed(n: Node, idx: readonly KExpr[], expr: KExpr): void {
    this.scopes[this.scopes.length - 1]!.set(`${n.id}|${keyOf(idx)}`, expr);
  }

  private memoGet(key: string): KExpr | undefined {
    for (let i = this.scopes.length - 1; i >= 0; i--) {
      const v = this.scopes[i]!.get(key);
      if (v !== undefined) return v;
    }
    return undefined;
  }
  /** Names a value with a `let` of its node's dtype; returns the name, typed so. */
  private bind(key: string, type: DType, expr: KExpr): KExpr {
    if (expr.type !== type) throw new KTypeError(`kernel %${this.root.id}: a ${type} value computed as ${expr.type}: ${expr}`);
    return this.bindAs(key, type, expr);
  }
  /** bind for any kernel-expression type (a vector load). */
  private bindAs(key: string, type: KType, expr: KExpr): KExpr {
    const name = this.fresh('v');
    const v = K.v(name, type);
    const text = render(expr);
    // loop-invariant code motion: a value of the output coordinates alone (a gathered slot id, a position) is
    // computed once at the top, not in every iteration of the loops it was first needed in
    if (this.mode !== 'map' && this.onlyHeadNames(text)) {
      this.topBlock.push(`let ${name}: ${type} = ${text};`);
      this.top.set(key, v);
      this.topVisible.add(name);
      this.headNames.add(name);
      return v;
    }
    this.line(`let ${name}: ${type} = ${text};`);
    this.scopes[this.scopes.length - 1]!.set(key, v);
    return v;
  }

  /**
   * Whether every name an expression's text reads (buffers and function names aside) is declared in the head. Read
   * from the text, as before values were nodes: a `bitcast<f32>` constant (an infinity) counts `f32` as a name
   * and keeps its value where it is, which the generated WGSL depends on.
   */
  private onlyHeadNames(expr: string): boolean {
    const names = expr.replace(/@[BV]\d+@/g, '').matchAll(/(?<![.\w])([A-Za-z_]\w*)\b(?!\s*\()(?!<[^=])/g);
    for (const m of names) if (!this.headNames.has(m[1]!) && !/^(true|false)$/.test(m[1]!)) return false;
    return true;
  }

  /**
   * Lines of `for (k = start; k < len; k += stride) body(k)` (start below stride). When the workgroup size is known
   * (`stride` a number) and the loop runs at most UNROLL times, it is written out trip by trip, so the loads of every
   * trip are in flight together instead of one trip's at a time.
   */
  stridedLoop(start: string, len: number, stride: number | undefined, body: (k: KExpr) => void): string[] {
    const trips = stride === undefined ? Infinity : Math.ceil(len / stride);
    if (trips > UNROLL) {
      const k = this.bound(this.fresh('k'), len - 1);
      const lines = this.nested(() => body(k));
      return [`for (var ${k}: u32 = ${start}; ${k} < ${len}u; ${k} += ${stride ?? 'WG'}${stride === undefined ? '' : 'u'}) {`, ...lines.map((l) => '  ' + l), '}'];
    }
    const out: string[] = [];
    for (let t = 0; t < trips; t++) {
      const k = this.bound(this.fresh('k'), len - 1);
      const lines = this.nested(() => body(k));
      const partial = (t + 1) * stride! > len; // the last trip of a length that is no multiple of the stride
      out.push(`{`, `  let ${k} = ${start}${t ? ` + ${t * stride!}u` : ''};`);
      if (partial) out.push(`  if (${k} < ${len}u) {`, ...lines.map((l) => '    ' + l), `  }`);
      else out.push(...lines.map((l) => '  ' + l));
      out.push(`}`);
    }
    return out;
  }

  /**
   * A sum across a group of `lanes` threads where the adapter has subgroups: by `shuffled` lines where the subgroup
   * holds the group, else by `shared` ones through workgroup memory (subgroup_size is uniform: the barriers of the
   * other branch stay legal).
   */
  groupSum(lanes: number, shuffled: readonly string[], shared: readonly string[]): void {
    this.line(`if (sg_size >= ${lanes}u) {`);
    shuffled.forEach((l) => this.line('  ' + l));
    this.line(`} else {`);
    shared.forEach((l) => this.line('  ' + l));
    this.line(`}`);
  }

  /** Records a refusal (the first one counts) and returns a stand-in value so emission can finish. */
  private refuse(r: Refusal, type: DType): KExpr {
    this.refusal ??= r;
    return wgslLiteral(0, type);
  }

  /** Registers that a loop index or clamped name never exceeds `max` (index arithmetic folds with it). */
  bound(name: string | KExpr, max: number): KExpr {
    return this.ix.bound(name, max);
  }

  /**
   * Names a long index expression once. Each reshape re-derives every output coordinate from the whole linear
   * offset, so without names index strings grow geometrically along view chains (an SSD mixer kernel reached
   * 600 KB of WGSL, minutes of shader compilation on lavapipe). A name built only from output coordinates goes to
   * the top block (before the phases) and stays hoistable; any other goes to the current block.
   */
  indexVar(expr: KExpr): KExpr {
    if (`${expr}`.length <= 32) return expr;
    const key = `I|${print(expr)}`;
    const hit = this.memoGet(key);
    if (hit) return hit;
    const name = this.fresh('ix');
    const named = this.ix.define(name, expr);
    if (generated(expr).every((m) => this.headNames.has(m))) {
      this.topBlock.push(`let ${name} = ${expr};`);
      this.top.set(key, named);
      this.topVisible.add(name);
      this.headNames.add(name);
    } else {
      this.line(`let ${name} = ${expr};`);
      this.scopes[this.scopes.length - 1]!.set(key, named);
      if (this.mentionsRow(expr)) this.rowNames.add(name);
    }
    return named;
  }

  /** Whether an index expression, with named indices expanded, mentions the row loop index j. */
  private mentionsRow(expr: KExpr): boolean {
    return generated(expr).some((m) => m === 'j' || this.rowNames.has(m));
  }

  private hoistable(idx: readonly KExpr[]): boolean {
    return idx.every((s) => generated(s).every((m) => this.topVisible.has(m)));
  }

  /** Throws unless every buffer offset provably stays below its buffer's length (a compiler bug otherwise). */
  checkOffsets(): void {
    const where = `kernel %${this.root.id} (${this.root.op}, ${this.mode} template)`;
    for (const o of this.offsets) this.ix.check(o.index, o.length, () => `${where}, ${o.what}`);
  }

  /** The placeholder of a materialised node's buffer, for templates that address it themselves. */
  buffer(n: Node): string {
    this.reads.set(n.id, n);
    return `@B${n.id}@`;
  }

  /** Loads a materialised node's value at a multi-index. */
  load(n: Node, idx: readonly KExpr[]): KExpr {
    const key = `L${n.id}|${keyOf(idx)}`;
    const hit = this.memoGet(key);
    if (hit) return hit;
    this.reads.set(n.id, n);
    const off = linearize(this.ix, idx, n.shape);
    this.offsets.push({ index: off, length: numel(n.shape), what: `read of %${n.id}` });
    const buf = `@B${n.id}@`;
    // a fused MLP's sums are fixed point (compiler/fixedPoint.ts)
    if (n.op === 'fused_mlp') return this.bind(key, 'f32', fixedElement(buf, off, numel(n.shape)));
    const storage = n.op === 'weight' ? (n as Node<'weight'>).attrs.storage : 'f32';
    const vectored = this.vectorLoads ? this.vectorLoad(n, storage, off, key) : undefined;
    if (vectored) return vectored;
    // the storage formats' decoders (quantized.ts, halfStorage.ts) read the element's offset named once
    if (isQuantized(storage) || storage === 'f16' || storage === 'bf16') {
      const i = this.fresh('ix');
      this.line(`let ${i} = ${off};`);
      const at = K.v(i);
      const count = numel(n.shape);
      return this.bind(key, 'f32', isQuantized(storage) ? QUANT_FORMATS[storage].element(buf, at, count) : halfElement(storage, buf, at, count));
    }
    // bools are stored as u32
    const element = K.load(buf, off, numel(n.shape), n.dtype === 'bool' ? 'u32' : wgslType(n.dtype));
    return this.bind(key, n.dtype, n.dtype === 'bool' ? V.compare('!=', element, K.u32(0)) : element);
  }

  /**
   * Element `off` of an f32 or 16-bit node as a component of a vec4 load (memoised per vector), or undefined where
   * the offset is not a multiple of the vector's elements plus a constant, or the node's length not whole vectors.
   * A node of whole vectors spans whole vectors of its buffer (a temporary's buffer may be longer, never shorter),
   * so every element of it is reachable through the buffer bound as array<vec4<...>>, whose length is the buffer's
   * size in whole vectors.
   */
  private vectorLoad(n: Node, storage: string, off: KExpr, key: string): KExpr | undefined {
    const half = storage === 'f16' || storage === 'bf16';
    if (!(half || (storage === 'f32' && n.dtype === 'f32'))) return undefined;
    const per = half ? 8 : 4;
    const count = numel(n.shape);
    const f = affineOf(off);
    if (count % per !== 0 || [...f.terms.values()].some((t) => t.k % per !== 0)) return undefined;
    const lane = ((f.c % per) + per) % per;
    const at = build({ terms: new Map([...f.terms].map(([k, t]) => [k, { atom: t.atom, k: t.k / per }])), c: (f.c - lane) / per });
    const type: KType = half ? 'vec4<u32>' : 'vec4<f32>';
    const vkey = `VL${n.id}|${print(at)}`;
    let vec = this.memoGet(vkey);
    if (!vec) {
      vec = this.bindAs(vkey, type, K.load(`@V${n.id}@`, at, count / per, type));
      this.vectorIds.add(n.id);
    }
    const comp = (i: number) => V.field(vec, 'xyzw'[i] as 'x');
    if (!half) return this.bind(key, 'f32', comp(lane));
    const word = comp(lane >> 1);
    if (storage === 'bf16') return this.bind(key, 'f32', halfPair('bf16', word, (p) => this.fresh(p)).values[lane & 1]!);
    // f16: one unpack2x16float for both elements of a word
    const pkey = `VP${n.id}|${print(at)}|${lane >> 1}`;
    const pair = this.memoGet(pkey) ?? this.bindAs(pkey, 'vec2<f32>', V.unpack2x16float(word));
    return this.bind(key, 'f32', V.field(pair, lane & 1 ? 'y' : 'x'));
  }

  /** The value of node n at a multi-index of its shape, typed by its dtype. */
  value(n: Node, idx: readonly KExpr[]): KExpr {
    if (n.op === 'const') return wgslLiteral((n as Node<'const'>).attrs.value, n.dtype);
    const seeded = this.seededAll.get(n.id);
    if (seeded !== undefined) return seeded;
    const mapped = this.mapped.get(n.id);
    if (mapped) return mapped(idx);
    if (n !== this.root && this.isMat(n)) return this.load(n, idx);
    const key = `${n.id}|${keyOf(idx)}`;
    const hit = this.memoGet(key);
    if (hit) return hit;
    this.inlined.add(n.id);
    const def = OPS[n.op];
    switch (def.kind) {
      case 'elementwise': {
        const args = def.indexArgs ? def.indexArgs(idx, n.attrs as never) : n.inputs.map((i) => this.value(i, idx));
        return this.bind(key, n.dtype, def.wgsl(args, n.attrs as never, n.inputs, n.dtype));
      }
      case 'view': {
        if (def.indirect) {
          const [at, rest] = def.index(this.ix, [...idx], n.attrs as never, n.inputs, n) as [{ input: number; index: KExpr[] }, { input: number; index: KExpr[] }];
          const ids = n.inputs[at.input]!;
          const row = this.value(ids, at.index);
          const table = n.inputs[rest.input]!;
          // out-of-range rows read the last row (the CPU reference does the same)
          return this.value(table, [this.ix.min(this.ix.u32(row), table.shape[0]! - 1), ...rest.index]);
        }
        const cands = def.index(this.ix, [...idx], n.attrs as never, n.inputs, n).map((c) => ({ ...c, index: c.index.map((s) => this.indexVar(s)) }));
        if (cands.length === 1) return this.value(n.inputs[cands[0]!.input]!, cands[0]!.index);
        // concat: read every part at a clamped index, select by position along the axis
        const axis = (n as Node<'concat'>).attrs.axis;
        let acc: KExpr | undefined;
        let offset = 0;
        const offsets = n.inputs.map((x) => ((offset += x.shape[axis]!), offset - x.shape[axis]!));
        for (let c = cands.length - 1; c >= 0; c--) {
          const part = n.inputs[cands[c]!.input]!;
          const index = [...cands[c]!.index];
          index[axis] = this.ix.min(index[axis]!, part.shape[axis]! - 1);
          const v = this.value(part, index);
          acc = acc ? V.select(acc, v, V.compare('<', idx[axis]!, K.u32(offsets[c + 1]!))) : v;
        }
        return this.bind(key, n.dtype, acc!);
      }
      case 'reduce':
        return this.reduction(n, idx, key);
      default:
        return this.refuse({ kind: 'materialize', node: n, reason: `${n.op} is computed by its own kernel` }, n.dtype);
    }
  }

  /** Value of the reduced term at output index idx and reduction index k: the product of the table entry's operands. */
  private reduceOperand(n: Node, idx: readonly KExpr[], k: KExpr): KExpr {
    const def = OPS[n.op];
    const operands = def.kind === 'reduce' && def.operands ? def.operands(idx, k) : [{ input: 0, index: [...idx, k] }];
    const values = operands.map((o) => this.value(n.inputs[o.input]!, o.index));
    return values.reduce((a, b) => V.arith('*', a, b));
  }

  private reduction(n: Node, idx: readonly KExpr[], key: string): KExpr {
    const def = OPS[n.op];
    if (def.kind !== 'reduce') throw new Error('unreachable');
    const len = reduceLength(n);
    const type = wgslType(n.dtype);
    const init = wgslLiteral(def.identity === -Infinity && n.dtype !== 'f32' ? (n.dtype === 'i32' ? -2147483648 : 0) : def.identity, n.dtype);
    const finish = (acc: KExpr) => (def.finish ? def.finish.wgsl(acc, len) : acc);
    // workgroup arrays and accumulators the template text names
    const named = (text: string) => K.wgsl(text, type);
    const combine = (a: KExpr, b: KExpr) => def.combine.wgsl(a, b);
    if (len <= SEQ_MAX) {
      const acc = this.fresh('a');
      const k = this.bound(this.fresh('k'), len - 1);
      this.line(`var ${acc}: ${type} = ${init};`);
      const body = this.nested(() => {
        const v = this.reduceOperand(n, idx, k);
        this.line(`${acc} = ${combine(K.v(acc, type), v)};`);
      });
      this.line(`for (var ${k}: u32 = 0u; ${k} < ${len}u; ${k}++) {`);
      for (const l of body) this.line('  ' + l);
      this.line('}');
      return this.bind(key, n.dtype, finish(K.v(acc, type)));
    }
    if (this.mode !== 'row' && this.mode !== 'element' && this.mode !== 'matvec' && !this.cooperative) return this.refuse({ kind: 'materialize', node: n, reason: `a reduction of ${len} in a ${this.mode} kernel` }, n.dtype);
    if (!this.hoistable(idx)) {
      if (this.mode === 'row' && idx.some((s) => this.mentionsRow(s))) return this.refuse({ kind: 'row', node: n, reason: 'its index varies along the row' }, n.dtype);
      return this.refuse({ kind: 'materialize', node: n, reason: 'its index varies inside an enclosing loop' }, n.dtype);
    }
    // A cooperative phase at the kernel's top level: each thread strides over the axis, then a tree reduction.
    this.maxCoop = Math.max(this.maxCoop, len);
    this.redTypes.add(n.dtype);
    const saved = { blocks: this.blocks, scopes: this.scopes };
    this.blocks = [[]];
    this.scopes = [this.top];
    const result = this.fresh('r');
    try {
      const acc = this.fresh('a');
      const loop = this.stridedLoop('lid', len, this.workgroupSize, (k) => {
        const v = this.reduceOperand(n, idx, k);
        this.line(`${acc} = ${combine(K.v(acc, type), v)};`);
      });
      const red = `red_${n.dtype}`;
      this.phaseParts.push({ dtype: n.dtype, acc, init, loop, result, op: def.subgroup, combine, finish });
      this.phases.push(
        [
          `// reduce: ${n.op} over ${len}`,
          `var ${acc}: ${type} = ${init};`,
          ...loop,
          ...(this.subgroups ? this.subgroupCombine(def.subgroup, acc, red, type, init, combine) : [
          `${red}[lid] = ${acc};`,
          `workgroupBarrier();`,
          `for (var s: u32 = WG / 2u; s > 0u; s >>= 1u) {`,
          `  if (lid < s) { ${red}[lid] = ${combine(named(`${red}[lid]`), named(`${red}[lid + s]`))}; }`,
          `  workgroupBarrier();`,
          `}`,
          ]),
          `let ${result}: ${type} = ${finish(named(`${red}[0]`))};`,
          `workgroupBarrier();`,
        ].join('\n'),
      );
    } finally {
      this.blocks = saved.blocks;
      this.scopes = saved.scopes;
    }
    const value = K.v(result, type);
    this.top.set(key, value);
    this.topVisible.add(result);
    return value;
  }

  /** Each subgroup combines its lanes, lane 0 posts the partial, then every thread folds the partials into red[0]'s place. */
  private subgroupCombine(op: string, acc: string, red: string, type: KType, init: KExpr, combine: (a: KExpr, b: KExpr) => KExpr): string[] {
    const part = this.fresh('a');
    const named = (text: string) => K.wgsl(text, type);
    return [
      `let ${part} = ${op}(${acc});`,
      `if (sg_lane == 0u) { ${red}[lid / sg_size] = ${part}; }`,
      `workgroupBarrier();`,
      `var ${acc}_all: ${type} = ${init};`,
      `for (var s: u32 = 0u; s < (WG + sg_size - 1u) / sg_size; s++) { ${acc}_all = ${combine(named(`${acc}_all`), named(`${red}[s]`))}; }`,
      `workgroupBarrier();`,
      `${red}[0] = ${acc}_all;`,
    ];
  }

  /**
   * The phases with every run of f32 phases that do not read each other's results merged: their loops one after
   * the other (loads in flight together), then one reduction round for all of them through `shared` (a workgroup
   * array of `mergedFloats(count, wg)` floats), instead of a round with its barriers per phase: a batch-8 matvec's
   * RMSNorm computes 8 row statistics. A run of one phase keeps its own text.
   */
  mergedPhases(shared: string, wg: number): { lines: string[]; phases: number } {
    const lines: string[] = [];
    let run: number[] = [];
    let most = 0;
    const flush = () => {
      if (run.length === 1) lines.push(this.phases[run[0]!]!);
      else if (run.length > 1) lines.push(this.mergedRound(run.map((i) => this.phaseParts[i]!), shared, wg).join('\n'));
      most = Math.max(most, run.length);
      run = [];
    };
    this.phaseParts.forEach((p, i) => {
      const reads = (j: number) => new RegExp(`\\b${this.phaseParts[j]!.result}\\b`).test(p.loop.join('\n'));
      if (p.dtype !== 'f32' || run.some(reads)) flush();
      if (p.dtype !== 'f32') lines.push(this.phases[i]!);
      else run.push(i);
    });
    flush();
    return { lines, phases: most > 1 ? most : 0 };
  }

  /** Floats of the shared array mergedPhases needs for `phases` phases merged in a workgroup of `wg`. */
  mergedFloats(phases: number, wg: number): number {
    return phases * (this.subgroups ? wg / 4 : wg); // subgroups hold at least 4 lanes
  }

  private mergedRound(parts: PhaseParts[], shared: string, wg: number): string[] {
    const slots = this.mergedFloats(1, wg);
    const named = (text: string) => K.wgsl(text, 'f32');
    const out = [`// reduce ${parts.length} phases together`];
    for (const p of parts) out.push(`var ${p.acc}: f32 = ${p.init};`);
    out.push(...mergeLoops(parts.map((p) => p.loop)));
    if (this.subgroups) {
      parts.forEach((p) => out.push(`let ${p.acc}_sg = ${p.op}(${p.acc});`));
      out.push(`if (sg_lane == 0u) {`, ...parts.map((p, j) => `  ${shared}[${j * slots}u + lid / sg_size] = ${p.acc}_sg;`), `}`, `workgroupBarrier();`);
      for (const [j, p] of parts.entries()) {
        out.push(`var ${p.acc}_all: f32 = ${p.init};`);
        out.push(`for (var s: u32 = 0u; s < (WG + sg_size - 1u) / sg_size; s++) { ${p.acc}_all = ${p.combine(named(`${p.acc}_all`), named(`${shared}[${j * slots}u + s]`))}; }`);
      }
    } else {
      parts.forEach((p, j) => out.push(`${shared}[${j * slots}u + lid] = ${p.acc};`));
      out.push(`workgroupBarrier();`, `for (var s: u32 = WG / 2u; s > 0u; s >>= 1u) {`, `  if (lid < s) {`);
      parts.forEach((p, j) => out.push(`    ${shared}[${j * slots}u + lid] = ${p.combine(named(`${shared}[${j * slots}u + lid]`), named(`${shared}[${j * slots}u + lid + s]`))};`));
      out.push(`  }`, `  workgroupBarrier();`, `}`);
      parts.forEach((p, j) => out.push(`let ${p.acc}_all = ${shared}[${j * slots}u];`));
    }
    for (const p of parts) out.push(`let ${p.result}: f32 = ${p.finish(named(`${p.acc}_all`))};`);
    out.push(`workgroupBarrier();`); // the shared array is read again by the next round or the template
    return out;
  }

  /** The line writing a value (or a name the template's text declared) at an offset of n's buffer. */
  store(n: Node, off: KExpr, value: KExpr | string): string {
    this.offsets.push({ index: off, length: numel(n.shape), what: `write of %${n.id}` });
    const v = typeof value === 'string' ? K.wgsl(value, wgslType(n.dtype)) : value;
    return `@B${n.id}@[${off}] = ${n.dtype === 'bool' ? V.select(K.u32(0), K.u32(1), v) : v};`;
  }

  topLines(): string[] {
    return this.blocks[0]!;
  }
}

/**
 * Strided loops over the same range as one loop (each body with its index renamed to the first's), so that every
 * body's loads of a trip are in flight together; loops written out trip by trip, or over different ranges, stay
 * one after the other.
 */
function mergeLoops(loops: string[][]): string[] {
  const header = /^for \(var (k\d+): u32 = (.+?); \1 < (.+?); \1 \+= (.+?)\) \{$/;
  const heads = loops.map((l) => header.exec(l[0]!));
  const same = heads.every((h) => h && h[2] === heads[0]![2] && h[3] === heads[0]![3] && h[4] === heads[0]![4]);
  if (!same) return loops.flat();
  const k = heads[0]![1]!;
  const bodies = loops.flatMap((l, i) => l.slice(1, -1).map((line) => line.replace(new RegExp(`\\b${heads[i]![1]}\\b`, 'g'), k)));
  return [loops[0]![0]!, ...bodies, '}'];
}

/** A cooperative phase's parts: its accumulator, strided loop and how its partials combine and finish. */
interface PhaseParts {
  dtype: DType;
  acc: string;
  init: KExpr;
  loop: string[];
  result: string;
  op: string;
  combine: (a: KExpr, b: KExpr) => KExpr;
  finish: (acc: KExpr) => KExpr;
}

export function assemble(e: Emitter, mainLines: string[], wg: number, decls: string[] = []): KernelText {
  const shared = [...e.redTypes].map((t) => `var<workgroup> red_${t}: array<${wgslType(t)}, ${wg}>;`);
  return { decls: [...shared, ...decls], main: mainLines, wg, subgroups: e.subgroups && e.redTypes.size > 0 };
}

/**
 * The WGSL module of a kernel text, its buffers declared by `bindings` (the `@BINDINGS@` of older callers);
 * `opaqueLoops` bounds its sequential loops by a value the shader compiler cannot fold (opaqueLoops.ts).
 */
export function renderKernel(t: KernelText, bindings: string, opaqueLoops = false): string {
  const opaque = opaqueLoops ? opaqueLoopBounds(t.main) : undefined;
  const main = [
    `@compute @workgroup_size(${t.wg})`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${t.subgroups ? ', @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32' : ''}${opaque?.parameter ?? ''}) {`,
    ...(opaque?.main ?? t.main).map((l) => '  ' + l.replace(/\n/g, '\n  ')),
    '}',
  ];
  return [
    ...(t.f16 ? ['enable f16;'] : []),
    ...(t.subgroups ? ['enable subgroups;'] : []),
    // its loads sit under `if (k > 0u)` of a loop counter, uniform in fact though not by WGSL's analysis
    ...(t.subgroupMatrix ? ['enable chromium_experimental_subgroup_matrix;', 'diagnostic(off, chromium.subgroup_matrix_uniformity);'] : []),
    bindings,
    // only the helpers this kernel calls: every declared function is parsed and compiled by the adapter
    ...wgslHelpersFor([...t.decls, ...main].join('\n')),
    `const WG: u32 = ${t.wg}u;`,
    ...t.decls,
    ...main,
    '',
  ].join('\n');
}

export const nextPow2 = (n: number) => 1 << Math.ceil(Math.log2(Math.max(1, n)));
export function finish(e: Emitter, mode: KernelMode, text: KernelText, groups: number): LoweredKernel {
  if (!e.refusal) e.checkOffsets(); // a refused kernel's text is discarded
  return {
    root: e.root,
    mode,
    text,
    reads: [...e.reads.values()],
    write: e.root,
    workgroupSize: text.wg,
    groups,
    nodes: [e.root.id, ...[...e.inlined].filter((id) => id !== e.root.id)],
    ...(e.vectorIds.size ? { vectorReads: [...e.vectorIds] } : {}),
    ...(e.refusal ? { refusal: e.refusal } : {}),
  };
}

