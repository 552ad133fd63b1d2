// Lowers one kernel (a materialised root and the inlined expression tree under it) to WGSL.
//
// Every inlined node is an expression of the output index. Reductions become loops: short ones (<= SEQ_MAX)
// sequential in place; long ones cooperative across the workgroup, hoisted into phases that run before the
// kernel's main body. A kernel is then one of:
//   map      one thread per output element (no long reductions)
//   row      one workgroup per output row: phases reduce along the row (norms, softmax), then threads write it
//   element  one workgroup per output element: phases are the reductions themselves (matvec, dot products)
//   scatter  one thread per value written into a state
//   scan     one thread per line of a running sum
// Buffers are written as placeholders `@B<nodeId>@`, bound once the memory plan is known.
import { type DType, type Node, numel } from '../ir.ts';
import { delinearize, linearize, wgslIndex } from '../indexAlgebra.ts';
import { OPS, WGSL_HELPERS, wgslLiteral, wgslType } from '../ops.ts';

/** Longest reduction inlined as a sequential loop; longer ones are computed cooperatively by a workgroup. */
export const SEQ_MAX = 16;
const MAP_WG = 256;

export class NeedsMaterialize extends Error {
  constructor(readonly node: Node, reason: string) {
    super(`materialise %${node.id} (${node.op}): ${reason}`);
  }
}
class RowModeFails extends Error {}

export type KernelMode = 'map' | 'row' | 'element' | 'scatter' | 'scan' | 'attention' | 'tiled';

export interface LoweredKernel {
  root: Node;
  mode: KernelMode;
  /** WGSL with `@B<id>@` placeholders and `@BINDINGS@` for the declarations. */
  body: string;
  reads: Node[];
  write: Node;
  workgroupSize: number;
  groups: number;
  nodes: number[];
}

export function reduceLength(n: Node): number {
  const x = n.inputs[0]!;
  return x.shape[x.shape.length - 1]!;
}

export function isReduction(n: Node): boolean {
  return OPS[n.op].kind === 'reduce';
}

/** Whether a long reduction is reachable from `n` without crossing a materialised node. */
function hasLongReduction(n: Node, isMat: (n: Node) => boolean, seen = new Set<number>()): boolean {
  if (seen.has(n.id)) return false;
  seen.add(n.id);
  for (const i of n.inputs) {
    if (isMat(i)) continue;
    if (isReduction(i) && reduceLength(i) > SEQ_MAX) return true;
    if (hasLongReduction(i, isMat, seen)) return true;
  }
  return false;
}

// Generated variable names: values v*, load offsets and named indices ix* (not i*: `i32` is a type), accumulators a*,
// loop indices k*, hoisted results r*, output indices o*.
const TOKEN = /\b[vkaro]\d+\b|\bix\d+\b|\bj\b|\bks\b|\blid\b/g;

