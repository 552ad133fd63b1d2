// The user-facing Tensor: a traced value with numpy-style broadcasting and axis handling on top of the IR's
// strict primitives (equal shapes, reductions over the last axis).
import { type DType, type Node, type OpName, fmtShape, numel, stateRoot } from '../compiler/ir.ts';
import { ShapeError } from '../compiler/ops.ts';
import { constant, emit, recordStateWrite } from './trace.ts';

type Operand = Tensor | number;

function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1)
      throw new ShapeError(`[${op}] cannot broadcast ${fmtShape(a)} with ${fmtShape(b)}: dim ${i} is ${da} vs ${db}`);
    out.push(Math.max(da, db));
  }
  return out;
}

function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new ShapeError(`[${op}] axis ${axis} out of range for rank ${rank}`);
  return a;
}

export class Tensor {
  constructor(readonly node: Node) {}

  get shape(): readonly number[] {
    return this.node.shape;
  }
  get dtype(): DType {
    return this.node.dtype;
  }
  get rank(): number {
    return this.node.shape.length;
  }
  get size(): number {
    return numel(this.node.shape);
  }

  // ------------------------------------------------------------ elementwise

  private lift(x: Operand): Tensor {
    return typeof x === 'number' ? constant(x, this.dtype) : x;
  }

  private binary(op: OpName, other: Operand): Tensor {
    const b = this.lift(other);
    const shape = broadcastShapes(op, this.shape, b.shape);
    return new Tensor(emit(op, [this.broadcastTo(shape).node, b.broadcastTo(shape).node], {}));
  }

  private unary(op: OpName): Tensor {
    return new Tensor(emit(op, [this.node], {}));
  }

  add(o: Operand): Tensor { return this.binary('add', o); }
  sub(o: Operand): Tensor { return this.binary('sub', o); }
  mul(o: Operand): Tensor { return this.binary('mul', o); }
  div(o: Operand): Tensor { return this.binary('div', o); }
  mod(o: Operand): Tensor { return this.binary('mod', o); }
  pow(o: Operand): Tensor { return this.binary('pow', o); }
  maximum(o: Operand): Tensor { return this.binary('max', o); }
  minimum(o: Operand): Tensor { return this.binary('min', o); }
  lt(o: Operand): Tensor { return this.binary('lt', o); }
  le(o: Operand): Tensor { return this.binary('le', o); }
  gt(o: Operand): Tensor { return this.binary('gt', o); }
  ge(o: Operand): Tensor { return this.binary('ge', o); }
  eq(o: Operand): Tensor { return this.binary('eq', o); }
  ne(o: Operand): Tensor { return this.binary('ne', o); }
  and(o: Tensor): Tensor { return this.binary('and', o); }
  or(o: Tensor): Tensor { return this.binary('or', o); }
  /** Bitwise xor and shifts of i32/u32 values (shr is logical on u32, arithmetic on i32). */
  xor(o: Operand): Tensor { return this.binary('xor', o); }
  shl(o: Operand): Tensor { return this.binary('shl', o); }
  shr(o: Operand): Tensor { return this.binary('shr', o); }

  neg(): Tensor { return this.unary('neg'); }
  abs(): Tensor { return this.unary('abs'); }
  exp(): Tensor { return this.unary('exp'); }
  log(): Tensor { return this.unary('log'); }
  sqrt(): Tensor { return this.unary('sqrt'); }
  rsqrt(): Tensor { return this.unary('rsqrt'); }
  sin(): Tensor { return this.unary('sin'); }
  cos(): Tensor { return this.unary('cos'); }
  floor(): Tensor { return this.unary('floor'); }
  sigmoid(): Tensor { return this.unary('sigmoid'); }
  silu(): Tensor { return this.unary('silu'); }
  softplus(): Tensor { return this.unary('softplus'); }
  tanh(): Tensor { return this.unary('tanh'); }
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor { return this.unary(approximate === 'tanh' ? 'gelu_tanh' : 'gelu'); }
  square(): Tensor { return this.mul(this); }
  relu(): Tensor { return this.maximum(0); }

