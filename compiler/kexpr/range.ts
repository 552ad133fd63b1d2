// Interval analysis of kernel expressions: the values an expression can take, from the ranges declared for the
// names it reads (the grid's invocation ids, loop indices, clamped coordinates). Unknown is [0, Infinity) for u32.
import { type KExpr, isLit, print } from './expr.ts';

export type Interval = readonly [lo: number, hi: number];

/** Largest value declared for an expression (a name, or a sub-expression the template knows more about). */
export type Declared = (key: string) => number | undefined;

export const U32_MAX = 0xffffffff;
const FULL: Interval = [0, Infinity];
const UNKNOWN: Interval = [-Infinity, Infinity];

export function rangeOf(x: KExpr, declared: Declared): Interval {
  const [lo, hi] = structural(x, declared);
  const known = x.k === 'lit' ? undefined : declared(print(x));
  return known === undefined ? [lo, hi] : [Math.min(lo, known), Math.min(hi, known)];
}

function structural(x: KExpr, declared: Declared): Interval {
  const r = (e: KExpr) => rangeOf(e, declared);
  const whole = x.type === 'u32' ? FULL : x.type === 'bool' ? ([0, 1] as const) : UNKNOWN;
  switch (x.k) {
    case 'lit': return typeof x.value === 'number' ? [x.value, x.value] : [Number(x.value), Number(x.value)];
    case 'var': case 'wgsl': case 'load': case 'at': case 'field': case 'un': return whole;
    case 'call': {
      const args = x.args.map(r);
      if (x.fn === 'min') return [Math.min(...args.map((a) => a[0])), Math.min(...args.map((a) => a[1]))];
      if (x.fn === 'max') return [Math.max(...args.map((a) => a[0])), Math.max(...args.map((a) => a[1]))];
      if (x.fn === 'select') return [Math.min(args[0]![0], args[1]![0]), Math.max(args[0]![1], args[1]![1])];
      if (x.fn === 'u32' && args[0]![0] >= 0) return [Math.floor(args[0]![0]), Math.floor(args[0]![1])];
      return whole;
    }
    case 'bin': {
      if (x.type === 'bool') return [0, 1];
      const [a, b] = [r(x.a), r(x.b)];
      const out = binary(x.op, a, b, x.b);
      // u32 arithmetic wraps: a possibly negative or too large result can be anything
      return x.type === 'u32' && (out[0] < 0 || out[1] > U32_MAX) ? FULL : out;
    }
  }
}

/** A product of bounds where an unbounded factor times 0 is 0, not NaN. */
const times = (x: number, y: number) => (x === 0 || y === 0 ? 0 : x * y);

function binary(op: string, a: Interval, b: Interval, bx: KExpr): Interval {
  const nonNeg = a[0] >= 0 && b[0] >= 0;
  switch (op) {
    case '+': return [a[0] + b[0], a[1] + b[1]];
    case '-': return [a[0] - b[1], a[1] - b[0]];
    case '*': return nonNeg ? [times(a[0], b[0]), times(a[1], b[1])] : UNKNOWN;
    case '/': return nonNeg && b[0] > 0 ? [Math.floor(a[0] / b[1]), Math.floor(a[1] / b[0])] : nonNeg ? [0, a[1]] : UNKNOWN;
    case '%': return !nonNeg || b[0] <= 0 ? UNKNOWN : a[1] < b[0] ? a : [0, Math.min(a[1], b[1] - 1)];
    case '&': return nonNeg ? [0, Math.min(a[1], b[1])] : UNKNOWN;
    case '>>': return nonNeg && isLit(bx) ? [Math.floor(a[0] / 2 ** bx.value), Math.floor(a[1] / 2 ** bx.value)] : UNKNOWN;
    default: return UNKNOWN;
  }
}
