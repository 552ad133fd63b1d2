// What a kernel expression means, on numbers: WGSL's u32 arithmetic (wrapping) for the integer index math, so the
// simplifier and the range analysis can be checked against it. Float values and fixed template text are not evaluated.
import type { KExpr } from './expr.ts';

const U32: Record<string, (a: number, b: number) => number> = {
  '+': (a, b) => (a + b) >>> 0,
  '-': (a, b) => (a - b) >>> 0,
  '*': (a, b) => Math.imul(a, b) >>> 0,
  '/': (a, b) => Math.floor(a / b),
  '%': (a, b) => a % b,
  '&': (a, b) => (a & b) >>> 0,
  '|': (a, b) => (a | b) >>> 0,
  '^': (a, b) => (a ^ b) >>> 0,
  '<<': (a, b) => (a << b) >>> 0,
  '>>': (a, b) => a >>> b,
};
const COMPARE: Record<string, (a: number, b: number) => boolean> = {
  '<': (a, b) => a < b, '<=': (a, b) => a <= b, '>': (a, b) => a > b, '>=': (a, b) => a >= b, '==': (a, b) => a === b, '!=': (a, b) => a !== b,
};

/** The value of a u32/bool expression for values of its names. */
export function evaluate(x: KExpr, env: (name: string) => number): number {
  const ev = (e: KExpr) => evaluate(e, env);
  switch (x.k) {
    case 'lit': return Number(x.value);
    case 'var': return env(x.name);
    case 'bin': {
      const [a, b] = [ev(x.a), ev(x.b)];
      if (COMPARE[x.op]) return Number(COMPARE[x.op]!(a, b));
      if (x.op === '&&') return Number(a && b);
      if (x.op === '||') return Number(a || b);
      return U32[x.op]!(a, b);
    }
    case 'call': {
      const args = x.args.map(ev);
      if (x.fn === 'min') return Math.min(...args);
      if (x.fn === 'max') return Math.max(...args);
      if (x.fn === 'select') return args[2] ? args[1]! : args[0]!;
      if (x.fn === 'u32') return args[0]! >>> 0;
      break;
    }
    default: break;
  }
  throw new Error(`evaluate: ${x.k === 'call' ? x.fn : x.k} has no numeric meaning here`);
}
