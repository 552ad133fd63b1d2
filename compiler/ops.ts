// The primitive table: for every op, its shape/dtype rule, its CPU reference, its WGSL lowering, its fusion
// class, the kernel template that computes it when it needs a kernel of its own, and for the fused kernel
// (attention) the composition that is its reference and fallback. Keyed by OpAttrs, so adding an op without a
// complete definition does not compile. The CPU backend is a lookup here (references.ts holds the array-level
// references); the kernel planner (passes/planKernels.ts) reads the fusion class and the template.
import { type DType, type Node, type OpAttrs, type OpName, fmtShape, numel } from './ir.ts';
import { type IndexAlgebra, delinearize, linearize } from './indexAlgebra.ts';
import type { KernelMode } from './lower/emitter.ts';
import type { KExpr, KType } from './kexpr/expr.ts';
import { V } from './kexpr/value.ts';
import {
  type Reference,
  attentionReference,
  constReference,
  cumsumReference,
  matmulReference,
  scatterReference,
  sourceReference,
} from './references.ts';
import { ssdStepComposition, ssdStepReference, ssdStepRule } from './ssdStep.ts';
import { attentionSplitComposition, attentionSplitReference, attentionSplitRule } from './attentionSplit.ts';
import { selectiveStepComposition, selectiveStepReference, selectiveStepRule } from './selectiveStep.ts';
import { selectiveScanComposition, selectiveScanReference, selectiveScanRule } from './selectiveScan.ts';

export class ShapeError extends Error {
  override name = 'ShapeError';
}

export type FusionClass =
  | 'source' // a buffer (input, weight, state) or an inline constant
  | 'elementwise' // value at an index depends on the inputs at the same index
  | 'view' // value is an input read at a remapped index
  | 'reduce' // combines the last axis
  | 'scan' // running combination along the last axis: its own kernel
  | 'scatter' // writes rows of a persistent state in place
  | 'kernel'; // a hand-written kernel template with a composition as its reference (attention)

export interface Inferred {
  shape: number[];
  dtype: DType;
}

type Scalar = number;

/** Builds the nodes of the composition a fused kernel stands for (the tracer's, in dsl/nn/attention.ts). */
export interface Composer {
  emit<K extends OpName>(op: K, inputs: Node[], attrs: OpAttrs[K]): Node;
  /** A rank-0 constant (f32 unless told). */
  constant(value: number, dtype?: DType): Node;
  /** The index along `axis` of each element of `shape`, i32. */
  iota(shape: number[], axis: number): Node;
}

interface Common<K extends OpName> {
  kind: FusionClass;
  /** Shape and dtype of the result; throws ShapeError naming the op, the shapes and the broken rule. */
  infer(inputs: readonly Node[], attrs: OpAttrs[K]): Inferred;
  /** CPU reference on whole arrays; without one, the fusion class's generic rule (references.ts referenceOf). */
  reference?: Reference;
  /** The kernel template that computes this op, which always gets a kernel of its own (the planner's choice for the others). */
  template?: KernelMode;
}

interface ElementwiseDef<K extends OpName> extends Common<K> {
  kind: 'elementwise';
  /** CPU reference on scalars (JS numbers; stored back as the result dtype). */
  cpu(args: Scalar[], attrs: OpAttrs[K], inputs: readonly Node[]): Scalar;
  /** The value's expression from argument expressions typed as the input dtypes (rendered to WGSL by the kernel). */
  wgsl(args: KExpr[], attrs: OpAttrs[K], inputs: readonly Node[], out: DType): KExpr;
  /** An op without inputs takes coordinates of its output index as its arguments (iota: the one along its axis). */
  indexArgs?<T>(out: readonly T[], attrs: OpAttrs[K]): T[];
}

interface ViewDef<K extends OpName> extends Common<K> {
  kind: 'view';
  /** Maps an output index to (which input, index into it). One definition for both backends. */
  index<T>(alg: IndexAlgebra<T>, out: T[], attrs: OpAttrs[K], inputs: readonly Node[], node: { shape: readonly number[] }): { input: number; index: T[] }[];
  /**
   * The first candidate is read for a row number that leads the second candidate's index (gather); rows out of
   * range read the last row on both backends (WebGPU's robust access clamps likewise). Otherwise several
   * candidates are parts selected by position along an axis (concat).
   */
  indirect?: true;
}