class Emitter {
  private blocks: string[][] = [[]];
  private scopes: Map<string, string>[] = [new Map()];
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
  readonly reads = new Map<number, Node>();
  readonly inlined = new Set<number>();
  readonly redTypes = new Set<DType>();
  maxCoop = 0;
  private counter = 0;

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
  declareTop(name: string, expr: string): string {
    this.line(`let ${name} = ${expr};`);
    this.topVisible.add(name);
    this.headNames.add(name);
    return name;
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

  /** Makes value(n, idx) return `expr` in the current scope (a tiled kernel's accumulator for its matmul). */
  seed(n: Node, idx: readonly string[], expr: string): void {
    this.scopes[this.scopes.length - 1]!.set(`${n.id}|${idx.join(',')}`, expr);
  }

  private memoGet(key: string): string | undefined {
    for (let i = this.scopes.length - 1; i >= 0; i--) {
      const v = this.scopes[i]!.get(key);
      if (v !== undefined) return v;
    }
    return undefined;
  }
  private bind(key: string, type: DType, expr: string): string {
    const v = this.fresh('v');
    this.line(`let ${v}: ${wgslType(type)} = ${expr};`);
    this.scopes[this.scopes.length - 1]!.set(key, v);
    return v;
  }

  /**
   * Names a long index expression once. Each reshape re-derives every output coordinate from the whole linear
   * offset, so without names index strings grow geometrically along view chains (an SSD mixer kernel reached
   * 600 KB of WGSL, minutes of shader compilation on lavapipe). A name built only from output coordinates goes to
   * the top block (before the phases) and stays hoistable; any other goes to the current block.
   */
  indexVar(expr: string): string {
    if (expr.length <= 32) return expr;
    const key = `I|${expr}`;
    const hit = this.memoGet(key);
    if (hit) return hit;
    const name = this.fresh('ix');
    if ([...expr.matchAll(TOKEN)].every((m) => this.headNames.has(m[0]))) {
      this.topBlock.push(`let ${name} = ${expr};`);
      this.top.set(key, name);
      this.topVisible.add(name);
      this.headNames.add(name);
    } else {
      this.line(`let ${name} = ${expr};`);
      this.scopes[this.scopes.length - 1]!.set(key, name);
      if (this.mentionsRow(expr)) this.rowNames.add(name);
    }
    return name;
  }

  /** Whether an index expression, with named indices expanded, mentions the row loop index j. */
  private mentionsRow(expr: string): boolean {
    return /\bj\b/.test(expr) || [...expr.matchAll(TOKEN)].some((m) => this.rowNames.has(m[0]));
  }

  private hoistable(idx: readonly string[]): boolean {
    for (const s of idx) for (const m of s.matchAll(TOKEN)) if (!this.topVisible.has(m[0])) return false;
    return true;
  }

  /** Loads a materialised node's value at a multi-index. */
  load(n: Node, idx: readonly string[]): string {
    const key = `L${n.id}|${idx.join(',')}`;
    const hit = this.memoGet(key);
    if (hit) return hit;
    this.reads.set(n.id, n);
    const off = linearize(wgslIndex, idx, n.shape);
    const buf = `@B${n.id}@`;
    const storage = n.op === 'weight' ? (n as Node<'weight'>).attrs.storage : 'f32';
    if (storage === 'f16' || storage === 'bf16') {
      const i = this.fresh('ix');
      this.line(`let ${i} = ${off};`);
      const expr =
        storage === 'f16'
          ? `unpack2x16float(${buf}[${i} >> 1u])[${i} & 1u]`
          : `bitcast<f32>(select(${buf}[${i} >> 1u] << 16u, ${buf}[${i} >> 1u] & 0xffff0000u, (${i} & 1u) == 1u))`;
      return this.bind(key, 'f32', expr);
    }
    return this.bind(key, n.dtype, n.dtype === 'bool' ? `(${buf}[${off}] != 0u)` : `${buf}[${off}]`);
  }

  /** The WGSL value of node n at a multi-index of its shape. */
  value(n: Node, idx: readonly string[]): string {
    if (n.op === 'const') return wgslLiteral((n as Node<'const'>).attrs.value, n.dtype);
    if (n !== this.root && this.isMat(n)) return this.load(n, idx);
    const key = `${n.id}|${idx.join(',')}`;
    const hit = this.memoGet(key);
    if (hit) return hit;
    this.inlined.add(n.id);
    const def = OPS[n.op];
    switch (def.kind) {
      case 'elementwise': {
        const args = n.op === 'iota' ? [idx[(n as Node<'iota'>).attrs.axis]!] : n.inputs.map((i) => this.value(i, idx));
        return this.bind(key, n.dtype, def.wgsl(args, n.attrs as never, n.inputs, n.dtype));
      }
      case 'view': {
        if (n.op === 'gather') {
          const k = n.inputs[1]!.shape.length;
          const row = this.value(n.inputs[1]!, idx.slice(0, k));
          // out-of-range rows read the last row (the CPU reference does the same)
          return this.value(n.inputs[0]!, [`min(u32(${row}), ${n.inputs[0]!.shape[0]! - 1}u)`, ...idx.slice(k)]);
        }
        const cands = def.index(wgslIndex, [...idx], n.attrs as never, n.inputs, n).map((c) => ({ ...c, index: c.index.map((s) => this.indexVar(s)) }));
        if (cands.length === 1) return this.value(n.inputs[cands[0]!.input]!, cands[0]!.index);
        // concat: read every part at a clamped index, select by position along the axis
        const axis = (n as Node<'concat'>).attrs.axis;
        let acc = '';
        let offset = 0;
        const offsets = n.inputs.map((x) => ((offset += x.shape[axis]!), offset - x.shape[axis]!));
        for (let c = cands.length - 1; c >= 0; c--) {
          const part = n.inputs[cands[c]!.input]!;
          const index = [...cands[c]!.index];
          index[axis] = `min(${index[axis]}, ${part.shape[axis]! - 1}u)`;
          const v = this.value(part, index);
          acc = c === cands.length - 1 ? v : `select(${acc}, ${v}, ${idx[axis]} < ${offsets[c + 1]}u)`;
        }
        return this.bind(key, n.dtype, acc);
      }
      case 'reduce':
        return this.reduction(n, idx, key);
      default:
        throw new NeedsMaterialize(n, `${n.op} is computed by its own kernel`);
    }
  }

  /** Value of the reduced operand at output index idx and reduction index k. */
  private reduceOperand(n: Node, idx: readonly string[], k: string): string {
    if (n.op === 'matmul') {
      const [a, b] = n.inputs as [Node, Node];
      const batch = idx.slice(0, -2);
      const m = idx[idx.length - 2]!;
      const col = idx[idx.length - 1]!;
      const av = this.value(a, [...batch, m, k]);
      const bv = this.value(b, [...batch, k, col]);
      return `(${av} * ${bv})`;
    }
    return this.value(n.inputs[0]!, [...idx, k]);
  }

  private reduction(n: Node, idx: readonly string[], key: string): string {
    const def = OPS[n.op];
    if (def.kind !== 'reduce') throw new Error('unreachable');
    const len = n.op === 'matmul' ? n.inputs[0]!.shape[n.inputs[0]!.shape.length - 1]! : reduceLength(n);
    const type = wgslType(n.dtype);
    const init = wgslLiteral(def.identity === -Infinity && n.dtype !== 'f32' ? (n.dtype === 'i32' ? -2147483648 : 0) : def.identity, n.dtype);
    const finish = (acc: string) => (def.finish ? def.finish.wgsl(acc, len) : acc);
    if (len <= SEQ_MAX) {
      const acc = this.fresh('a');
      const k = this.fresh('k');
      this.line(`var ${acc}: ${type} = ${init};`);
      const body = this.nested(() => {
        const v = this.reduceOperand(n, idx, k);
        this.line(`${acc} = ${def.combine.wgsl(acc, v)};`);
      });
      this.line(`for (var ${k}: u32 = 0u; ${k} < ${len}u; ${k}++) {`);
      for (const l of body) this.line('  ' + l);
      this.line('}');
      return this.bind(key, n.dtype, finish(acc));
    }
    if (this.mode !== 'row' && this.mode !== 'element') throw new NeedsMaterialize(n, `a reduction of ${len} in a ${this.mode} kernel`);
    if (!this.hoistable(idx)) {
      if (this.mode === 'row' && idx.some((s) => this.mentionsRow(s))) throw new RowModeFails();
      throw new NeedsMaterialize(n, 'its index varies inside an enclosing loop');
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
      const k = this.fresh('k');
      const body = this.nested(() => {
        const v = this.reduceOperand(n, idx, k);
        this.line(`${acc} = ${def.combine.wgsl(acc, v)};`);
      });
      const red = `red_${n.dtype}`;
      this.phases.push(
        [
          `// reduce %${n.id} (${n.op} over ${len})`,
          `var ${acc}: ${type} = ${init};`,
          `for (var ${k}: u32 = lid; ${k} < ${len}u; ${k} += WG) {`,
          ...body.map((l) => '  ' + l),
          `}`,
          ...(this.subgroups ? this.subgroupCombine(n.op === 'rmax' ? 'subgroupMax' : 'subgroupAdd', acc, red, type, init, (a, b) => def.combine.wgsl(a, b)) : [
          `${red}[lid] = ${acc};`,
          `workgroupBarrier();`,
          `for (var s: u32 = WG / 2u; s > 0u; s >>= 1u) {`,
          `  if (lid < s) { ${red}[lid] = ${def.combine.wgsl(`${red}[lid]`, `${red}[lid + s]`)}; }`,
          `  workgroupBarrier();`,
          `}`,
          ]),
          `let ${result}: ${type} = ${finish(`${red}[0]`)};`,
          `workgroupBarrier();`,
        ].join('\n'),
      );
    } finally {
      this.blocks = saved.blocks;
      this.scopes = saved.scopes;
    }
    this.top.set(key, result);
    this.topVisible.add(result);
    return result;
  }

  /** Each subgroup combines its lanes, lane 0 posts the partial, then every thread folds the partials into red[0]'s place. */
  private subgroupCombine(op: string, acc: string, red: string, type: string, init: string, combine: (a: string, b: string) => string): string[] {
    const part = this.fresh('a');
    return [
      `let ${part} = ${op}(${acc});`,
      `if (sg_lane == 0u) { ${red}[lid / sg_size] = ${part}; }`,
      `workgroupBarrier();`,
      `var ${acc}_all: ${type} = ${init};`,
      `for (var s: u32 = 0u; s < (WG + sg_size - 1u) / sg_size; s++) { ${acc}_all = ${combine(`${acc}_all`, `${red}[s]`)}; }`,
      `workgroupBarrier();`,
      `${red}[0] = ${acc}_all;`,
    ];
  }

  store(n: Node, off: string, value: string): string {
    return `@B${n.id}@[${off}] = ${n.dtype === 'bool' ? `select(0u, 1u, ${value})` : value};`;
  }

  topLines(): string[] {
    return this.blocks[0]!;
  }
}

function assemble(e: Emitter, mainLines: string[], wg: number): string {
  const shared = [...e.redTypes].map((t) => `var<workgroup> red_${t}: array<${wgslType(t)}, ${wg}>;`);
  const sg = e.subgroups && e.redTypes.size > 0;
  return [
    ...(sg ? ['enable subgroups;'] : []),
    '@BINDINGS@',
    WGSL_HELPERS.trim(),
    `const WG: u32 = ${wg}u;`,
    ...shared,
    `@compute @workgroup_size(${wg})`,
    `fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${sg ? ', @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32' : ''}) {`,
    ...mainLines.map((l) => '  ' + l.replace(/\n/g, '\n  ')),
    '}',
    '',
  ].join('\n');
}

const nextPow2 = (n: number) => 1 << Math.ceil(Math.log2(Math.max(1, n)));

export interface LowerOptions {
  /** The device has subgroup operations (WGSL `enable subgroups`). */
  subgroups?: boolean;
}

export function lowerKernel(root: Node, isMat: (n: Node) => boolean, options: LowerOptions = {}): LoweredKernel {
  if (root.op === 'scatter') return lowerScatter(root, isMat);
  if (root.op === 'cumsum') return lowerScan(root, isMat);
  if (root.op === 'attention') return lowerAttention(root, isMat);
  const mms = tiledMatmulsOf(root, isMat);
  if (mms) return lowerTiledMatmul(root, mms, isMat);
  // a many-row matmul that cannot be tiled here (read through views, e.g. RoPE's halves) gets a tiled kernel of its own
  const big = bigMatmulUnder(root, isMat);
  if (big) throw new NeedsMaterialize(big, 'a many-row matmul is read through views: it gets its own tiled kernel');
  const rootIsLong = isReduction(root) && reduceLength(root) > SEQ_MAX;
  if (!rootIsLong && !hasLongReduction(root, isMat)) return lowerMap(root, isMat);
  const last = root.shape[root.shape.length - 1] ?? 1;
  if (root.shape.length >= 1 && last > 1) {
    try {
      return lowerCooperative(root, isMat, 'row', options);
    } catch (err) {
      if (!(err instanceof RowModeFails)) throw err;
    }
  }
  return lowerCooperative(root, isMat, 'element', options);
}

function finish(e: Emitter, mode: KernelMode, body: string, wg: number, groups: number): LoweredKernel {
  return {
    root: e.root,
    mode,
    body,
    reads: [...e.reads.values()],
    write: e.root,
    workgroupSize: wg,
    groups,
    nodes: [e.root.id, ...[...e.inlined].filter((id) => id !== e.root.id)],
  };
}

function lowerMap(root: Node, isMat: (n: Node) => boolean): LoweredKernel {
  const e = new Emitter(root, isMat, 'map');
  const n = numel(root.shape);
  const wg = Math.min(MAP_WG, Math.max(32, nextPow2(n)));
  e.line(`let t = (wid.x + wid.y * NX) * WG + lid;`);
  e.line(`if (t >= ${n}u) { return; }`);
  const idx = delinearize(wgslIndex, 't', root.shape).map((s, d) => e.declareTop(`o${d}`, s));
  const v = e.value(root, idx);
  e.line(e.store(root, 't', v));
  return finish(e, 'map', assemble(e, e.topLines(), wg), wg, Math.ceil(n / wg));
}

function lowerCooperative(root: Node, isMat: (n: Node) => boolean, mode: 'row' | 'element', options: LowerOptions): LoweredKernel {
  const e = new Emitter(root, isMat, mode, options.subgroups ?? false);
  const rowLen = mode === 'row' ? root.shape[root.shape.length - 1]! : 1;
  const groups = numel(root.shape) / rowLen;
  const groupShape = mode === 'row' ? root.shape.slice(0, -1) : root.shape;
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const outer = delinearize(wgslIndex, 'gi', groupShape).map((s, d) => e.declareTop(`o${d}`, s));
  let main: string[];
  if (mode === 'row') {
    main = e.nested(() => {
      const v = e.value(root, [...outer, 'j']);
      e.line(e.store(root, `gi * ${rowLen}u + j`, v));
    });
    main = [`for (var j: u32 = lid; j < ${rowLen}u; j += WG) {`, ...main.map((l) => '  ' + l), '}'];
  } else {
    main = e.nested(() => {
      const v = e.value(root, outer);
      e.line(`if (lid == 0u) { ${e.store(root, 'gi', v)} }`);
    });
  }
  // read after the body is built: index names hoisted to the top block (indexVar) belong before the phases
  const head = [...e.topLines()];
  const wg = Math.min(256, Math.max(32, nextPow2(Math.max(e.maxCoop, rowLen))));
  return finish(e, mode, assemble(e, [...head, ...e.phases, ...main], wg), wg, groups);
}

function lowerScatter(root: Node, isMat: (n: Node) => boolean): LoweredKernel {
  const [target, indices, values] = root.inputs as [Node, Node, Node];
  const e = new Emitter(root, (n) => n === target || isMat(n), 'scatter');
  const n = numel(values.shape);
  const wg = Math.min(MAP_WG, Math.max(32, nextPow2(n)));
  e.line(`let t = (wid.x + wid.y * NX) * WG + lid;`);
  e.line(`if (t >= ${n}u) { return; }`);
  const vIdx = delinearize(wgslIndex, 't', values.shape).map((s, d) => e.declareTop(`o${d}`, s));
  const k = indices.shape.length;
  const row = e.value(indices, vIdx.slice(0, k));
  e.line(`let row = u32(${row});`);
  e.line(`if (row >= ${target.shape[0]}u) { return; }`);
  const v = e.value(values, vIdx);
  e.line(e.store(root, linearize(wgslIndex, ['row', ...vIdx.slice(k)], target.shape), v));
  const lowered = finish(e, 'scatter', assemble(e, e.topLines(), wg), wg, Math.ceil(n / wg));
  // Rows of the target are written in place: values (or indices) that read that same version would race with
  // the writes, and the target has no binding of its own here. Give the reader a buffer first.
  if (lowered.reads.includes(target)) throw new NeedsMaterialize(isMat(values) ? indices : values, 'scatter values read the state being written');
  lowered.reads = lowered.reads.filter((r) => r !== target);
  return lowered;
}

function lowerScan(root: Node, isMat: (n: Node) => boolean): LoweredKernel {
  const e = new Emitter(root, isMat, 'scan');
  const len = root.shape[root.shape.length - 1]!;
  const lines = numel(root.shape) / len;
  const wg = Math.min(MAP_WG, Math.max(32, nextPow2(lines)));
  e.line(`let t = (wid.x + wid.y * NX) * WG + lid;`);
  e.line(`if (t >= ${lines}u) { return; }`);
  const outer = delinearize(wgslIndex, 't', root.shape.slice(0, -1)).map((s, d) => e.declareTop(`o${d}`, s));
  e.line(`var acc: ${wgslType(root.dtype)} = ${wgslLiteral(0, root.dtype)};`);
  const body = e.nested(() => {
    const v = e.value(root.inputs[0]!, [...outer, 'ks']);
    e.line(`acc = acc + ${v};`);
    e.line(e.store(root, `t * ${len}u + ks`, 'acc'));
  });
  e.line(`for (var ks: u32 = 0u; ks < ${len}u; ks++) {`);
  for (const l of body) e.line('  ' + l);
  e.line('}');
  return finish(e, 'scan', assemble(e, e.topLines(), wg), wg, Math.ceil(lines / wg));
}

/**
 * Fused attention, one workgroup per query row: each thread walks its share of the keys below the row's limit
 * (a tiled variant, one key per thread with the softmax in shared memory, measured 150 us against this kernel's
 * 50 us per decode call of llama-400m on an H100, so it was dropped)
 * (read from the device, so the cost follows the real length, not the capacity) with an online softmax, then
 * the workgroup merges the partial maxima, sums and value accumulators in shared memory.
 */
function lowerAttention(root: Node, isMat: (n: Node) => boolean): LoweredKernel {
  const [q, kT, v, mask, limit] = root.inputs as [Node, Node, Node, Node, Node];
  const { scale, softcap } = (root as Node<'attention'>).attrs;
  const e = new Emitter(root, isMat, 'attention');
  const r = root.shape.length;
  const [M, Dv] = [root.shape[r - 2]!, root.shape[r - 1]!];
  const D = q.shape[r - 1]!;
  const E = kT.shape[r - 1]!;
  const rows = numel(root.shape) / Dv;
  const wg = Math.max(8, Math.min(64, 1 << Math.floor(Math.log2(4096 / Dv))));
  // loop indices named like the emitter's own (k<n>), so its index naming and hoisting checks see them
  const [kd, kc, kv] = [e.fresh('k'), e.fresh('k'), e.fresh('k')];
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${rows}u) { return; }`);
  const outer = delinearize(wgslIndex, 'gi', root.shape.slice(0, -1)).map((s, d) => e.declareTop(`o${d}`, s));
  const batch = outer.slice(0, -1);
  const m = outer[outer.length - 1]!;
  // the query row, once, into registers
  e.line(`var qv: array<f32, ${D}>;`);
  const qLoad = e.nested(() => e.line(`qv[${kd}] = ${e.value(q, [...batch, m, kd])};`));
  e.line(`for (var ${kd}: u32 = 0u; ${kd} < ${D}u; ${kd}++) {`);
  qLoad.forEach((l) => e.line('  ' + l));
  e.line('}');
  const lim = e.value(limit, [...batch, m]);
  e.line(`let lim = min(${E}u, u32(max(${lim}, 0)));`);
  e.line(`var mi: f32 = -3.0e38;`);
  e.line(`var li: f32 = 0.0;`);
  e.line(`var acc: array<f32, ${Dv}>;`);
  const body = e.nested(() => {
    const ok = e.value(mask, [...batch, m, kc]);
    e.line(`if (!${ok}) { continue; }`);
    e.line(`var sc: f32 = 0.0;`);
    const dot = e.nested(() => e.line(`sc = sc + qv[${kd}] * ${e.value(kT, [...batch, kd, kc])};`));
    e.line(`for (var ${kd}: u32 = 0u; ${kd} < ${D}u; ${kd}++) {`);
    dot.forEach((l) => e.line('  ' + l));
    e.line('}');
    e.line(`sc = sc * ${wgslLiteral(scale, 'f32')};`);
    if (softcap) e.line(`sc = strata_tanh(sc / ${wgslLiteral(softcap, 'f32')}) * ${wgslLiteral(softcap, 'f32')};`);
    e.line(`let mn = max(mi, sc);`);
    e.line(`let corr = exp(mi - mn);`);
    e.line(`let p = exp(sc - mn);`);
    e.line(`li = li * corr + p;`);
    e.line(`mi = mn;`);
    const acc = e.nested(() => e.line(`acc[${kv}] = acc[${kv}] * corr + p * ${e.value(v, [...batch, kc, kv])};`));
    e.line(`for (var ${kv}: u32 = 0u; ${kv} < ${Dv}u; ${kv}++) {`);
    acc.forEach((l) => e.line('  ' + l));
    e.line('}');
  });
  e.line(`for (var ${kc}: u32 = lid; ${kc} < lim; ${kc} += WG) {`);
  body.forEach((l) => e.line('  ' + l));
  e.line('}');
  const out = `@B${root.id}@`;
  [
    `att_m[lid] = mi;`,
    `workgroupBarrier();`,
    `for (var s: u32 = WG / 2u; s > 0u; s >>= 1u) { if (lid < s) { att_m[lid] = max(att_m[lid], att_m[lid + s]); } workgroupBarrier(); }`,
    `let gm = att_m[0];`,
    `let own = select(0.0, exp(mi - gm), li > 0.0);`,
    `workgroupBarrier();`,
    `att_m[lid] = li * own;`,
    `workgroupBarrier();`,
    `for (var s: u32 = WG / 2u; s > 0u; s >>= 1u) { if (lid < s) { att_m[lid] = att_m[lid] + att_m[lid + s]; } workgroupBarrier(); }`,
    `let gl = att_m[0];`,
    `for (var kv: u32 = 0u; kv < ${Dv}u; kv++) { att_acc[lid * ${Dv}u + kv] = acc[kv] * own; }`,
    `workgroupBarrier();`,
    `for (var kv: u32 = lid; kv < ${Dv}u; kv += WG) {`,
    `  var total: f32 = 0.0;`,
    `  for (var t: u32 = 0u; t < WG; t++) { total = total + att_acc[t * ${Dv}u + kv]; }`,
    `  ${out}[gi * ${Dv}u + kv] = select(0.0, total / gl, gl > 0.0);`,
    `}`,
  ].forEach((l) => e.line(l));
  const body2 = assemble(e, e.topLines(), wg).replace(
    `@compute`,
    `var<workgroup> att_m: array<f32, ${wg}>;\nvar<workgroup> att_acc: array<f32, ${wg * Dv}>;\n@compute`,
  );
  void M;
  return finish(e, 'attention', body2, wg, rows);
}

const TILE_K = 16;
/** Workgroups below which a 64x64 tiling leaves most of a large GPU idle, and 32x32 tiles are used instead. */
const TILE_MIN_GROUPS = 256;
const TILE_MIN_ROWS = 32;

/**
 * The matmuls a tiled kernel would compute for `root`: the root itself, or the long matmuls under an elementwise
 * epilogue at the root's own index that share their left operand (residual add; SwiGLU's gate and up). Only for
 * enough rows to share weight tiles (prefill).
 */
function tiledMatmulsOf(root: Node, isMat: (n: Node) => boolean): Node[] | undefined {
  const r = root.shape.length;
  if (r < 2 || root.shape[r - 2]! < TILE_MIN_ROWS || root.shape[r - 1]! < 16) return undefined;
  if (root.op === 'matmul') return reduceLength(root) > SEQ_MAX ? [root] : undefined;
  const found = new Map<number, Node>();
  let other = false;
  const walk = (n: Node): void => {
    if (n.op === 'matmul' && reduceLength(n) > SEQ_MAX && n.shape.join() === root.shape.join()) {
      found.set(n.id, n);
      return;
    }
    if (OPS[n.op].kind === 'reduce' && reduceLength(n) > SEQ_MAX) other = true;
    if (OPS[n.op].kind !== 'elementwise' || n.op === 'iota') return;
    for (const i of n.inputs) if (!isMat(i) && i.op !== 'const' && i.shape.join() === root.shape.join()) walk(i);
  };
  walk(root);
  const mms = [...found.values()];
  if (other || mms.length === 0 || mms.length > 3 || mms.some((m) => m.inputs[0] !== mms[0]!.inputs[0])) return undefined;
  return mms;
}

function bigMatmulUnder(root: Node, isMat: (n: Node) => boolean): Node | undefined {
  const seen = new Set<number>();
  const stack = [...root.inputs];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n.id) || isMat(n)) continue;
    seen.add(n.id);
    const r = n.shape.length;
    if (n.op === 'matmul' && reduceLength(n) > SEQ_MAX && n.shape[r - 2]! >= TILE_MIN_ROWS && n.shape[r - 1]! >= 16) return n;
    stack.push(...n.inputs);
  }
  return undefined;
}

/**
 * A 64x64 output tile per workgroup (32x32 when that leaves too few workgroups), K in steps of 16 through shared
 * memory; each of 256 threads keeps a 4x4 (2x2) block of accumulators per matmul. Operands are read through the emitter, so prologues (casts, unpacking, gathers) stay
 * fused; the epilogue evaluates the root at each output with each matmul's value seeded from its accumulator.
 */
function lowerTiledMatmul(root: Node, mms: Node[], isMat: (n: Node) => boolean): LoweredKernel {
  const e = new Emitter(root, isMat, 'tiled');
  const a = mms[0]!.inputs[0]!;
  const r = root.shape.length;
  const [M, N] = [root.shape[r - 2]!, root.shape[r - 1]!];
  const K = reduceLength(mms[0]!);
  const batchShape = root.shape.slice(0, -2);
  const big = numel(batchShape) * Math.ceil(M / 64) * Math.ceil(N / 64) >= TILE_MIN_GROUPS;
  const TILE = big ? 64 : 32; // outputs per workgroup along M and N
  const [MB, NB] = [Math.ceil(M / TILE), Math.ceil(N / TILE)];
  const groups = numel(batchShape) * MB * NB;
  const per = TILE / 16; // outputs per thread along each axis (16x16 threads)
  e.line(`let gi = wid.x + wid.y * NX;`);
  e.line(`if (gi >= ${groups}u) { return; }`);
  const batch = delinearize(wgslIndex, `(gi / ${MB * NB}u)`, batchShape).map((s, d) => e.declareTop(`o${d}`, s));
  e.line(`let m0 = ((gi / ${NB}u) % ${MB}u) * ${TILE}u;`);
  e.line(`let n0 = (gi % ${NB}u) * ${TILE}u;`);
  e.line(`let tx = lid % 16u;`);
  e.line(`let ty = lid / 16u;`);
  mms.forEach((_, t) => {
    for (let i = 0; i < per; i++) for (let j = 0; j < per; j++) e.line(`var acc${t}_${i}_${j}: f32 = 0.0;`);
  });
  const kt = e.fresh('k');
  const loads = e.nested(() => {
    // A tile [64 x 16] and B tiles [16 x 64], 4 elements each per thread; k varies fastest for both (row-major
    // activations and [out, in] weights read through a transpose are then contiguous across threads)
    for (let q = 0; q < (TILE * TILE_K) / 256; q++) {
      const el = `(lid + ${q * 256}u)`;
      const row = `(${el} / ${TILE_K}u)`;
      const kk = `(${el} % ${TILE_K}u)`;
      e.line(`{`);
      const inner = e.nested(() => {
        const m = e.fresh('k');
        const k = e.fresh('k');
        const n = e.fresh('k');
        e.line(`let ${m} = min(m0 + ${row}, ${M - 1}u);`);
        e.line(`let ${k} = min(${kt} + ${kk}, ${K - 1}u);`);
        e.line(`let ${n} = min(n0 + ${row}, ${N - 1}u);`);
        const av = e.value(a, [...batch, m, k]);
        e.line(`tile_a[${row} * ${TILE_K + 1}u + ${kk}] = select(0.0, ${av}, m0 + ${row} < ${M}u && ${kt} + ${kk} < ${K}u);`);
        mms.forEach((mm, t) => {
          const bv = e.value(mm.inputs[1]!, [...batch, k, n]);
          e.line(`tile_b${t}[${kk} * ${TILE + 1}u + ${row}] = select(0.0, ${bv}, n0 + ${row} < ${N}u && ${kt} + ${kk} < ${K}u);`);
        });
      });
      inner.forEach((l) => e.line('  ' + l));
      e.line(`}`);
    }
  });
  e.line(`for (var ${kt}: u32 = 0u; ${kt} < ${K}u; ${kt} += ${TILE_K}u) {`);
  loads.forEach((l) => e.line('  ' + l));
  e.line(`  workgroupBarrier();`);
  e.line(`  for (var kk: u32 = 0u; kk < ${TILE_K}u; kk++) {`);
  for (let i = 0; i < per; i++) e.line(`    let a${i} = tile_a[(ty + ${16 * i}u) * ${TILE_K + 1}u + kk];`);
  mms.forEach((_, t) => {
    for (let j = 0; j < per; j++) e.line(`    let b${t}_${j} = tile_b${t}[kk * ${TILE + 1}u + tx + ${16 * j}u];`);
    for (let i = 0; i < per; i++) for (let j = 0; j < per; j++) e.line(`    acc${t}_${i}_${j} = acc${t}_${i}_${j} + a${i} * b${t}_${j};`);
  });
  e.line(`  }`);
  e.line(`  workgroupBarrier();`);
  e.line(`}`);
  for (let i = 0; i < per; i++)
    for (let j = 0; j < per; j++) {
      const body = e.nested(() => {
        const m = e.fresh('k');
        const n = e.fresh('k');
        e.line(`let ${m} = m0 + ty + ${16 * i}u;`);
        e.line(`let ${n} = n0 + tx + ${16 * j}u;`);
        const idx = [...batch, m, n];
        mms.forEach((mm, t) => e.seed(mm, idx, `acc${t}_${i}_${j}`));
        const v = e.value(root, idx);
        e.line(e.store(root, linearize(wgslIndex, idx, root.shape), v));
      });
      e.line(`if (m0 + ty + ${16 * i}u < ${M}u && n0 + tx + ${16 * j}u < ${N}u) {`);
      body.forEach((l) => e.line('  ' + l));
      e.line(`}`);
    }
  const tiles = [`var<workgroup> tile_a: array<f32, ${TILE * (TILE_K + 1)}>;`, ...mms.map((_, t) => `var<workgroup> tile_b${t}: array<f32, ${TILE_K * (TILE + 1)}>;`)];
  const wgsl = assemble(e, e.topLines(), 256).replace('@compute', `${tiles.join('\n')}\n@compute`);
  return finish(e, 'tiled', wgsl, 256, groups);
}
