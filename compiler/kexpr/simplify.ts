// The simplifier: constant folding, identities (x * 1, x + 0), sums kept as affine forms so like terms merge, and
// the div/mod chains that reshapes produce folded with ranges: `(x * C + y) / C` is `x + y / C`, `y / C` is 0 and
// `y % C` is `y` when `y < C`, a common factor of C and every coefficient leaves the division, `(x / A) / B` is
// `x / (A * B)`. Division rules hold for sums that provably do not wrap around 2^32 (by the ranges); any other
// dividend, a difference among them, is left to the hardware.
import { K, type KExpr, isLit, print } from './expr.ts';
import { type Declared, U32_MAX, rangeOf } from './range.ts';

/** An affine form over atoms (sub-expressions that are not sums or scalings): sum of k * atom, plus c. */
export interface Affine {
  terms: Map<string, { atom: KExpr; k: number }>;
  c: number;
}

const affines = new WeakMap<KExpr, Affine>();
export function affineOf(x: KExpr): Affine {
  const hit = affines.get(x);
  if (hit) return hit;
  let f: Affine;
  if (isLit(x) && x.type === 'u32') f = { terms: new Map(), c: x.value };
  else if (x.k === 'bin' && x.type === 'u32' && x.op === '+') f = sum(affineOf(x.a), affineOf(x.b), 1);
  else if (x.k === 'bin' && x.type === 'u32' && x.op === '-' && isLit(x.b)) f = sum(affineOf(x.a), { terms: new Map(), c: x.b.value }, -1);
  else if (x.k === 'bin' && x.type === 'u32' && x.op === '*' && isLit(x.b)) f = scale(affineOf(x.a), x.b.value);
  else if (x.k === 'bin' && x.type === 'u32' && x.op === '*' && isLit(x.a)) f = scale(affineOf(x.b), x.a.value);
  else f = { terms: new Map([[print(x), { atom: x, k: 1 }]]), c: 0 };
  affines.set(x, f);
  return f;
}

function sum(a: Affine, b: Affine, sign: 1 | -1): Affine {
  const terms = new Map(a.terms);
  for (const [key, t] of b.terms) terms.set(key, { atom: t.atom, k: (terms.get(key)?.k ?? 0) + sign * t.k });
  return { terms, c: a.c + sign * b.c };
}
const scale = (a: Affine, k: number): Affine => ({ terms: new Map([...a.terms].map(([key, t]) => [key, { atom: t.atom, k: t.k * k }])), c: a.c * k });

/** `y / a` as the div rule writes it: `(x / b) / a` is `x / (a * b)`. */
function quotientKey(y: KExpr, a: number): string {
  if (y.k === 'bin' && y.op === '/' && isLit(y.b)) return print(K.bin('/', y.a, K.u32(y.b.value * a)));
  return print(K.bin('/', y, K.u32(a)));
}

/**
 * Re-linearised coordinates fold back: `k * (y % a) + k * a * (y / a)` is `k * y` (a reshape of a reshape puts a
 * delinearised index back together).
 */
function joinDivMod(f: Affine): Affine {
  for (const [key, t] of f.terms) {
    const m = t.atom;
    if (m.k !== 'bin' || m.op !== '%' || !isLit(m.b) || t.k === 0) continue;
    const q = f.terms.get(quotientKey(m.a, m.b.value));
    if (!q || q.k !== t.k * m.b.value) continue;
    const rest: Affine = { terms: new Map(f.terms), c: f.c };
    rest.terms.delete(key);
    rest.terms.delete(quotientKey(m.a, m.b.value));
    return joinDivMod(sum(rest, scale(affineOf(m.a), t.k), 1));
  }
  return f;
}