interface ReduceDef<K extends OpName> extends Common<K> {
  kind: 'reduce';
  /**
   * The inputs read at output index `out` and reduction index `k`; the reduced term is their product (one input for
   * sum/rmax/mean; matmul's a[..., m, k] * b[..., k, n]). Reduced length: the last axis of input 0.
   */
  operands?<T>(out: readonly T[], k: T): { input: number; index: T[] }[];
  identity: number;
  combine: { cpu(a: number, b: number): number; wgsl(a: KExpr, b: KExpr): KExpr };
  /** The WGSL subgroup builtin that combines across lanes. */
  subgroup: 'subgroupAdd' | 'subgroupMax';
  /** Applied once to the combined value; `size` is the reduced length. */
  finish?: { cpu(acc: number, size: number): number; wgsl(acc: KExpr, size: number): KExpr };
}

interface OtherDef<K extends OpName> extends Common<K> {
  kind: 'source' | 'scan' | 'scatter' | 'kernel';
  reference: Reference;
}

export interface KernelDef<K extends OpName> extends OtherDef<K> {
  kind: 'kernel';
  template: KernelMode;
  /** The same value as a composition of primitives: the reference the kernel is tested against and the unfused fallback. */
  decompose(c: Composer, inputs: Node[], attrs: OpAttrs[K]): Node;
}

export type OpDef<K extends OpName> = ElementwiseDef<K> | ViewDef<K> | ReduceDef<K> | OtherDef<K> | KernelDef<K>;

// ---------------------------------------------------------------- shape rules

function sameShape(op: string, inputs: readonly Node[]): number[] {
  const first = inputs[0]!.shape;
  for (let i = 1; i < inputs.length; i++) {
    const s = inputs[i]!.shape;
    if (s.length !== first.length || s.some((d, j) => d !== first[j]))
      throw new ShapeError(`[${op}] input 0 ${fmtShape(first)} and input ${i} ${fmtShape(s)}: shapes must be equal (broadcast first)`);
  }
  return [...first];
}

function sameDtype(op: string, inputs: readonly Node[]): DType {
  const dt = inputs[0]!.dtype;
  for (let i = 1; i < inputs.length; i++)
    if (inputs[i]!.dtype !== dt) throw new ShapeError(`[${op}] input 0 is ${dt} but input ${i} is ${inputs[i]!.dtype}: dtypes must match (cast first)`);
  return dt;
}

function floatOnly(op: string, inputs: readonly Node[]): void {
  for (const x of inputs) if (x.dtype !== 'f32') throw new ShapeError(`[${op}] needs f32 input, got ${x.dtype}`);
}

/** Float-only ops of several equal-shaped inputs (WGSL's pow has no integer overload). */
const floatSameShape = (op: string) => (inputs: readonly Node[]): Inferred => {
  floatOnly(op, inputs);
  return { shape: sameShape(op, inputs), dtype: 'f32' };
};
const unaryFloat = (op: string) => (inputs: readonly Node[]): Inferred => {
  floatOnly(op, inputs);
  return { shape: [...inputs[0]!.shape], dtype: 'f32' };
};
/** WGSL has no arithmetic, ordering or reductions on bool: reject it at trace time, not as a shader error. */
function numericOnly(op: string, inputs: readonly Node[]): void {
  for (const x of inputs) if (x.dtype === 'bool') throw new ShapeError(`[${op}] needs numeric inputs (f32, i32, u32), got bool (cast first)`);
}
const binarySame = (op: string) => (inputs: readonly Node[]): Inferred => {
  numericOnly(op, inputs);
  return { shape: sameShape(op, inputs), dtype: sameDtype(op, inputs) };
};
const compare = (op: string) => (inputs: readonly Node[]): Inferred => {
  sameDtype(op, inputs);
  if (op !== 'eq' && op !== 'ne') numericOnly(op, inputs);
  return { shape: sameShape(op, inputs), dtype: 'bool' };
};
const integerSame = (op: string) => (inputs: readonly Node[]): Inferred => {
  for (const x of inputs) if (x.dtype !== 'i32' && x.dtype !== 'u32') throw new ShapeError(`[${op}] needs i32 or u32 inputs, got ${x.dtype}`);
  return { shape: sameShape(op, inputs), dtype: sameDtype(op, inputs) };
};
const logical = (op: string) => (inputs: readonly Node[]): Inferred => {
  for (const x of inputs) if (x.dtype !== 'bool') throw new ShapeError(`[${op}] needs bool inputs, got ${x.dtype}`);
  return { shape: sameShape(op, inputs), dtype: 'bool' };
};
const source = (inputs: readonly Node[]): Inferred => {
  throw new ShapeError(`sources are created by the tracer, not from ${inputs.length} inputs`);
};
const reduceRule = (op: string) => (inputs: readonly Node[]): Inferred => {
  const s = inputs[0]!.shape;
  if (s.length === 0) throw new ShapeError(`[${op}] cannot reduce a scalar`);
  numericOnly(op, inputs);
  if (op === 'mean' && inputs[0]!.dtype !== 'f32') throw new ShapeError(`[mean] needs f32 input, got ${inputs[0]!.dtype}`);
  return { shape: s.slice(0, -1), dtype: inputs[0]!.dtype };
};