  cast(to: DType): Tensor {
    return to === this.dtype ? this : new Tensor(emit('cast', [this.node], { to }));
  }

  /** where(cond, a, b): a where cond is true, else b; broadcasts all three. */
  static where(cond: Tensor, a: Operand, b: Operand): Tensor {
    const ta = typeof a === 'number' ? constant(a, typeof b === 'number' ? 'f32' : b.dtype) : a;
    const tb = typeof b === 'number' ? constant(b, ta.dtype) : b;
    const shape = broadcastShapes('where', broadcastShapes('where', cond.shape, ta.shape), tb.shape);
    return new Tensor(emit('where', [cond.broadcastTo(shape).node, ta.broadcastTo(shape).node, tb.broadcastTo(shape).node], {}));
  }

  // ------------------------------------------------------------ reductions

  private reduce(op: 'sum' | 'rmax' | 'mean', axis: number, keepdim: boolean): Tensor {
    const ax = normAxis(op, axis, this.rank);
    const moved = ax === this.rank - 1 ? this : this.permute(...[...Array(this.rank).keys()].filter((i) => i !== ax), ax);
    const r = new Tensor(emit(op, [moved.node], {}));
    return keepdim ? r.unsqueeze(ax) : r;
  }
  sum(axis = -1, keepdim = false): Tensor { return this.reduce('sum', axis, keepdim); }
  max(axis = -1, keepdim = false): Tensor { return this.reduce('rmax', axis, keepdim); }
  mean(axis = -1, keepdim = false): Tensor { return this.reduce('mean', axis, keepdim); }

  /** Running sum along an axis. */
  cumsum(axis = -1): Tensor {
    const ax = normAxis('cumsum', axis, this.rank);
    if (ax === this.rank - 1) return new Tensor(emit('cumsum', [this.node], {}));
    const perm = [...Array(this.rank).keys()].filter((i) => i !== ax).concat(ax);
    const inv = perm.map((_, i) => perm.indexOf(i));
    return new Tensor(emit('cumsum', [this.permute(...perm).node], {})).permute(...inv);
  }

  /** Batched matmul [..., M, K] x [..., K, N]; batch dims broadcast. A transposed operand is a free view. */
  matmul(other: Tensor): Tensor {
    if (this.rank < 2 || other.rank < 2)
      throw new ShapeError(`[matmul] lhs ${fmtShape(this.shape)} and rhs ${fmtShape(other.shape)}: both need rank >= 2`);
    const batch = broadcastShapes('matmul', this.shape.slice(0, -2), other.shape.slice(0, -2));
    const a = this.broadcastTo([...batch, ...this.shape.slice(-2)]);
    const b = other.broadcastTo([...batch, ...other.shape.slice(-2)]);
    return new Tensor(emit('matmul', [a.node, b.node], {}));
  }

  // ------------------------------------------------------------ views

  reshape(...shape: number[]): Tensor {
    const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
    const holes = shape.filter((d) => d === -1).length;
    if (holes > 1) throw new ShapeError(`[reshape] ${fmtShape(this.shape)} to ${fmtShape(shape)}: at most one -1`);
    if (holes === 1 && this.size % known !== 0)
      throw new ShapeError(`[reshape] ${fmtShape(this.shape)} to ${fmtShape(shape)}: ${this.size} elements do not divide by ${known}`);
    const resolved = shape.map((d) => (d === -1 ? this.size / known : d));
    if (resolved.join() === this.shape.join()) return this;
    return new Tensor(emit('reshape', [this.node], { shape: resolved }));
  }

  permute(...perm: number[]): Tensor {
    if (perm.every((p, i) => p === i) && perm.length === this.rank) return this;
    return new Tensor(emit('permute', [this.node], { perm: perm.map((p) => normAxis('permute', p, this.rank)) }));
  }

  transpose(a: number, b: number): Tensor {
    const perm = [...Array(this.rank).keys()];
    const [x, y] = [normAxis('transpose', a, this.rank), normAxis('transpose', b, this.rank)];
    [perm[x], perm[y]] = [perm[y]!, perm[x]!];
    return this.permute(...perm);
  }