/** The expression of an affine form, terms in the order they first appeared. */
export function build(form: Affine): KExpr {
  const f = joinDivMod(form);
  let acc: KExpr | undefined;
  for (const { atom, k } of f.terms.values()) {
    if (k === 0) continue;
    const t = k === 1 ? atom : K.bin('*', atom, K.u32(k));
    acc = acc ? K.bin('+', acc, t) : t;
  }
  if (!acc) return K.u32(f.c >>> 0); // a literal below zero wraps like the runtime u32 would
  return f.c > 0 ? K.bin('+', acc, K.u32(f.c)) : f.c < 0 ? K.bin('-', acc, K.u32(-f.c)) : acc;
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/** Splits a form by a divisor: terms whose coefficient it divides (and the constant's multiple of it), and the rest. */
function split(f: Affine, c: number): { quotient: Affine; rest: Affine } {
  const quotient: Affine = { terms: new Map(), c: Math.floor(f.c / c) };
  const rest: Affine = { terms: new Map(), c: f.c % c };
  for (const [key, t] of f.terms) {
    if (t.k % c === 0) quotient.terms.set(key, { atom: t.atom, k: t.k / c });
    else if (t.k !== 0) rest.terms.set(key, t);
  }
  return { quotient, rest };
}

/** The greatest common divisor of c and every coefficient of f, and f with its coefficients divided by it (constant floored). */
function common(f: Affine, c: number): { g: number; reduced: Affine } {
  let g = c;
  for (const t of f.terms.values()) g = gcd(g, t.k);
  return { g, reduced: { terms: new Map([...f.terms].map(([key, t]) => [key, { atom: t.atom, k: t.k / g }])), c: Math.floor(f.c / g) } };
}

/**
 * A divisor d of c that is a term's coefficient and leaves a remainder below d: x / c is then (x / d) / (c / d) and
 * x % c is (x / d % (c / d)) * d + x % d, where x / d and x % d fold (a coordinate split at a coarser stride).
 */
function innerStride(f: Affine, c: number, declared: Declared): { d: number; quotient: Affine; rest: Affine } | undefined {
  for (const { k } of f.terms.values()) {
    if (k <= 1 || k >= c || c % k !== 0) continue;
    const { quotient, rest } = split(f, k);
    if (maxOf(rest, declared) < k) return { d: k, quotient, rest };
  }
  return undefined;
}

/** Whether a form's u32 value is its integer value: no negative constant, no sum past 2^32. */
const exact = (x: KExpr, f: Affine, declared: Declared) => f.c >= 0 && rangeOf(x, declared)[1] <= U32_MAX;

const empty = (f: Affine) => f.c === 0 && [...f.terms.values()].every((t) => t.k === 0);
const maxOf = (f: Affine, declared: Declared) => rangeOf(build(f), declared)[1];

export function div(x: KExpr, c: number, declared: Declared): KExpr {
  if (c === 1) return x;
  if (isLit(x)) return K.u32(Math.floor(x.value / c));
  if (x.k === 'bin' && x.op === '/' && isLit(x.b)) return div(x.a, x.b.value * c, declared);
  const f = affineOf(x);
  if (!exact(x, f, declared)) return K.bin('/', x, K.u32(c));
  const { quotient, rest } = split(f, c);
  if (maxOf(rest, declared) < c) return build(quotient);
  if (empty(quotient)) {
    const { g, reduced } = common(rest, c);
    if (g > 1) return div(build(reduced), c / g, declared);
    const inner = innerStride(rest, c, declared);
    return inner ? div(build(inner.quotient), c / inner.d, declared) : K.bin('/', build(rest), K.u32(c));
  }
  return add(build(quotient), div(build(rest), c, declared));
}

export function mod(x: KExpr, c: number, declared: Declared): KExpr {
  if (c === 1) return K.u32(0);
  if (isLit(x)) return K.u32(x.value % c);
  if (x.k === 'bin' && x.op === '%' && isLit(x.b) && x.b.value % c === 0) return mod(x.a, c, declared);
  const f = affineOf(x);
  if (!exact(x, f, declared)) return K.bin('%', x, K.u32(c));
  const { rest } = split(f, c);
  if (maxOf(rest, declared) < c) return build(rest);
  const { g, reduced } = common(rest, c);
  // x = g * reduced + r with r < g: x % (g * c') = g * (reduced % c') + r
  if (g > 1) return add(mul(mod(build(reduced), c / g, declared), g), K.u32(rest.c % g));
  const inner = innerStride(rest, c, declared);
  if (inner) return add(mul(mod(build(inner.quotient), c / inner.d, declared), inner.d), build(inner.rest));
  return K.bin('%', build(rest), K.u32(c));
}

export const add = (a: KExpr, b: KExpr): KExpr => build(sum(affineOf(a), affineOf(b), 1));
export const sub = (a: KExpr, c: number): KExpr => build(sum(affineOf(a), { terms: new Map(), c }, -1));
export const mul = (a: KExpr, c: number): KExpr => build(scale(affineOf(a), c));

const INT_OPS: Record<string, (a: number, b: number) => number | boolean> = {
  '&': (a, b) => (a & b) >>> 0, '|': (a, b) => (a | b) >>> 0, '^': (a, b) => (a ^ b) >>> 0,
  '<<': (a, b) => (a << b) >>> 0, '>>': (a, b) => a >>> b,
  '<': (a, b) => a < b, '<=': (a, b) => a <= b, '>': (a, b) => a > b, '>=': (a, b) => a >= b, '==': (a, b) => a === b, '!=': (a, b) => a !== b,
};

/** One node, its operands already simplified. */
export function simplifyNode(x: KExpr, declared: Declared): KExpr {
  const r = (e: KExpr) => rangeOf(e, declared);
  if (x.k === 'bin' && x.type !== 'f32' && x.type !== 'f16' && x.a.type === 'u32') {
    const { op, a, b } = x;
    if (op === '+' || (op === '-' && isLit(b)) || (op === '*' && (isLit(a) || isLit(b)))) return build(affineOf(x));
    if (op === '/' && isLit(b) && b.value > 0) return div(a, b.value, declared);
    if (op === '%' && isLit(b) && b.value > 0) return mod(a, b.value, declared);
    if (isLit(a) && isLit(b) && INT_OPS[op]) { const v = INT_OPS[op](a.value, b.value); return K.lit(v, x.type); }
    if (x.type === 'bool') {
      const [ra, rb] = [r(a), r(b)];
      if ((op === '<' && ra[1] < rb[0]) || (op === '<=' && ra[1] <= rb[0])) return K.lit(true, 'bool');
      if ((op === '<' && ra[0] >= rb[1]) || (op === '<=' && ra[0] > rb[1])) return K.lit(false, 'bool');
    }
    return x;
  }
  if (x.k === 'call') {
    const [a, b, cond] = x.args;
    if ((x.fn === 'min' || x.fn === 'max') && a && b && x.args.length === 2) {
      const [ra, rb] = [r(a), r(b)];
      const [lo, hi] = x.fn === 'min' ? [a, b] : [b, a];
      const [rlo, rhi] = x.fn === 'min' ? [ra, rb] : [rb, ra];
      if (rlo[1] <= rhi[0]) return lo; // min(a, b) is a when a <= b always; max(a, b) is a when b <= a
      if (rhi[1] <= rlo[0]) return hi;
      return x;
    }
    if (x.fn === 'select' && cond?.k === 'lit') return cond.value ? b! : a!;
    if (x.fn === 'u32' && a && isLit(a) && Number.isInteger(a.value)) return K.u32(a.value >>> 0);
  }
  return x;
}

/** The whole expression, bottom-up. */
export function simplify(x: KExpr, declared: Declared): KExpr {
  const s = (e: KExpr) => simplify(e, declared);
  switch (x.k) {
    case 'bin': return simplifyNode(K.bin(x.op, s(x.a), s(x.b), x.type), declared);
    case 'un': return K.un(x.op, s(x.a));
    case 'call': return simplifyNode(K.call(x.fn, x.args.map(s), x.type), declared);
    case 'load': return K.load(x.buffer, s(x.index), x.length, x.type);
    case 'at': return K.at(s(x.a), s(x.i), x.type);
    case 'field': return K.field(s(x.a), x.name, x.type);
    default: return x;
  }
}
