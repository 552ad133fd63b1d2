// The index algebra of one kernel over kernel expressions: every operation returns a simplified node, folded with
// the ranges the emitter and the templates declare for the kernel's names (output coordinates, loop indices,
// clamps). Buffer offsets are range-checked here before they are rendered.
import type { IndexAlgebra } from '../indexAlgebra.ts';
import { K, type KExpr, print } from './expr.ts';
import { rangeOf } from './range.ts';
import { add, div, mod, mul, simplifyNode, sub } from './simplify.ts';

/** A buffer index that the kernel's ranges do not keep below the buffer's length: a compiler bug, never a user error. */
export class IndexRangeError extends Error {
  override name = 'IndexRangeError';
}

export class KernelIndex implements IndexAlgebra<KExpr> {
  /** Largest value of each name or sub-expression (by its text form); declarations only ever tighten. */
  private readonly bounds = new Map<string, number>();
  /** The expressions of the names the kernel declares with `let`: a name is as bounded as its expression. */
  private readonly definitions = new Map<string, KExpr>();
  private readonly declared = (key: string): number | undefined => {
    const bound = this.bounds.get(key);
    const def = this.definitions.get(key);
    if (!def) return bound;
    return Math.min(bound ?? Infinity, this.max(def));
  };

  /** Declares that a name (a var of that name) or an expression never exceeds `max`; returns the expression. */
  bound(x: KExpr | string, max: number): KExpr {
    const e = typeof x === 'string' ? K.v(x) : x;
    const key = print(e);
    const was = this.bounds.get(key);
    if (was === undefined || max < was) this.bounds.set(key, max);
    return e;
  }

  /** Names an expression (`let name = expr;`); returns the name. */
  define(name: string, expr: KExpr): KExpr {
    this.definitions.set(name, expr);
    return K.v(name);
  }

  /** Largest value an expression can take (Infinity when unknown). */
  max(x: KExpr): number {
    return rangeOf(x, this.declared)[1];
  }

  lit = (n: number): KExpr => K.u32(n);
  add = (a: KExpr, b: KExpr): KExpr => add(a, b);
  /** a - c for a known to be >= c */
  sub = (a: KExpr, c: number): KExpr => sub(a, c);
  mul = (a: KExpr, c: number): KExpr => mul(a, c);
  div = (a: KExpr, c: number): KExpr => div(a, c, this.declared);
  mod = (a: KExpr, c: number): KExpr => mod(a, c, this.declared);
  min = (a: KExpr, c: number): KExpr => simplifyNode(K.call('min', [a, K.u32(c)]), this.declared);
  /** A u32 of a value (a gathered row id). */
  u32 = (value: KExpr): KExpr => simplifyNode(K.cast('u32', value), this.declared);

  /** Throws unless `index` provably stays below `length` (guards the template took are declared as ranges). */
  check(index: KExpr, length: number, what: () => string): void {
    const hi = this.max(index);
    if (hi < length) return;
    const reach = hi === Infinity ? 'is unbounded' : `may reach ${hi}`;
    throw new IndexRangeError(`${what()}: index ${index} ${reach}, the buffer holds ${length} (declare the guard's range or clamp it)`);
  }
}