  /** The last two axes swapped. */
  get T(): Tensor {
    return this.transpose(-1, -2);
  }

  unsqueeze(axis: number): Tensor {
    const ax = axis < 0 ? axis + this.rank + 1 : axis;
    if (ax < 0 || ax > this.rank) throw new ShapeError(`[unsqueeze] axis ${axis} out of range for rank ${this.rank} (a new axis goes at 0..${this.rank})`);
    const s = [...this.shape];
    s.splice(ax, 0, 1);
    return this.reshape(...s);
  }

  squeeze(axis: number): Tensor {
    const ax = normAxis('squeeze', axis, this.rank);
    if (this.shape[ax] !== 1) throw new ShapeError(`[squeeze] ${fmtShape(this.shape)} axis ${axis} has size ${this.shape[ax]}, not 1`);
    return this.reshape(...this.shape.filter((_, i) => i !== ax));
  }

  /** Numpy broadcasting to `shape` (leading dims added as needed). */
  broadcastTo(shape: readonly number[]): Tensor {
    if (shape.length === this.rank && shape.every((d, i) => d === this.shape[i])) return this;
    if (shape.length < this.rank) throw new ShapeError(`[broadcast] ${fmtShape(this.shape)} to ${fmtShape(shape)}: target has lower rank`);
    const padded = this.rank === shape.length ? this : this.reshape(...Array(shape.length - this.rank).fill(1), ...this.shape);
    return new Tensor(emit('broadcast', [padded.node], { shape: [...shape] }));
  }

  /** Elements start..end (exclusive, negative counts from the end) with a step, along one axis. */
  slice(axis: number, start: number, end?: number, step = 1): Tensor {
    const ax = normAxis('slice', axis, this.rank);
    const d = this.shape[ax]!;
    const b = start < 0 ? start + d : start;
    const e = end === undefined ? d : end < 0 ? end + d : end;
    if (b === 0 && e === d && step === 1) return this;
    const starts = this.shape.map(() => 0);
    const ends = [...this.shape];
    const steps = this.shape.map(() => 1);
    starts[ax] = b;
    ends[ax] = e;
    steps[ax] = step;
    return new Tensor(emit('slice', [this.node], { starts, ends, steps }));
  }

  /** Splits along an axis into pieces of the given sizes. */
  split(axis: number, sizes: number[]): Tensor[] {
    const ax = normAxis('split', axis, this.rank);
    const total = sizes.reduce((a, b) => a + b, 0);
    if (total !== this.shape[ax]) throw new ShapeError(`[split] ${fmtShape(this.shape)} axis ${ax}: sizes [${sizes.join(',')}] sum to ${total}, not ${this.shape[ax]}`);
    let at = 0;
    return sizes.map((s) => {
      const piece = this.slice(ax, at, at + s);
      at += s;
      return piece;
    });
  }

  static concat(parts: Tensor[], axis: number): Tensor {
    if (parts.length === 1) return parts[0]!;
    const ax = normAxis('concat', axis, parts[0]!.rank);
    return new Tensor(emit('concat', parts.map((p) => p.node), { axis: ax }));
  }

  /** Rows of this table [R, ...rest] at `indices` [...I] -> [...I, ...rest]. */
  gather(indices: Tensor): Tensor {
    return new Tensor(emit('gather', [this.node, indices.node], {}));
  }

  /** Writes rows of a state [R, ...rest] at device-given `indices` [...I]; returns the state's new version. */
  scatter(indices: Tensor, values: Tensor): Tensor {
    const root = stateRoot(this.node);
    if (!root) throw new ShapeError(`[scatter] target must be a state (declared with state(...)), got ${this.node.op}`);
    const n = emit('scatter', [this.node, indices.node, values.node], {});
    recordStateWrite(root, n);
    return new Tensor(n);
  }

  toString(): string {
    return `Tensor(%${this.node.id} ${this.node.op} ${this.dtype}${fmtShape(this.shape)})`;
  }
}