// ---------------------------------------------------------------- numerics shared by CPU and WGSL

/** erf by Abramowitz & Stegun 7.1.26 refined (max error ~1.2e-7 via erfc rational approximation, Numerical Recipes erfcc). */
function erfCpu(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? 1 - r : r - 1;
}
/** WGSL functions the op table's lowerings call, by name; a kernel declares only those it calls (wgslHelpersFor). */
const WGSL_HELPERS: Record<string, string> = {
  strata_erf: `fn strata_erf(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return select(r - 1.0, 1.0 - r, x >= 0.0);
}`,
  strata_softplus: `fn strata_softplus(x: f32) -> f32 { return select(log(1.0 + exp(x)), x, x > 20.0); }`,
  strata_tanh: `// (e^2x - 1)/(e^2x + 1) cancels near 0 (about 6e-8 absolute); the Taylor series is exact to f32 there
fn strata_tanh(x: f32) -> f32 {
  let c = clamp(x, -15.0, 15.0);
  let e = exp(2.0 * c);
  let x2 = c * c;
  return select((e - 1.0) / (e + 1.0), c * (1.0 - x2 * (0.33333333 - x2 * 0.13333333)), abs(c) < 0.05);
}`,
  strata_sigmoid: `fn strata_sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }`,
};

/** The helper functions a kernel's text calls, in declaration order (helpers call none of each other). */
// A scan of the text, not of the nodes: hand templates call helpers in their fixed text too (ssdStepKernel.ts).
export function wgslHelpersFor(text: string): string[] {
  return Object.entries(WGSL_HELPERS)
    .filter(([name]) => text.includes(`${name}(`))
    .map(([, fn]) => fn);
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const softplus = (x: number) => (x > 20 ? x : Math.log1p(Math.exp(x)));
const GELU_TANH_C = Math.sqrt(2 / Math.PI);

/** A constant of a dtype (`f32(0.500000000)`, `i32(3)`; infinities as the largest finite f32, kexpr/render.ts). */
const lit = (v: number, dt: DType): KExpr => V.constant(v, dt);
export { lit as wgslLiteral };

export function wgslType(dt: DType): KType {
  return dt;
}

// ---------------------------------------------------------------- elementwise helpers

type ElemCpu<K extends OpName> = ElementwiseDef<K>['cpu'];
type ElemWgsl<K extends OpName> = ElementwiseDef<K>['wgsl'];

function unary<K extends OpName>(op: K, cpu: (x: number) => number, wgsl: (x: KExpr) => KExpr): ElementwiseDef<K> {
  return { kind: 'elementwise', infer: unaryFloat(op), cpu: ((a: number[]) => cpu(a[0]!)) as ElemCpu<K>, wgsl: ((a: KExpr[]) => wgsl(a[0]!)) as ElemWgsl<K> };
}
/** A unary op that is one WGSL builtin or helper function. */
const unaryFn = <K extends OpName>(op: K, cpu: (x: number) => number, fn: string) => unary(op, cpu, (x) => V.fn(fn, [x]));

function binary<K extends OpName>(op: K, cpu: (a: number, b: number, dt: DType) => number, wgsl: (a: KExpr, b: KExpr, dt: DType) => KExpr): ElementwiseDef<K> {
  return {
    kind: 'elementwise',
    infer: binarySame(op),
    cpu: ((a: number[], _attrs: unknown, inputs: readonly Node[]) => cpu(a[0]!, a[1]!, inputs[0]!.dtype)) as ElemCpu<K>,
    wgsl: ((a: KExpr[], _attrs: unknown, inputs: readonly Node[]) => wgsl(a[0]!, a[1]!, inputs[0]!.dtype)) as ElemWgsl<K>,
  };
}

function comparison<K extends OpName>(op: K, cpu: (a: number, b: number) => boolean, sym: '<' | '<=' | '>' | '>=' | '==' | '!='): ElementwiseDef<K> {
  return {
    kind: 'elementwise',
    infer: compare(op),
    cpu: ((a: number[]) => (cpu(a[0]!, a[1]!) ? 1 : 0)) as ElemCpu<K>,
    wgsl: ((a: KExpr[]) => V.compare(sym, a[0]!, a[1]!)) as ElemWgsl<K>,
  };
}

const f32 = (v: number) => V.lit(v, 'f32');

// WGSL integer division by zero yields the dividend; remainder by zero yields zero.
const intDiv = (a: number, b: number) => (b === 0 ? a : Math.trunc(a / b));
const intMod = (a: number, b: number) => (b === 0 ? 0 : a % b);

// ---------------------------------------------------------------- the table

export const OPS: { [K in OpName]: K extends 'attention' | 'attention_split' | 'ssd_step' | 'selective_step' | 'selective_scan' | 'fused_mlp' ? KernelDef<K> : OpDef<K> } = {
  input: { kind: 'source', infer: source, reference: sourceReference },
  weight: { kind: 'source', infer: source, reference: sourceReference },
  state: { kind: 'source', infer: source, reference: sourceReference },
  const: { kind: 'source', infer: source, reference: constReference },
  iota: {
    kind: 'elementwise',
    infer: source,
    indexArgs: (out, attrs) => [out[attrs.axis]!],
    cpu: (a) => a[0]!,
    wgsl: (a, _attrs, _inputs, out) => (out === 'u32' ? a[0]! : V.cast(wgslType(out), a[0]!)),
  },

  neg: {
    kind: 'elementwise',
    infer: (i) => {
      if (i[0]!.dtype === 'u32' || i[0]!.dtype === 'bool') throw new ShapeError(`[neg] needs a signed input (f32 or i32), got ${i[0]!.dtype}`);
      return { shape: [...i[0]!.shape], dtype: i[0]!.dtype };
    },
    cpu: (a) => -a[0]!,
    wgsl: (a) => V.neg(a[0]!),
  },
  abs: {
    kind: 'elementwise',
    infer: (i) => {
      numericOnly('abs', i);
      return { shape: [...i[0]!.shape], dtype: i[0]!.dtype };
    },
    cpu: (a) => Math.abs(a[0]!),
    wgsl: (a) => V.fn('abs', [a[0]!]),
  },
  exp: unaryFn('exp', Math.exp, 'exp'),
  log: unaryFn('log', Math.log, 'log'),
  sqrt: unaryFn('sqrt', Math.sqrt, 'sqrt'),
  rsqrt: unaryFn('rsqrt', (x) => 1 / Math.sqrt(x), 'inverseSqrt'),
  sin: unaryFn('sin', Math.sin, 'sin'),
  cos: unaryFn('cos', Math.cos, 'cos'),
  floor: unaryFn('floor', Math.floor, 'floor'),
  sigmoid: unaryFn('sigmoid', sigmoid, 'strata_sigmoid'),
  silu: unary('silu', (x) => x * sigmoid(x), (x) => V.arith('*', x, V.fn('strata_sigmoid', [x]))),
  softplus: unaryFn('softplus', softplus, 'strata_softplus'),
  tanh: unaryFn('tanh', Math.tanh, 'strata_tanh'),
  gelu: unary(
    'gelu',
    (x) => 0.5 * x * (1 + erfCpu(x / Math.SQRT2)),
    (x) => V.arith('*', V.arith('*', f32(0.5), x), V.arith('+', f32(1), V.fn('strata_erf', [V.arith('*', x, f32(0.70710678118))]))),
  ),
  gelu_tanh: unary(
    'gelu_tanh',
    (x) => 0.5 * x * (1 + Math.tanh(GELU_TANH_C * (x + 0.044715 * x * x * x))),
    (x) => {
      const cube = V.arith('*', V.arith('*', V.arith('*', f32(0.044715), x), x), x);
      const inner = V.arith('*', f32(0.7978845608), V.arith('+', x, cube));
      return V.arith('*', V.arith('*', f32(0.5), x), V.arith('+', f32(1), V.fn('strata_tanh', [inner])));
    },
  ),
  cast: {
    kind: 'elementwise',
    infer: (i, attrs) => ({ shape: [...i[0]!.shape], dtype: attrs.to }),
    cpu: (a, attrs, inputs) => {
      if (attrs.to === 'bool') return a[0] ? 1 : 0;
      if (attrs.to === 'f32') return a[0]!;
      // WGSL float-to-int conversions saturate at the extreme f32 values of the integer range (integer-to-integer
      // ones reinterpret the bits, which storing into the typed array does too)
      if (inputs[0]!.dtype === 'f32') return attrs.to === 'i32' ? Math.min(Math.max(Math.trunc(a[0]!), -2147483648), 2147483520) : Math.min(Math.max(Math.trunc(a[0]!), 0), 4294967040);
      return Math.trunc(a[0]!);
    },
    wgsl: (a, attrs, inputs) => {
      const from = inputs[0]!.dtype;
      if (from === attrs.to) return a[0]!;
      if (attrs.to === 'bool') return V.compare('!=', a[0]!, lit(0, from));
      if (from === 'bool') return V.select(lit(0, attrs.to), lit(1, attrs.to), a[0]!);
      return V.cast(wgslType(attrs.to), a[0]!);
    },
  },

  add: binary('add', (a, b) => a + b, (a, b) => V.arith('+', a, b)),
  sub: binary('sub', (a, b) => a - b, (a, b) => V.arith('-', a, b)),
  // integer products wrap modulo 2^32 as on the GPU (a double would lose the low bits first)
  mul: binary('mul', (a, b, dt) => (dt === 'f32' ? a * b : Math.imul(a, b)), (a, b) => V.arith('*', a, b)),
  div: binary('div', (a, b, dt) => (dt === 'f32' ? a / b : intDiv(a, b)), (a, b) => V.arith('/', a, b)),
  // floored on f32 (the sign of the divisor), truncated on integers: WGSL's % on f32 would truncate
  mod: binary('mod', (a, b, dt) => (dt === 'f32' ? a - b * Math.floor(a / b) : intMod(a, b)), (a, b, dt) =>
    dt === 'f32' ? V.arith('-', a, V.arith('*', b, V.fn('floor', [V.arith('/', a, b)]))) : V.arith('%', a, b)),
  pow: { ...binary('pow', (a, b) => Math.pow(a, b), (a, b) => V.fn('pow', [a, b])), infer: floatSameShape('pow') },
  max: binary('max', (a, b) => Math.max(a, b), (a, b) => V.fn('max', [a, b])),
  min: binary('min', (a, b) => Math.min(a, b), (a, b) => V.fn('min', [a, b])),
  lt: comparison('lt', (a, b) => a < b, '<'),
  le: comparison('le', (a, b) => a <= b, '<='),
  gt: comparison('gt', (a, b) => a > b, '>'),
  ge: comparison('ge', (a, b) => a >= b, '>='),
  eq: comparison('eq', (a, b) => a === b, '=='),
  ne: comparison('ne', (a, b) => a !== b, '!='),
  and: { kind: 'elementwise', infer: logical('and'), cpu: (a) => (a[0] && a[1] ? 1 : 0), wgsl: (a) => V.logic('&&', a[0]!, a[1]!) },
  or: { kind: 'elementwise', infer: logical('or'), cpu: (a) => (a[0] || a[1] ? 1 : 0), wgsl: (a) => V.logic('||', a[0]!, a[1]!) },

  // Bit ops on the 32-bit pattern. WGSL shifts take a u32 count and use only its low 5 bits, as JS's do;
  // shr is logical on u32 and arithmetic on i32 in both.
  xor: { ...binary('xor', (a, b) => a ^ b, (a, b) => V.bits('^', a, b)), infer: integerSame('xor') },
  shl: { ...binary('shl', (a, b) => a << b, (a, b, dt) => V.shift('<<', a, dt === 'u32' ? b : V.cast('u32', b))), infer: integerSame('shl') },
  shr: { ...binary('shr', (a, b, dt) => (dt === 'u32' ? a >>> b : a >> b), (a, b, dt) => V.shift('>>', a, dt === 'u32' ? b : V.cast('u32', b))), infer: integerSame('shr') },

  where: {
    kind: 'elementwise',
    infer: (inputs) => {
      if (inputs[0]!.dtype !== 'bool') throw new ShapeError(`[where] condition must be bool, got ${inputs[0]!.dtype}`);
      const shape = sameShape('where', inputs);
      return { shape, dtype: sameDtype('where', inputs.slice(1)) };
    },
    cpu: (a) => (a[0] ? a[1]! : a[2]!),
    wgsl: (a) => V.select(a[2]!, a[1]!, a[0]!),
  },

  sum: { kind: 'reduce', infer: reduceRule('sum'), subgroup: 'subgroupAdd', identity: 0, combine: { cpu: (a, b) => a + b, wgsl: (a, b) => V.arith('+', a, b) } },
  rmax: { kind: 'reduce', infer: reduceRule('rmax'), subgroup: 'subgroupMax', identity: -Infinity, combine: { cpu: (a, b) => Math.max(a, b), wgsl: (a, b) => V.fn('max', [a, b]) } },
  mean: {
    kind: 'reduce',
    infer: reduceRule('mean'),
    subgroup: 'subgroupAdd',
    identity: 0,
    combine: { cpu: (a, b) => a + b, wgsl: (a, b) => V.arith('+', a, b) },
    finish: { cpu: (acc, n) => acc / n, wgsl: (acc, n) => V.arith('*', acc, lit(1 / n, 'f32')) },
  },

  // matmul is a reduction: the compiler sees it as sum over k of a[..., m, k] * b[..., k, n].
  matmul: {
    kind: 'reduce',
    reference: matmulReference,
    operands: (out, k) => [
      { input: 0, index: [...out.slice(0, -1), k] },
      { input: 1, index: [...out.slice(0, -2), k, out[out.length - 1]!] },
    ],
    subgroup: 'subgroupAdd',
    identity: 0,
    combine: { cpu: (a, b) => a + b, wgsl: (a, b) => V.arith('+', a, b) },
    infer: (inputs) => {
      const [a, b] = inputs as [Node, Node];
      if (a.shape.length < 2 || b.shape.length < 2)
        throw new ShapeError(`[matmul] lhs ${fmtShape(a.shape)} and rhs ${fmtShape(b.shape)}: both need rank >= 2`);
      if (a.shape.length !== b.shape.length)
        throw new ShapeError(`[matmul] lhs ${fmtShape(a.shape)} and rhs ${fmtShape(b.shape)}: ranks differ (broadcast batch dims first)`);
      const k = a.shape[a.shape.length - 1]!;
      const kb = b.shape[b.shape.length - 2]!;
      if (k !== kb) throw new ShapeError(`[matmul] lhs ${fmtShape(a.shape)}: inner dim ${k} != rhs ${fmtShape(b.shape)} dim ${kb}`);
      for (let i = 0; i < a.shape.length - 2; i++)
        if (a.shape[i] !== b.shape[i]) throw new ShapeError(`[matmul] lhs ${fmtShape(a.shape)} and rhs ${fmtShape(b.shape)}: batch dim ${i} differs`);
      floatOnly('matmul', inputs);
      return { shape: [...a.shape.slice(0, -1), b.shape[b.shape.length - 1]!], dtype: 'f32' };
    },
  },

  reshape: {
    kind: 'view',
    infer: (inputs, attrs) => {
      const s = inputs[0]!.shape;
      if (attrs.shape.some((d) => !Number.isInteger(d) || d < 1)) throw new ShapeError(`[reshape] ${fmtShape(s)} to ${fmtShape(attrs.shape)}: dims must be positive integers`);
      if (numel(s) !== numel(attrs.shape)) throw new ShapeError(`[reshape] ${fmtShape(s)} to ${fmtShape(attrs.shape)}: element counts ${numel(s)} != ${numel(attrs.shape)}`);
      return { shape: [...attrs.shape], dtype: inputs[0]!.dtype };
    },
    index: (alg, out, _attrs, inputs, node) => [{ input: 0, index: delinearize(alg, linearize(alg, out, node.shape), inputs[0]!.shape) }],
  },
  permute: {
    kind: 'view',
    infer: (inputs, attrs) => {
      const s = inputs[0]!.shape;
      const sorted = [...attrs.perm].sort((a, b) => a - b);
      if (attrs.perm.length !== s.length || sorted.some((v, i) => v !== i))
        throw new ShapeError(`[permute] ${fmtShape(s)} by [${attrs.perm.join(',')}]: not a permutation of ${s.length} axes`);
      return { shape: attrs.perm.map((p) => s[p]!), dtype: inputs[0]!.dtype };
    },
    index: (_alg, out, attrs) => {
      const idx = new Array(out.length);
      attrs.perm.forEach((p, i) => (idx[p] = out[i]));
      return [{ input: 0, index: idx }];
    },
  },
  broadcast: {
    kind: 'view',
    infer: (inputs, attrs) => {
      const s = inputs[0]!.shape;
      if (s.length !== attrs.shape.length || s.some((d, i) => d !== 1 && d !== attrs.shape[i]))
        throw new ShapeError(`[broadcast] ${fmtShape(s)} to ${fmtShape(attrs.shape)}: each dim must be 1 or equal`);
      return { shape: [...attrs.shape], dtype: inputs[0]!.dtype };
    },
    index: (alg, out, _attrs, inputs) => [{ input: 0, index: out.map((o, i) => (inputs[0]!.shape[i] === 1 ? alg.lit(0) : o)) }],
  },
  slice: {
    kind: 'view',
    infer: (inputs, attrs) => {
      const s = inputs[0]!.shape;
      return {
        shape: s.map((d, i) => {
          const [b, e, st] = [attrs.starts[i]!, attrs.ends[i]!, attrs.steps[i]!];
          if (!(b >= 0 && e <= d && b < e && st >= 1))
            throw new ShapeError(`[slice] ${fmtShape(s)} axis ${i}: range ${b}:${e}:${st} is not within 0:${d}`);
          return Math.ceil((e - b) / st);
        }),
        dtype: inputs[0]!.dtype,
      };
    },
    index: (alg, out, attrs) => [{ input: 0, index: out.map((o, i) => alg.add(alg.mul(o, attrs.steps[i]!), alg.lit(attrs.starts[i]!))) }],
  },
  concat: {
    kind: 'view',
    infer: (inputs, attrs) => {
      const s0 = inputs[0]!.shape;
      const ax = attrs.axis;
      let total = 0;
      for (const [i, x] of inputs.entries()) {
        if (x.shape.length !== s0.length || x.shape.some((d, j) => j !== ax && d !== s0[j]))
          throw new ShapeError(`[concat] input 0 ${fmtShape(s0)} and input ${i} ${fmtShape(x.shape)}: dims other than axis ${ax} must match`);
        total += x.shape[ax]!;
      }
      sameDtype('concat', inputs);
      const shape = [...s0];
      shape[ax] = total;
      return { shape, dtype: inputs[0]!.dtype };
    },
    // Every input's candidate index; the lowering selects by the offset along the axis.
    index: (alg, out, attrs, inputs) => {
      let offset = 0;
      return inputs.map((x, i) => {
        const idx = [...out];
        idx[attrs.axis] = alg.sub(out[attrs.axis]!, offset);
        const r = { input: i, index: idx };
        offset += x.shape[attrs.axis]!;
        return r;
      });
    },
  },

  // gather(table [R, ...rest], indices [...I]) -> [...I, ...rest]
  gather: {
    kind: 'view',
    indirect: true,
    infer: (inputs) => {
      const [table, idx] = inputs as [Node, Node];
      if (table.shape.length < 1) throw new ShapeError(`[gather] table ${fmtShape(table.shape)} needs rank >= 1`);
      if (idx.dtype !== 'i32' && idx.dtype !== 'u32') throw new ShapeError(`[gather] indices must be i32 or u32, got ${idx.dtype}`);
      return { shape: [...idx.shape, ...table.shape.slice(1)], dtype: table.dtype };
    },
    // The row comes from input 1 at the leading dims and leads the index into input 0 (see `indirect`).
    index: (_alg, out, _attrs, inputs) => {
      const k = inputs[1]!.shape.length;
      return [
        { input: 1, index: out.slice(0, k) },
        { input: 0, index: out.slice(k) },
      ];
    },
  },

  // scatter(state [R, ...rest], indices [...I], values [...I, ...rest]) -> the state with those rows replaced
  scatter: {
    kind: 'scatter',
    template: 'scatter',
    reference: scatterReference,
    infer: (inputs) => {
      const [target, idx, values] = inputs as [Node, Node, Node];
      if (idx.dtype !== 'i32' && idx.dtype !== 'u32') throw new ShapeError(`[scatter] indices must be i32 or u32, got ${idx.dtype}`);
      const want = [...idx.shape, ...target.shape.slice(1)];
      if (values.shape.length !== want.length || values.shape.some((d, i) => d !== want[i]))
        throw new ShapeError(`[scatter] target ${fmtShape(target.shape)} at indices ${fmtShape(idx.shape)}: values ${fmtShape(values.shape)} must be ${fmtShape(want)}`);
      if (values.dtype !== target.dtype) throw new ShapeError(`[scatter] target is ${target.dtype} but values are ${values.dtype}`);
      return { shape: [...target.shape], dtype: target.dtype };
    },
  },

  attention: { kind: 'kernel', infer: attentionRule, template: 'attention', reference: attentionReference, decompose: attentionComposition },
  attention_split: { kind: 'kernel', infer: attentionSplitRule, template: 'attention', reference: attentionSplitReference, decompose: attentionSplitComposition },
  ssd_step: { kind: 'kernel', infer: ssdStepRule, template: 'ssdstep', reference: ssdStepReference, decompose: ssdStepComposition },
  selective_step: { kind: 'kernel', infer: selectiveStepRule, template: 'selstep', reference: selectiveStepReference, decompose: selectiveStepComposition },
  selective_scan: { kind: 'kernel', infer: selectiveScanRule, template: 'selscan', reference: selectiveScanReference, decompose: selectiveScanComposition },
  // the matmul itself: the kernel differs in how it computes its left operand and sums, not in what it computes
  fused_mlp: { kind: 'kernel', infer: (inputs) => opDef('matmul').infer(inputs, {}), template: 'mlp', reference: matmulReference, decompose: (c, inputs) => c.emit('matmul', inputs, {}) },

  cumsum: {
    kind: 'scan',
    template: 'scan',
    reference: cumsumReference,
    infer: (inputs) => {
      if (inputs[0]!.shape.length === 0) throw new ShapeError('[cumsum] cannot scan a scalar');
      numericOnly('cumsum', inputs);
      return { shape: [...inputs[0]!.shape], dtype: inputs[0]!.dtype };
    },
  },
};

export function attentionRule(inputs: readonly Node[], attrs: OpAttrs['attention']): Inferred {
  const [q, kT, v, mask, limit] = inputs as [Node, Node, Node, Node, Node];
  const r = q.shape.length;
  const batch = q.shape.slice(0, -2);
  const [M, D] = q.shape.slice(-2) as [number, number];
  const E = kT.shape[r - 1]!;
  const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
  if (r < 2 || kT.shape.length !== r || v.shape.length !== r) throw new ShapeError(`[attention] q ${fmtShape(q.shape)}, kT ${fmtShape(kT.shape)}, v ${fmtShape(v.shape)}: equal ranks >= 2 expected`);
  if (!same(kT.shape, [...batch, D, E])) throw new ShapeError(`[attention] q ${fmtShape(q.shape)}: kT ${fmtShape(kT.shape)} must be ${fmtShape([...batch, D, E])}`);
  if (!same(v.shape.slice(0, -1), [...batch, E])) throw new ShapeError(`[attention] kT ${fmtShape(kT.shape)}: v ${fmtShape(v.shape)} must be ${fmtShape([...batch, E, v.shape[r - 1]!])}`);
  if (!same(mask.shape, [...batch, M, E]) || mask.dtype !== 'bool') throw new ShapeError(`[attention] mask ${mask.dtype}${fmtShape(mask.shape)} must be bool${fmtShape([...batch, M, E])}`);
  if (!same(limit.shape, [...batch, M]) || limit.dtype !== 'i32') throw new ShapeError(`[attention] limit ${limit.dtype}${fmtShape(limit.shape)} must be i32${fmtShape([...batch, M])}`);
  floatOnly('attention', [q, kT, v]);
  return { shape: [...batch, M, v.shape[r - 1]! + (attrs.weights ? E : 0)], dtype: 'f32' };
}

/**
 * softmax(where(mask, softcap(scale * q kT), -inf)) v: the fused attention kernel's reference and its unfused
 * fallback (dsl/nn/attention.ts, fused: false). The limit input only lets the kernel stop early; the mask covers it.
 * With `weights`, the probabilities follow each output row (concatenated along the last axis).
 */
function attentionComposition(c: Composer, inputs: Node[], attrs: OpAttrs['attention']): Node {
  const [q, kT, v, mask] = inputs as [Node, Node, Node, Node];
  const emit = c.emit.bind(c);
  const scalar = (value: number, like: Node) => emit('broadcast', [emit('reshape', [c.constant(value)], { shape: like.shape.map(() => 1) })], { shape: [...like.shape] });
  let scores = emit('matmul', [q, kT], {});
  scores = emit('mul', [scores, scalar(attrs.scale, scores)], {});
  if (attrs.softcap) scores = emit('mul', [emit('tanh', [emit('div', [scores, scalar(attrs.softcap, scores)], {})], {}), scalar(attrs.softcap, scores)], {});
  const masked = emit('where', [mask, scores, scalar(-Infinity, scores)], {});
  const keep = (x: Node) => emit('broadcast', [emit('reshape', [x], { shape: [...x.shape, 1] })], { shape: [...masked.shape] });
  const e = emit('exp', [emit('sub', [masked, keep(emit('rmax', [masked], {}))], {})], {});
  const probs = emit('div', [e, keep(emit('sum', [e], {}))], {});
  const out = emit('matmul', [probs, v], {});
  return attrs.weights ? emit('concat', [out, probs], { axis: out.shape.length - 1 }) : out;
}

export function opDef<K extends OpName>(op: K): OpDef<K> {
  return OPS[op] as OpDef<K>;
}
